"""Dynamic transitions on the classic engine: each frame rendered at its time on the world's
motion clock (backend.engines.world_clock), directly and through a real backend on loopback.

The upper band of the scene is given a looping sideways slide (4D points, ``geometry.motion``),
so where and when the world moves is known exactly.
"""

from __future__ import annotations

import numpy as np
import pytest

from backend.engines import world_clock
from backend.engines.base import FrameOut, OpenRequest, ProgressOut, TransitionRequest
from backend.engines.classic import ClassicEngine
from backend.server import Backend, BackendConfig
from protocol.messages import JobDone, TransitionDynamics
from protocol.scripted import ScriptedClient
from protocol.trajectory import stock_path

H = W = 96
BAND = 0.3
"""The moving points are those the first view sees in its top 30% of rows."""


def ramp() -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    return np.stack([xx * 2, yy * 2, (xx * 7 + yy * 3) % 256], -1).astype(np.uint8)


def slide_band(scene, dx: float = 0.3, period: float = 1.0) -> int:
    """Give the points the first view sees above its ``BAND`` line a loop sliding ``dx``
    along x every ``period`` seconds (4D points, ``geometry.motion``); returns how many."""
    K = scene.K
    line = (BAND * H - K[1, 2]) / K[1, 1]  # y / z of the band's lower edge
    xyz = scene.cloud.cloud().xyz
    index = np.flatnonzero(xyz[:, 1] < line * xyz[:, 2])
    motion = np.zeros((len(index), 4), np.float32)
    motion[:, 0], motion[:, 3] = dx, period
    scene.cloud.set_motion(index, motion)
    return len(index)


@pytest.fixture
def times(monkeypatch) -> list[float]:
    """The world-clock times the classic engine renders at, in order."""
    seen: list[float] = []
    original = world_clock.render_at

    def recording(renderer, source, poses, K, width, height, t):
        seen.append(t)
        return original(renderer, source, poses, K, width, height, t)

    monkeypatch.setattr(world_clock, "render_at", recording)
    return seen


def run(engine: ClassicEngine, name: str, request_of, moving: bool = False):
    scene, _ = engine.open_scene(OpenRequest(name, ramp()))
    if moving:
        assert slide_band(scene) > 0
    events = list(engine.transition(scene, request_of(scene)))
    frames = [e.image for e in events if isinstance(e, FrameOut)]
    notes = [e.message for e in events if isinstance(e, ProgressOut) and e.stage == "motion"]
    return frames, notes


@pytest.fixture(scope="module")
def engine():
    return ClassicEngine(depth_model="none")


def poses_for(scene, n=9):
    return stock_path("backward", n, scene.median_depth)


def test_a_still_world_renders_the_plain_transition_and_says_so(engine):
    plain, said = run(engine, "plain", lambda s: TransitionRequest(poses_for(s)))
    still, still_said = run(engine, "still", lambda s: TransitionRequest(
        poses_for(s), dynamics=TransitionDynamics(start_s=3.0)))
    assert said == [] and still_said == [world_clock.STILL_NOTE]
    assert len(plain) == len(still) == 9
    for a, b in zip(plain, still, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_moving_world_renders_each_frame_at_its_time_and_only_the_band_moves(engine, times):
    fps, start = 12.0, 0.3
    plain, _ = run(engine, "plain", lambda s: TransitionRequest(poses_for(s), fps=fps))
    times.clear()
    moving, said = run(engine, "moving", lambda s: TransitionRequest(
        poses_for(s), fps=fps, dynamics=TransitionDynamics(start_s=start)), moving=True)
    assert said == ["dynamic transition: the world moves on"]
    np.testing.assert_allclose(times, [start + j / fps for j in range(9)])
    top, bottom = slice(0, int(0.2 * H)), slice(int(0.5 * H), H)
    for j, (a, b) in enumerate(zip(plain, moving, strict=True)):
        diff = np.abs(a.astype(int) - b).max(-1)
        # the still part is the plain render's, up to one level of rounding in a few pixels
        assert diff[bottom].max() <= 1 and (diff[bottom] > 0).mean() < 0.01, \
            f"frame {j}: the still part changed"
        tau = (start + j / fps) % 1.0  # the loop's phase: both copies apart mid-loop
        if 0.25 < tau < 0.75:
            assert diff[top].mean() > 1.0, f"frame {j}: the band did not move"


@pytest.fixture
def backend(tmp_path):
    config = BackendConfig(bind="tcp://127.0.0.1:0", sessions=tmp_path / "sessions",
                           heartbeat_s=0.2, peer_timeout_s=5.0, cpu_jobs=1,
                           engine_options={"classic": {"depth_model": "none"}})
    with Backend(config) as b:
        yield b


def test_the_dynamic_transition_message_reaches_the_world_clock(backend, monkeypatch, times):
    with ScriptedClient(backend.address, credits=4) as client:
        opened = client.open_scene(ramp(), scene_id="still")
        poses = stock_path("backward", 5, opened.scene.median_depth)
        job = client.transition("still", poses, dynamics=TransitionDynamics(start_s=1.0))
        assert isinstance(job.outcome, JobDone) and len(job.frames) == 5
        assert [p.message for p in job.progress if p.stage == "motion"] == [world_clock.STILL_NOTE]
        # a moving world: the frames' times come from the message's start_s and fps
        monkeypatch.setattr(world_clock, "world_moves", lambda scene: True)
        times.clear()
        job = client.transition("still", poses[::-1], fps=10.0,
                                dynamics=TransitionDynamics(start_s=2.0))
        assert isinstance(job.outcome, JobDone) and len(job.frames) == 5
        np.testing.assert_allclose(times, [2.0 + j / 10.0 for j in range(5)])
        times.clear()  # a plain transition on a moving world: its clock starts at 0
        plain = client.transition("still", poses, fps=10.0)
        assert isinstance(plain.outcome, JobDone)
        np.testing.assert_allclose(times, [j / 10.0 for j in range(5)])
