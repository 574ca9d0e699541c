"""Dynamics: motion stays inside the region the arrows segment, moves along them, and loops.

Motion is measured on the frames the engine streams with OpenCV's Farneback optical flow.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from backend import animation
from backend.engines.base import DynamicsRequest, FrameOut, OpenRequest
from backend.engines.classic import ClassicEngine
from protocol.messages import Arrow

SIZE = 128
FRAMES = 16


def _image() -> np.ndarray:
    """Upper half: blue water with ripples; lower half: a brown, green-striped bank."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    noise = cv2.GaussianBlur(rng.normal(0, 1, (SIZE, SIZE)).astype(np.float32), (0, 0), 1.5)
    img = np.zeros((SIZE, SIZE, 3), np.float32)
    water = yy < SIZE // 2
    img[water] = np.stack([40 + 60 * noise, 90 + 60 * noise, 200 + 40 * noise], -1)[water]
    stripes = 30 * np.sin(xx / 3.0) + 40 * noise
    img[~water] = np.stack([140 + stripes, 100 + stripes, 40 + 0 * stripes], -1)[~water]
    return np.clip(img, 0, 255).astype(np.uint8)


def _flows(frames: list[np.ndarray]) -> list[np.ndarray]:
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    pairs = list(zip(grey, grey[1:] + grey[:1], strict=True))  # the last pair is the seam
    return [cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 1, 9, 3, 5, 1.1, 0) for a, b in pairs]


@pytest.fixture(scope="module")
def clip():
    image = _image()
    engine = ClassicEngine(depth_model="none")
    depth = np.full((SIZE, SIZE), 5.0, np.float32)
    scene, _ = engine.open_scene(OpenRequest("dyn", image, depth=depth))
    frozen = np.zeros((SIZE, SIZE), bool)
    frozen[8:40, 96:124] = True  # a freeze brush on part of the water
    arrows = (Arrow(start=[30.0, 30.0], vector=[1.0, 0.0]), Arrow(start=[70.0, 20.0], vector=[1.0, 0.0]))
    request = DynamicsRequest(pose=np.eye(4), num_frames=FRAMES, arrows=arrows, frozen=frozen)
    frames = [ev.image for ev in engine.dynamics(scene, request) if isinstance(ev, FrameOut)]
    region = animation.segment_region(image, arrows, frozen)
    return image, frames, region, frozen


def test_the_arrows_segment_their_region(clip):
    image, frames, region, frozen = clip
    water = np.zeros_like(region)
    water[: SIZE // 2] = True
    water &= ~frozen
    iou = (region & water).sum() / (region | water).sum()
    assert iou > 0.8, iou
    assert not (region & frozen).any()


def test_outside_the_region_and_under_the_freeze_brush_nothing_moves(clip):
    image, frames, region, frozen = clip
    assert len(frames) == FRAMES
    flows = _flows(frames)
    # Farneback's window (9 px, polynomials over 5) smears flow across an edge: judge pixels 10 px away
    # and 10 px from the image border, where the flow is undefined
    away = cv2.dilate(region.astype(np.uint8), np.ones((21, 21), np.uint8)) == 0
    away[:10], away[-10:], away[:, :10], away[:, -10:] = False, False, False, False
    moved = sum(np.hypot(f[..., 0], f[..., 1]) for f in flows[:-1])  # summed over the loop
    assert np.percentile(moved[away], 99) < 0.25
    frozen_core = cv2.erode(frozen.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    assert frozen_core.sum() > 100
    assert np.percentile(moved[frozen_core], 99) < 0.25
    # and the pixels themselves: identical to the still view right up to the region's edge
    outside = cv2.dilate(region.astype(np.uint8), np.ones((3, 3), np.uint8)) == 0
    for frame in frames:
        assert np.abs(frame.astype(int) - image.astype(int))[outside].max() <= 2


def test_inside_the_region_pixels_move_along_the_arrows_and_the_loop_is_seamless(clip):
    image, frames, region, frozen = clip
    flows = _flows(frames)
    core = cv2.erode(region.astype(np.uint8), np.ones((21, 21), np.uint8)) > 0
    assert core.sum() > 200
    steps = np.array([f[core].mean(axis=0) for f in flows[:-1]])  # mean (dx, dy) per frame
    mean = steps.mean(axis=0)
    assert mean[0] > 0.4 and abs(mean[1]) < 0.25 * mean[0], mean  # rightwards, like the arrows
    step_size = [np.hypot(f[core][:, 0], f[core][:, 1]).mean() for f in flows[:-1]]
    seam = np.hypot(flows[-1][core][:, 0], flows[-1][core][:, 1]).mean()
    assert seam <= np.median(step_size) * 1.05 + 0.02, (seam, np.median(step_size))


def test_without_arrows_only_a_sky_or_water_guess_moves():
    image = _image()
    depth = np.full((SIZE, SIZE), 5.0, np.float32)
    field, region = animation.motion_field(image, depth)
    assert region[: SIZE // 2].mean() > 0.6 and not region[SIZE // 2 + 2 :].any()
    assert (field[~region] == 0).all() and np.abs(field[region]).max() > 0
