"""The classic engine's monocular depth model (transformers), fetched once on first use.

``load_depth_model(model_id, device, progress) -> DepthModelResult``

- A folder path is loaded as it is (``from_pretrained(path)``).
- A hub id is looked up in the hub's own cache (``HF_HOME`` / ``HF_HUB_CACHE``) first, with
  no network at all. Not cached: offline is known at once (``HF_HUB_OFFLINE`` set, or the
  hub's host not reachable within ``probe_timeout_s``, 1.5 s), else it is fetched with
  ``huggingface_hub.snapshot_download`` into that cache, ``progress(done, total, message)``
  called as its files arrive (``dreamjourney models fetch`` does the same ahead of time).
- Anything that fails (offline and not cached, a broken download, an unknown id) gives no
  model and one sentence saying why; the engine then falls back.

Depth Anything V2 and DPT predict relative inverse depth (disparity); it is turned into
z-depth with the median at ``median_depth`` world units, about the scale the priors give.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_DEPTH_MODEL = "depth-anything/Depth-Anything-V2-Small-hf"
_WEIGHT_FILES = ["*.json", "*.safetensors", "*.txt"]
PROBE_TIMEOUT_S = 1.5
"""How long the connectivity probe waits for the hub's host (name lookup and TCP connect)."""

ProgressFn = Callable[[int, int, str], None]


@dataclass
class DepthModelResult:
    """A loaded depth model, or why there is none."""

    predict: Callable[[np.ndarray], np.ndarray] | None
    """H x W x 3 uint8 RGB -> H x W float32 z-depth; None when no model could be loaded."""
    name: str
    """The model id or folder."""
    reason: str = ""
    """Why ``predict`` is None (one sentence)."""


def disparity_to_depth(
    disparity: np.ndarray, median_depth: float = 10.0, far_ratio: float = 50.0
) -> np.ndarray:
    """Z-depth from relative disparity: median at ``median_depth``, capped at ``far_ratio`` x."""
    d = np.asarray(disparity, dtype=np.float64)
    med = float(np.median(d[d > 0])) if np.any(d > 0) else 1.0
    d = np.maximum(d / med, 1.0 / far_ratio)
    return (median_depth / d).astype(np.float32)


def _progress_bar(progress: ProgressFn | None, model_id: str):
    """A tqdm stand-in that forwards snapshot_download's file counts to ``progress``."""
    from tqdm.auto import tqdm

    class _Bar(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self._done = 0
            self._report()

        def update(self, n=1):
            super().update(n)
            self._done += n or 0
            self._report()

        def _report(self):
            if progress is not None and self.total:
                progress(int(self._done), int(self.total), f"fetching the depth model {model_id}")

    return _Bar


class ModelOffline(ConnectionError):
    """The model is not cached and there is no way to fetch it now."""


def offline_reason(timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the hub cannot be reached now (``HF_HUB_OFFLINE``, no name lookup or no TCP
    connection to its host within ``timeout_s``), or None when it answers."""
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in (
            "1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    url = urlsplit(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    outcome: list[str | None] = []

    def probe() -> None:  # a name lookup has no timeout of its own: run it aside
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
            outcome.append(None)
        except OSError:
            outcome.append(f"{host} unreachable")

    thread = threading.Thread(target=probe, name="dj-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    return outcome[0] if outcome else f"{host} silent for {timeout_s:g} s"


def cached_folder(model_id: str) -> str | None:
    """The hub cache's snapshot of ``model_id`` (no network), or None if it is not cached."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(model_id, allow_patterns=_WEIGHT_FILES, local_files_only=True)
    except Exception:  # noqa: BLE001 - any miss (not cached, partial, odd cache) is "not cached"
        return None


def fetch(model_id: str, progress: ProgressFn | None = None,
          probe_timeout_s: float = PROBE_TIMEOUT_S) -> str:
    """A local folder holding ``model_id``'s weights: the folder itself, the hub cache's
    snapshot, or one downloaded now; :class:`ModelOffline` at once when it is not cached and
    the hub cannot be reached."""
    if Path(model_id).is_dir():
        return model_id
    folder = cached_folder(model_id)
    if folder is not None:
        return folder
    why = offline_reason(probe_timeout_s)
    if why is not None:
        raise ModelOffline(f"not cached and offline: {why}")
    from huggingface_hub import snapshot_download

    return snapshot_download(model_id, allow_patterns=_WEIGHT_FILES,
                             tqdm_class=_progress_bar(progress, model_id))


def load_depth_model(model_id: str, device: str = "cpu", progress: ProgressFn | None = None
                     ) -> DepthModelResult:
    """Fetch (once) and load a transformers depth model; see the module docstring."""
    try:
        folder = fetch(model_id, progress)
    except Exception as exc:  # offline and not cached, network, unknown id: all fall back
        return _unavailable(model_id, exc)
    import torch
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    from backend.models.depth import DepthEstimator

    try:
        processor = AutoImageProcessor.from_pretrained(folder)
        model = AutoModelForDepthEstimation.from_pretrained(folder)
    except Exception as exc:  # missing or broken files: fall back
        return _unavailable(model_id, exc)
    torch_device = torch.device(device)
    estimator = DepthEstimator(model.to(torch_device), processor, torch_device)
    return DepthModelResult(lambda image: disparity_to_depth(estimator(image).values), model_id)


def _unavailable(model_id: str, exc: Exception) -> DepthModelResult:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    log.warning("depth model %s unavailable: %s", model_id, reason)
    return DepthModelResult(None, model_id, reason[:200])
