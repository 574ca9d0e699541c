"""backend.wire: job messages become checked engine requests, once, before they queue."""

from __future__ import annotations

import numpy as np
import pytest

from backend import wire
from backend.engines.base import DynamicsRequest, TransitionRequest
from protocol import codec
from protocol.errors import BadArray, BadValue
from protocol.messages import Arrow, Dynamics, Transition
from protocol.trajectory import stock_path

VIEW = wire.View(width=64, height=48, median_depth=2.0)


def _transition(poses: np.ndarray) -> tuple[Transition, list]:
    ref, buf = codec.array_blob(poses.astype(np.float32), 0)  # float32: the wire precision
    return Transition(job_id="j", scene_id="s", poses=ref), [memoryview(buf).cast("B")]


def test_a_transition_becomes_float64_poses_checked_once():
    poses = stock_path("forward", n_frames=12, median_depth=2.0)
    msg, blobs = _transition(poses)
    request = wire.job_request(msg, blobs, VIEW)
    assert isinstance(request, TransitionRequest) and request.poses.dtype == np.float64
    np.testing.assert_allclose(request.poses, poses, atol=1e-5)


@pytest.mark.parametrize("bad, expect", [
    (lambda p: p[:1], "at least 2 poses"),
    (lambda p: _scaled(p, 3), "pose 3 rotation is not orthonormal"),
    (lambda p: _set(p, (5, 3, 0), 0.5), "pose 5 bottom row"),
    (lambda p: _set(p, (2, 0, 3), np.inf), "pose 2 has non-finite"),
    (lambda p: _set(p, (4, 1, 3), 3e4), "pose 4 is more than 20000"),
    (lambda p: _mirrored(p, 6), "pose 6 rotation is not orthonormal with det"),
])
def test_bad_poses_are_named_by_index(bad, expect):
    poses = stock_path("forward", n_frames=8, median_depth=2.0)
    msg, blobs = _transition(bad(poses.copy()))
    with pytest.raises((BadValue, BadArray), match=expect):
        wire.job_request(msg, blobs, VIEW)


def test_dynamics_arrows_and_mask_are_checked_against_the_view():
    ok = Dynamics(job_id="d", scene_id="s", pose=tuple(np.eye(4).ravel()), num_frames=4,
                  arrows=[Arrow(start=(10.0, 10.0), vector=(2.0, 0.0))])
    request = wire.job_request(ok, [], VIEW)
    assert isinstance(request, DynamicsRequest) and request.pose.dtype == np.float64
    far = Dynamics(job_id="d", scene_id="s", pose=tuple(np.eye(4).ravel()),
                   arrows=[Arrow(start=(10.0, 10.0), vector=(100.0, 0.0))])
    with pytest.raises(BadValue, match="longer than the 64x48 view"):
        wire.job_request(far, [], VIEW)
    ref, buf = codec.array_blob(np.zeros((48, 63), np.uint8), 0)
    masked = Dynamics(job_id="d", scene_id="s", pose=tuple(np.eye(4).ravel()), frozen=ref)
    with pytest.raises(BadArray, match="frozen mask"):
        wire.job_request(masked, [memoryview(buf).cast("B")], VIEW)


def _scaled(p: np.ndarray, i: int) -> np.ndarray:
    p[i, :3, :3] *= 2
    return p


def _set(p: np.ndarray, at: tuple[int, int, int], value: float) -> np.ndarray:
    p[at] = value
    return p


def _mirrored(p: np.ndarray, i: int) -> np.ndarray:
    p[i, :3, 0] *= -1
    return p
