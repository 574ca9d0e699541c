"""The classic engine's depth sources: a model on disk, else the client's map, else the prior."""

from __future__ import annotations

import numpy as np

from backend.engines.base import OpenRequest
from backend.engines.classic import ClassicEngine
from backend.models import testing


def _image(size: int = 48) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return np.stack([xx * 5, yy * 5, (xx + yy) * 2], -1).astype(np.uint8)


def test_depth_model_on_disk_is_used(tmp_path):
    model, processor = testing.depth_model()
    model.save_pretrained(tmp_path / "depth")
    processor.save_pretrained(tmp_path / "depth")
    engine = ClassicEngine(depth_model=str(tmp_path / "depth"))
    image = _image()
    depth, source = engine.estimate_depth(image, np.eye(3), np.full((48, 48), 3.0, np.float32))
    assert source == "model"
    assert depth.shape == (48, 48) and np.all(np.isfinite(depth)) and depth.min() > 0
    # disparity became depth: capped at 50x the median depth of 10, and not the client's map
    assert depth.max() <= 500.0 + 1e-3 and np.std(depth) > 0


def test_missing_model_falls_back_to_client_depth_then_prior(tmp_path):
    engine = ClassicEngine(depth_model=str(tmp_path / "not-there"))
    image = _image()
    given = np.full((48, 48), 3.0, np.float32)
    depth, source = engine.estimate_depth(image, np.eye(3) * 40, given)
    assert source == "client" and np.array_equal(depth, given)
    scene, cloud = engine.open_scene(OpenRequest("s", image))
    assert len(cloud) >= 48 * 48 and scene.median_depth > 0
