"""``dreamjourney doctor``: one line each on what this machine can run.

The GPU and its free VRAM (and the memory profile ``auto`` would pick), each preset's
estimated peak under each profile (backend/models/memory_estimate.py; computed on the meta
device once and cached under ``$XDG_CACHE_HOME/dreamjourney``), which of its weights the
Hugging Face cache holds, and the command that fetches the rest.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import sys
from pathlib import Path

PRESETS = ("interactive", "paper")


def gpu_line() -> tuple[str, int | None]:
    """The GPU line and the free bytes (None without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return (f"gpu: none (PyTorch {torch.__version__} sees no CUDA device): the diffusion "
                "engine needs one, the classic engine runs on this CPU", None)
    from backend.models.memory import MemoryConfig, choose_profile

    device = torch.cuda.current_device()
    free, total = torch.cuda.mem_get_info(device)
    profile = choose_profile(MemoryConfig(), free)
    return (f"gpu: {torch.cuda.get_device_name(device)} (cuda:{device}), {total / 1e9:.1f} GB, "
            f"{free / 1e9:.1f} GB free; memory profile auto -> {profile.name}", free)


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dreamjourney" / "memory"


def _estimate_key(name: str) -> str:
    """Changes whenever the preset, its published model, the estimator or the libraries do."""
    import diffusers
    import torch

    from backend.models import memory_estimate, meta_memory
    from backend.models.published import published_for
    from backend.models.spec import load_specs
    from configs import model_path

    path = model_path(name)
    model = published_for(load_specs(path)["video"].source)
    parts = [path.read_bytes(), repr(model).encode(), torch.__version__.encode(),
             diffusers.__version__.encode(), inspect.getsource(memory_estimate).encode(),
             inspect.getsource(meta_memory).encode()]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


def estimated_peaks(name: str) -> tuple[str, dict[str, float], list[str]]:
    """(published model, peak GB per profile, roles left out), cached or estimated now."""
    cached = _cache_dir() / f"{name}-{_estimate_key(name)}.json"
    if cached.is_file():
        data = json.loads(cached.read_text())
        return data["model"], data["peak_gb"], data["skipped"]
    from backend.models.memory_estimate import estimate_preset

    print(f"estimating the peak memory of preset {name} on the meta device "
          "(once; cached for later runs)...", file=sys.stderr, flush=True)
    estimate = estimate_preset(name)
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps({"model": estimate.model, "peak_gb": estimate.peak_gb,
                                  "skipped": estimate.skipped}))
    return estimate.model, estimate.peak_gb, estimate.skipped


def preset_line(name: str, free: int | None) -> str:
    from backend.models.memory import PROFILES

    model, peaks, skipped = estimated_peaks(name)
    listed = ", ".join(f"{p} {gb:.1f} GB" for p, gb in peaks.items())
    fits = [p for p, gb in peaks.items() if gb <= PROFILES[p].budget_gb]
    line = (f"preset {name} ({model}): estimated peak {listed}; within its budget under "
            f"{', '.join(fits) or 'no profile'}")
    if free is not None:
        here = [p for p, gb in peaks.items() if gb * 1e9 <= free]
        line += f"; fits this GPU's free VRAM under {', '.join(here) or 'no profile'}"
    if skipped:
        line += f" (not counted: {', '.join(skipped)})"
    return line


def weights_line(name: str) -> tuple[str, bool]:
    """The preset's weights in the hub cache; whether anything is missing."""
    from backend.models.fetch import downloads, is_cached, preset_specs

    items = downloads(preset_specs(name))
    missing = [d.label for d in items if not is_cached(d)]
    cached = len(items) - len(missing)
    if not missing:
        return f"weights {name}: all {len(items)} in the Hugging Face cache", False
    return (f"weights {name}: {cached} of {len(items)} cached; missing {', '.join(missing)}",
            True)


def run(args: argparse.Namespace) -> int:
    from backend.models.fetch import FetchError
    from configs import model_names

    presets = model_names() if args.presets == "all" else args.presets.split(",")
    unknown = [p for p in presets if p not in model_names()]
    if unknown:
        print(f"error: no preset {', '.join(unknown)}; known: {', '.join(model_names())}",
              file=sys.stderr)
        return 2
    line, free = gpu_line()
    print(line, flush=True)
    for name in presets:
        try:
            line = preset_line(name, free)
        except Exception as exc:  # one preset's estimate must not hide the other lines
            line = f"preset {name}: no memory estimate ({type(exc).__name__}: {exc})"
        print(line.splitlines()[0], flush=True)
    to_fetch = []
    for name in presets:
        try:
            line, missing = weights_line(name)
        except FetchError as exc:
            line, missing = f"weights {name}: {exc}", False
        print(line, flush=True)
        if missing:
            to_fetch.append(name)
    if to_fetch:
        print(f"fetch: dreamjourney models fetch {' '.join(to_fetch)}")
    else:
        print("fetch: nothing to fetch for these presets")
    return 0
