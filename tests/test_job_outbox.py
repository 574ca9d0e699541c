"""A job runs behind its Outbox alone: no endpoint, a fake explorer connection and engine."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from backend.config import BackendConfig
from backend.engines.base import Engine, FrameOut, ProgressOut, Scene, TransitionRequest
from backend.geometry.store import PointStore
from backend.jobs import Job, JobContext, JobRun
from backend.quotas import Quotas
from backend.scenes import SceneRegistry
from backend.scheduler import FairScheduler
from backend.session import SessionStore
from protocol.messages import Frame, JobDone, JobFailed, Message
from protocol.messages import Progress as ProgressMsg


class FakeOutbox:
    """Grants ``room`` frames, then none until ``grant``."""

    def __init__(self, room: int):
        self.room = room
        self.sent: list[Message] = []
        self.discarded: list[str] = []
        self.gone = False

    def send(self, msg: Message, blobs: Sequence = ()) -> None:
        if isinstance(msg, Frame):
            self.room -= 1
        self.sent.append(msg)

    def wait_room(self, frames_ahead: int, timeout: float) -> bool:
        return self.has_room(frames_ahead)

    def has_room(self, frames_ahead: int) -> bool:
        return self.room > 0 and not self.gone

    def connected(self) -> bool:
        return not self.gone

    def discard_frames(self, job_id: str) -> None:
        self.discarded.append(job_id)


class ThreeFrames(Engine):
    name = "fake"

    def open_scene(self, request):  # pragma: no cover - not used
        raise NotImplementedError

    def resume_scene(self, scene_id, sessions):  # pragma: no cover - not used
        raise NotImplementedError

    def transition(self, scene, request):
        yield ProgressOut("render", 0, 3)
        for i, pose in enumerate(request.poses):
            yield FrameOut(i, np.full((8, 8, 3), 40 * i, np.uint8), pose)
        scene.pose = request.poses[-1]

    def dynamics(self, scene, request):  # pragma: no cover - not used
        raise NotImplementedError


def _job(tmp_path, room: int) -> tuple[JobRun, FakeOutbox, SceneRegistry, Job]:
    config = BackendConfig(sessions=str(tmp_path / "s"), save_clips=False)
    sessions = SessionStore(config.sessions)
    engine = ThreeFrames()
    scenes = SceneRegistry(sessions, lambda name: engine, 4, 4, 16)
    entry = scenes.claim(b"p", "me", "s", "fake", resume=False)
    scene = Scene("s", np.zeros((8, 8, 3), np.uint8), np.eye(3), PointStore(), 1.0)
    scenes.opened(entry, scene, lambda: True)
    outbox = FakeOutbox(room)
    ended: list[Job] = []
    ctx = JobContext(config, sessions, Quotas(config.quotas, sessions), scenes,
                     lambda name: engine, ended.append)
    poses = np.tile(np.eye(4), (3, 1, 1))
    job = Job("j", b"p", "me", entry, TransitionRequest(poses), outbox, "fake")
    return JobRun(ctx, job, FairScheduler(1, 4), preemptible=True), outbox, scenes, job


def test_a_job_streams_progress_frames_and_its_outcome_through_the_outbox(tmp_path):
    run, outbox, scenes, job = _job(tmp_path, room=10)
    assert run() is None
    kinds = [type(m) for m in outbox.sent]
    assert kinds == [ProgressMsg, Frame, Frame, Frame, JobDone], kinds
    assert [m.index for m in outbox.sent if isinstance(m, Frame)] == [0, 1, 2]
    assert len(job.entry.undo) == 1  # the transition can be undone
    assert not scenes.busy(job.entry)


def test_a_job_without_credit_ends_when_its_explorer_leaves(tmp_path):
    run, outbox, _, job = _job(tmp_path, room=1)
    done = threading.Event()

    def leave() -> None:
        outbox.gone = True
        done.set()

    threading.Timer(0.2, leave).start()
    assert run() is None  # waits for room on the slot (nobody else waits), then sees it gone
    assert done.is_set() and outbox.discarded == ["j"]
    assert sum(isinstance(m, Frame) for m in outbox.sent) == 1
    assert not any(isinstance(m, (JobDone, JobFailed)) for m in outbox.sent)  # nobody to tell
