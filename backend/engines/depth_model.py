"""The classic engine's monocular depth model (transformers), fetched once on first use.

``load_depth_model(model_id, device, progress) -> DepthModelResult``

- A folder path is loaded as it is (``from_pretrained(path)``).
- A hub id is fetched with ``huggingface_hub.snapshot_download`` into the hub's own cache
  (``HF_HOME`` / ``HF_HUB_CACHE``), so it downloads once and later runs load from disk;
  ``progress(done, total, message)`` is called as its files arrive. ``HF_HUB_OFFLINE=1``
  uses the cache only.
- Anything that fails (offline and not cached, a broken download, an unknown id) gives no
  model and one sentence saying why and how to get it; the engine then falls back.

Depth Anything V2 and DPT predict relative inverse depth (disparity); it is turned into
z-depth with the median at ``median_depth`` world units, about the scale the priors give.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_DEPTH_MODEL = "depth-anything/Depth-Anything-V2-Small-hf"
_WEIGHT_FILES = ["*.json", "*.safetensors", "*.txt"]

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


def fetch(model_id: str, progress: ProgressFn | None = None) -> str:
    """A local folder holding ``model_id``'s weights: the folder itself, or the hub cache's
    snapshot (downloaded now if it is not cached)."""
    if Path(model_id).is_dir():
        return model_id
    from huggingface_hub import snapshot_download

    return snapshot_download(model_id, allow_patterns=_WEIGHT_FILES,
                             tqdm_class=_progress_bar(progress, model_id))


def load_depth_model(model_id: str, device: str = "cpu", progress: ProgressFn | None = None
                     ) -> DepthModelResult:
    """Fetch (once) and load a transformers depth model; see the module docstring."""
    import torch
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    from backend.models.depth import DepthEstimator

    try:
        folder = fetch(model_id, progress)
        processor = AutoImageProcessor.from_pretrained(folder)
        model = AutoModelForDepthEstimation.from_pretrained(folder)
    except Exception as exc:  # offline, network, missing files, unknown id: all fall back
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log.warning("depth model %s unavailable: %s", model_id, reason)
        return DepthModelResult(None, model_id, reason[:200])
    torch_device = torch.device(device)
    estimator = DepthEstimator(model.to(torch_device), processor, torch_device)
    return DepthModelResult(lambda image: disparity_to_depth(estimator(image).values), model_id)
