"""Offscreen (EGL): the explorer's vertex shader animates 4D points on the clock, inside the
moving points only, with a seamless loop; the toggle stops it; undoing the motion stops it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from protocol.camera import intrinsics

moderngl = pytest.importorskip("moderngl")

from explorer.camera import FlyCamera  # noqa: E402
from explorer.point_buffer import PointCloudBuffer  # noqa: E402
from explorer.renderer import CloudRenderer, RenderTarget, ViewParams  # noqa: E402
from explorer.settings import SplatSettings  # noqa: E402
from tests.test_explorer_render import SCENE, ctx, synthetic_depth, unproject  # noqa: E402, F401

pytestmark = pytest.mark.gl
W, H, PERIOD = 160, 120, 2.0


@pytest.fixture(scope="module")
def world(ctx):  # noqa: F811
    photo = np.asarray(Image.open(SCENE).convert("RGB").resize((W, H)))
    K = intrinsics(W, H, 60.0)
    depth = synthetic_depth(H, W)
    xyz, radius = unproject(depth, K)
    points = PointCloudBuffer(ctx, initial_capacity=1024)
    points.append(xyz, photo.reshape(-1, 3), radius)
    moving = np.zeros((H, W), bool)
    moving[20:60, 30:130] = True  # a band moves 12 px to the right per loop, at its depth
    index = np.flatnonzero(moving.reshape(-1))
    motion = np.zeros((len(index), 4), np.float32)
    motion[:, 0] = 12.0 * depth.reshape(-1)[index] / K[0, 0]
    motion[:, 3] = PERIOD
    points.set_motion(index, motion)
    return points, moving, index


def draw(ctx, points, t: float, antialias: bool = True, animate: bool = True) -> np.ndarray:  # noqa: F811
    cam = FlyCamera(scene_scale=5.0)
    cam.set_pose(np.eye(4))
    K = cam.K(W, H)
    target = RenderTarget(ctx, W, H)
    target.use()
    target.clear()
    renderer = CloudRenderer(ctx, points, SplatSettings(antialias=antialias))
    renderer.animate = animate
    renderer.draw(ViewParams(cam.view_matrix(), cam.projection(W, H), K[1, 1], clock_s=t))
    img = target.read_rgb().astype(np.float32)
    target.release()
    return img


@pytest.mark.parametrize("antialias", [True, False])
def test_points_move_inside_their_region_only_and_loop(ctx, world, antialias):  # noqa: F811
    points, moving, _ = world
    a, b = draw(ctx, points, 0.0, antialias), draw(ctx, points, 0.7, antialias)
    diff = np.abs(a - b).max(axis=2)
    inside = moving.copy()
    inside[:, :44] = False  # the band's left end fades from its backward copies: skip it
    outside = np.ones_like(moving)
    outside[14:66, 14:146] = False  # away from the band, its backward copies and their reach
    assert diff[inside].mean() > 8
    assert diff[outside].max() == 0
    seam = np.abs(draw(ctx, points, PERIOD - 1e-3, antialias) - a).max(axis=2)
    assert seam.mean() < 0.05 * diff[inside].mean()  # the loop's end is its start
    assert np.abs(draw(ctx, points, 2 * PERIOD + 0.7, antialias) - b).max() <= 1


def test_world_motion_off_shows_points_at_rest(ctx, world):  # noqa: F811
    points, _, index = world
    rest = draw(ctx, points, 0.0)
    assert np.abs(draw(ctx, points, 0.7, animate=False) - rest).max() == 0
    saved = points.motion[index].copy()
    points.set_motion(index, np.zeros_like(saved))  # undone: static again
    assert points.moving == 0
    assert np.abs(draw(ctx, points, 0.7) - rest).max() == 0
    points.set_motion(index, saved)
    assert points.moving == len(index)
