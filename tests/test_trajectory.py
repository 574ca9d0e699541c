"""Trajectory presets, arc-length resampling and keyframe splines (protocol.trajectory)."""

import numpy as np
import pytest

from protocol.camera import check_pose, look_at, rotation_about
from protocol.trajectory import (
    ROTATION_ANGLE,
    STOCK_PATHS,
    keyframe_spline,
    pose_steps,
    resample_path,
    stock_path,
)


@pytest.mark.parametrize("name", STOCK_PATHS)
@pytest.mark.parametrize("median_depth", [0.01, 1.0, 250.0])
def test_stock_paths_have_length_continuity_and_scale(name, median_depth):
    poses = stock_path(name, n_frames=49, median_depth=median_depth)
    assert poses.shape == (49, 4, 4)
    for p in poses:
        check_pose(p)
    np.testing.assert_allclose(poses[0], np.eye(4), atol=1e-12)
    dt, da = pose_steps(poses)
    total = np.linalg.norm(poses[-1, :3, 3])
    # bounded steps: no step more than twice the mean step
    assert dt.max() <= 2.0 * max(dt.mean(), 1e-12) + 1e-12
    assert da.max() <= 2.0 * da.mean() + 1e-12
    # travel scales with the median depth
    assert 0.05 * median_depth < total < 1.0 * median_depth


def test_stock_path_directions_follow_the_paper():
    back = stock_path("backward", 49, median_depth=2.0)
    assert back[-1, 2, 3] == pytest.approx(-1.0)
    assert abs(back[24, 1, 3]) > 0.01 and back[-1, 1, 3] == pytest.approx(0.0, abs=1e-12)
    assert stock_path("forward", 49, median_depth=2.0)[-1, 2, 3] == pytest.approx(1.0)
    left, right = stock_path("rotate_left", 49), stock_path("rotate_right", 49)
    _, da = pose_steps(left)
    assert da.sum() == pytest.approx(ROTATION_ANGLE)
    assert left[-1, 0, 2] < 0 < right[-1, 0, 2]  # forward axis turns left / right (x)
    seeds = {round(stock_path("backward", 9, seed=s)[4, 1, 3], 6) for s in range(5)}
    assert len(seeds) > 1  # the sine perturbation is random across seeds


def test_stock_path_rejects_unknown_names():
    with pytest.raises(ValueError, match="backward"):
        stock_path("sideways")


def test_stock_path_starts_at_a_given_pose():
    start = look_at([1.0, 0.0, 0.0], [1.0, 0.0, 5.0])
    start[:3, :3] = rotation_about([0, 1, 0], 0.3)
    poses = stock_path("forward", 10, start=start)
    np.testing.assert_allclose(poses[0], start)
    # moves along the start pose's own forward axis
    d = poses[-1, :3, 3] - start[:3, 3]
    assert np.dot(d / np.linalg.norm(d), start[:3, 2]) == pytest.approx(1.0)


def jittery_path(n=200, seed=0):
    rng = np.random.default_rng(seed)
    # irregular speed along a curve with a turn, plus hand jitter
    s = np.sort(rng.uniform(0, 1, n))
    s[0], s[-1] = 0.0, 1.0
    poses = np.empty((n, 4, 4))
    for i, t in enumerate(s):
        p = np.eye(4)
        p[:3, :3] = rotation_about([0, 1, 0], 0.8 * t + rng.normal(0, 0.01))
        p[:3, 3] = [np.sin(2 * t), rng.normal(0, 0.005), 3 * t]
        poses[i] = p
    return poses


def test_resampled_path_is_even_smooth_and_has_the_length():
    raw = jittery_path()
    poses = resample_path(raw, 49)
    assert poses.shape == (49, 4, 4)
    for p in poses:
        check_pose(p)
    np.testing.assert_allclose(poses[0], raw[0], atol=1e-9)
    np.testing.assert_allclose(poses[-1], raw[-1], atol=1e-9)
    dt, da = pose_steps(poses)
    step = dt + da
    assert step.max() < 1.5 * step.mean()  # evenly spaced by arc length
    raw_dt, _ = pose_steps(raw)
    assert raw_dt.max() > 3 * raw_dt.mean()  # the input was not
    # smoothing: second differences of the positions shrink versus the raw samples
    rough = np.linalg.norm(np.diff(resample_path(raw, 49, smooth_iterations=0)[:, :3, 3], 2, 0), axis=1)
    smooth = np.linalg.norm(np.diff(poses[:, :3, 3], 2, 0), axis=1)
    assert smooth.mean() < rough.mean()


def test_resample_handles_turns_on_the_spot_and_single_poses():
    turn = np.stack([np.eye(4)] * 2)
    turn[1, :3, :3] = rotation_about([0, 1, 0], 1.0)
    poses = resample_path(turn, 11, smooth_iterations=0)
    _, da = pose_steps(poses)
    np.testing.assert_allclose(da, 0.1, atol=1e-6)
    assert resample_path(np.eye(4)[None], 5).shape == (5, 4, 4)


def test_keyframe_spline_passes_through_keyframes():
    keys = np.stack([np.eye(4)] * 3)
    keys[1, :3, 3] = [1.0, 0.0, 2.0]
    keys[2, :3, 3] = [0.0, 0.0, 4.0]
    keys[2, :3, :3] = rotation_about([0, 1, 0], -0.6)
    poses = keyframe_spline(keys, 21)
    assert poses.shape == (21, 4, 4)
    np.testing.assert_allclose(poses[[0, 10, 20]], keys, atol=1e-9)
    dt, da = pose_steps(poses)
    assert dt.max() < 3 * dt.mean() and da.max() < 0.1
