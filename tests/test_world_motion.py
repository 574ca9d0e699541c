"""4D points: the loop math (seamless), lifting, the store and PLY keeping motion, and the
classic engine leaving a dynamics result moving in the world (inside its region only)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from backend import region_motion
from backend.engines.base import DynamicsRequest, MotionOut, OpenRequest
from backend.engines.classic import ClassicEngine
from backend.geometry.cloud import PointCloud
from backend.geometry.motion import copies_at, dithered_at, lift_flow, static_motion
from backend.geometry.motion_render import render_at
from backend.geometry.ply import read_ply, write_ply
from backend.geometry.store import PointStore
from protocol.messages import Arrow
from tests.test_classic_dynamics import SIZE, _image


def _splat(points: np.ndarray, weights: np.ndarray, colours: np.ndarray, size: int = 48,
           sigma: float = 0.8) -> np.ndarray:
    """A tiny weighted Gaussian splat image of 2D points (sum w c / sum w), the explorer's
    accumulation in miniature."""
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    acc, wsum = np.zeros((size, size)), np.full((size, size), 1e-9)
    for (x, y), w, c in zip(points, weights, colours, strict=True):
        g = w * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
        acc += g * c
        wsum += g
    return acc / wsum


def _picture(xyz, motion, colours, t) -> np.ndarray:
    c = copies_at(xyz, motion, t)
    still = np.setdiff1d(np.arange(len(xyz)), c.index)
    pts = np.concatenate([xyz[still, :2], c.forward[:, :2], c.backward[:, :2]])
    w = np.concatenate([np.ones(len(still)), c.forward_weight, 1 - c.forward_weight])
    col = np.concatenate([colours[still], colours[c.index], colours[c.index]])
    return _splat(pts, w, col)


@pytest.fixture
def stripe():
    """A row of points with a brightness ramp; the middle ones move 6 units right per loop."""
    n = 40
    xyz = np.stack([np.linspace(4, 44, n), np.full(n, 24.0), np.full(n, 2.0)], 1).astype(np.float32)
    motion = static_motion(n)
    motion[10:30, 0] = 6.0
    motion[10:30, 3] = 2.0  # seconds
    colours = np.linspace(0, 1, n)
    return xyz, motion, colours


def test_the_loop_has_no_seam(stripe):
    """The picture just before a period ends equals the picture at its start (up to the
    step), though every moving point has travelled its whole chord meanwhile."""
    xyz, motion, colours = stripe
    start, end = _picture(xyz, motion, colours, 0.0), _picture(xyz, motion, colours, 2.0 - 1e-3)
    middle = _picture(xyz, motion, colours, 1.0)
    assert np.abs(end - start).max() < 5e-3
    assert np.abs(middle - start).max() > 0.05  # it does move in between
    # a one-copy loop (p + tau d) would jump back at the seam: what symmetric splatting avoids
    one = motion[:, 3] > 0
    naive_end = xyz.copy()
    naive_end[one] += 0.9995 * motion[one, :3]
    jump = _splat(naive_end[:, :2], np.ones(len(xyz)), colours) - start
    assert np.abs(jump).max() > 0.05


def test_copies_weigh_as_make_it_4d(stripe):
    xyz, motion, _ = stripe
    c = copies_at(xyz, motion, 0.5)  # a quarter of the 2 s period
    np.testing.assert_allclose(c.forward_weight, 0.75)
    np.testing.assert_allclose(c.forward - xyz[c.index], 0.25 * motion[c.index, :3], atol=1e-5)
    np.testing.assert_allclose(c.backward - xyz[c.index], -0.75 * motion[c.index, :3], atol=1e-5)
    assert list(c.index) == list(range(10, 30))


def test_dithered_positions_are_seamless_and_share_by_weight(stripe):
    xyz, motion, _ = stripe
    a, b = dithered_at(xyz, motion, 0.0), dithered_at(xyz, motion, 2.0 - 1e-4)
    assert np.abs(a - b).max() < 1e-3 * 6.0 + 1e-6
    big = np.repeat(xyz[10:11], 1000, 0)
    m = np.repeat(motion[10:11], 1000, 0)
    forward = (dithered_at(big, m, 0.6) - big)[:, 0] > 0  # tau = 0.3: forward copies right
    assert abs(forward.mean() - 0.7) < 0.01


def test_lift_flow_keeps_each_point_at_its_depth():
    K = np.array([[100.0, 0, 50], [0, 100.0, 50], [0, 0, 1]])
    pose = np.eye(4)
    pose[:3, 3] = [1.0, 0.0, 0.0]
    xyz = np.array([[1.0, 0.0, 4.0], [1.0, 0.5, 8.0]], np.float32)
    d = lift_flow(xyz, pose, K, np.array([[60.0, 50.0], [50.0, 55.0]]), np.array([[50.0, 50.0],
                                                                                 [50.0, 50.0]]))
    np.testing.assert_allclose(d, [[0.4, 0.0, 0.0], [0.0, 0.4, 0.0]], atol=1e-6)


def test_store_and_ply_keep_motion(tmp_path, stripe):
    xyz, motion, _ = stripe
    n = len(xyz)
    store = PointStore(voxel_size=0.01)
    store.append(PointCloud(xyz, np.zeros((n, 3), np.uint8), np.full(n, 0.1, np.float32)))
    before = store.set_motion(np.arange(10, 30), motion[10:30])
    assert (before == 0).all()
    store.save(tmp_path / "c.ply")
    again = PointStore.load(tmp_path / "c.ply", voxel_size=0.01)
    np.testing.assert_array_equal(again.cloud().motion, motion)
    store.set_motion(np.arange(10, 30), before)  # taken back: nothing moves, no columns
    assert store.cloud().motion is None
    write_ply(tmp_path / "s.ply", store.cloud())
    assert read_ply(tmp_path / "s.ply").motion is None
    # appended points are static; truncation keeps the rest's motion
    again.append(PointCloud(xyz + 100, np.zeros((n, 3), np.uint8), np.full(n, 0.1, np.float32)))
    assert again.cloud().motion.shape == (2 * n, 4) and (again.cloud().motion[n:] == 0).all()
    again.truncate(n)
    np.testing.assert_array_equal(again.cloud().motion, motion)


@pytest.fixture(scope="module")
def dynamics():
    engine = ClassicEngine(depth_model="none")
    depth = np.full((SIZE, SIZE), 5.0, np.float32)
    scene, _ = engine.open_scene(OpenRequest("living", _image(), depth=depth))
    arrows = (Arrow(start=[30.0, 30.0], vector=[1.0, 0.0]),)
    request = DynamicsRequest(pose=np.eye(4), num_frames=16, arrows=arrows)
    events = list(engine.dynamics(scene, request))
    return engine, scene, events


def test_dynamics_leaves_its_region_moving(dynamics):
    engine, scene, events = dynamics
    kept = [e for e in events if isinstance(e, MotionOut)]
    assert len(kept) == 1 and kept[0].region.startswith("1 arrow")
    cloud = scene.cloud.cloud()
    moving = cloud.motion[:, 3] > 0
    assert moving.sum() == len(kept[0].index) > 500
    # only the water (upper half of the view, z = 5) moves, to the right, 16 frames at ~1 px
    row = scene.K[1, 1] * cloud.xyz[:, 1] / cloud.xyz[:, 2] + scene.K[1, 2]
    assert (row[moving] < SIZE // 2 + 1).all()
    dx_px = cloud.motion[moving, 0] / cloud.xyz[moving, 2] * scene.K[0, 0]
    assert np.median(dx_px) > 8 and (cloud.motion[moving, 1:3] ** 2).sum(1).max() < 1e-3
    np.testing.assert_allclose(cloud.motion[moving, 3], 16 / 24.0)
    assert scene.moving_regions == [kept[0].region]


def test_transitions_render_the_moving_world(dynamics):
    engine, scene, _ = dynamics
    w, h = scene.size
    frames = [render_at(engine.renderer, scene.cloud, np.eye(4)[None], scene.K, w, h, t)
              .numpy().image[0].astype(float) for t in (0.0, 0.25, 16 / 24.0 - 1e-3)]
    diff = np.abs(frames[1] - frames[0]).max(axis=2)
    assert diff[: SIZE // 2 - 8].mean() > 4
    assert diff[SIZE // 2 + 8:].max() == 0  # the bank is exactly the static render
    static = engine.renderer.render(scene.cloud.cloud().with_motion(None), np.eye(4)[None],
                                    scene.K, w, h).numpy().image[0].astype(float)
    assert np.array_equal(frames[0], static)  # at t = 0 the world is at rest
    assert np.abs(frames[2] - frames[0]).mean() < 0.1 * np.abs(frames[1] - frames[0]).mean()


def test_undo_gives_the_points_their_motion_back(dynamics):
    _, scene, events = dynamics
    kept = next(e for e in events if isinstance(e, MotionOut))
    region_motion.take_back(scene, kept)
    assert scene.cloud.cloud().motion is None and scene.moving_regions == []


def test_clip_flow_reads_back_a_moving_texture_in_its_region_only():
    """A clip whose left half slides right 1 px a frame: the field says so, and only there."""
    from backend.clip_flow import clip_region

    rng = np.random.default_rng(0)
    texture = (rng.random((64, 160)) * 255).astype(np.float32)
    texture = np.clip(cv2.GaussianBlur(texture, (0, 0), 1.5) * 3 - 250, 0, 255)
    frames = []
    for t in range(8):
        img = texture[:, 40:104].copy()
        img[:, :32] = texture[:, 40 - t: 72 - t]  # content moves right with t
        frames.append(np.repeat(img[..., None], 3, 2).astype(np.uint8))
    field, region = clip_region(frames[0], frames, (), None, feather_px=2.0)
    inner = np.zeros_like(region)
    inner[8:-8, 8:24] = True
    assert region[inner].mean() > 0.9 and not region[:, 40:].any()
    np.testing.assert_allclose(np.median(field[inner], axis=0), [1.0, 0.0], atol=0.15)
