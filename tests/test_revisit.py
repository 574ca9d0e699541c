"""Revisits: a flown loop that returns to the photo's pose shows what was there, because the
classic engine's fills never cover what an earlier view saw (``geometry.seen``)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from backend.engines.base import FrameOut, OpenRequest, TransitionRequest
from backend.engines.classic import ClassicEngine
from backend.geometry.cloud import PointCloud
from backend.geometry.seen import SeenViews
from protocol.camera import intrinsics
from protocol.trajectory import stock_path


def test_seen_views_drop_points_an_earlier_view_would_show():
    K = intrinsics(32, 32, 60.0)
    seen = SeenViews(K, 32, 32, capacity=2)
    depth = np.full((32, 32), 4.0)
    depth[:, 16:] = 0.0  # the right half saw nothing
    seen.record(np.eye(4), depth)
    pts = np.array([[-0.5, 0, 3.0],   # left half, in front of the seen surface: dropped
                    [-0.5, 0, 4.1],   # on it within the tolerance: dropped (it would blend in)
                    [-0.5, 0, 4.5],   # behind it: kept (hidden)
                    [0.5, 0, 3.0],    # where nothing was seen: kept
                    [0, 0, -1.0],     # behind the camera: kept
                    [9.0, 0, 3.0]],   # outside the view: kept
                   np.float32)
    cloud = PointCloud(pts, np.zeros((6, 3), np.uint8), np.full(6, 0.01, np.float32))
    np.testing.assert_array_equal(seen.keep(cloud), [False, False, True, True, True, True])
    far = np.eye(4)
    far[0, 3] = 100.0
    for _ in range(3):  # over capacity: the first view stays, the oldest others go
        seen.record(far, np.full((32, 32), 1.0))
    assert len(seen.views) == 2
    np.testing.assert_array_equal(seen.keep(cloud)[:2], [False, False])


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def _loop(image: np.ndarray, guarded: bool) -> tuple[np.ndarray, np.ndarray]:
    """Back, turn, forward, then home; the first view and the returned one."""
    engine = ClassicEngine(depth_model="none", keyframe_every=6)
    scene, _ = engine.open_scene(OpenRequest("loop", image))
    if not guarded:
        scene.seen = None
    d, pose, first, frames = scene.median_depth, np.eye(4), None, None
    for name in ("backward", "rotate_left", "forward"):
        poses = stock_path(name, 12, d, start=pose, distance=0.3 if name == "forward" else None)
        frames = [e.image for e in engine.transition(scene, TransitionRequest(poses))
                  if isinstance(e, FrameOut)]
        first = frames[0] if first is None else first
        pose = poses[-1]
    home = np.stack([pose, np.eye(4)])
    frames = [e.image for e in engine.transition(scene, TransitionRequest(home)) if isinstance(e, FrameOut)]
    return first, frames[-1]


@pytest.fixture(scope="module")
def photo(scenes_dir) -> np.ndarray:
    return np.asarray(Image.open(scenes_dir / "03_ancient.jpg").convert("RGB").resize((128, 128)))


def test_a_loop_back_to_the_photo_shows_the_first_view_again(photo):
    first, returned = _loop(photo, guarded=True)
    assert _psnr(returned, first) >= 50.0


def test_without_the_guard_the_fills_cover_what_the_first_view_saw(photo):
    """The comparison that shows the guard matters (and that the loop does reveal things)."""
    first, returned = _loop(photo, guarded=False)
    assert _psnr(returned, first) < 50.0
