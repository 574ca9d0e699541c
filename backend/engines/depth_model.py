"""A monocular depth model (transformers) for the classic engine, only if already on disk.

The classic engine never downloads: ``local_files_only=True``. Depth Anything V2 and DPT
predict relative inverse depth (disparity); it is turned into z-depth with the median at
``median_depth`` world units, so scenes keep the scale the horizon prior would give.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

log = logging.getLogger(__name__)


def disparity_to_depth(
    disparity: np.ndarray, median_depth: float = 10.0, far_ratio: float = 50.0
) -> np.ndarray:
    """Z-depth from relative disparity: median at ``median_depth``, capped at ``far_ratio`` x."""
    d = np.asarray(disparity, dtype=np.float64)
    med = float(np.median(d[d > 0])) if np.any(d > 0) else 1.0
    d = np.maximum(d / med, 1.0 / far_ratio)
    return (median_depth / d).astype(np.float32)


def load_local_depth_model(model_id: str, device: str = "cpu") -> Callable[[np.ndarray], np.ndarray] | None:
    """A function image -> z-depth, or None (logged) when the weights are not on disk."""
    import torch
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    from backend.models.depth import DepthEstimator

    try:
        processor = AutoImageProcessor.from_pretrained(model_id, local_files_only=True)
        model = AutoModelForDepthEstimation.from_pretrained(model_id, local_files_only=True)
    except (OSError, ValueError) as exc:
        log.warning("depth model %s is not on disk (%s); using the fallback depth", model_id, exc)
        return None
    torch_device = torch.device(device)
    estimator = DepthEstimator(model.to(torch_device), processor, torch_device)
    return lambda image: disparity_to_depth(estimator(image).values)
