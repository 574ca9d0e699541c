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
from backend.scheduler import FairScheduler, Ticket
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


def _job(tmp_path, room: int, engine: Engine | None = None, slots: FairScheduler | None = None
         ) -> tuple[JobRun, FakeOutbox, SceneRegistry, Job]:
    config = BackendConfig(sessions=str(tmp_path / "s"), save_clips=False)
    sessions = SessionStore(config.sessions)
    engine = engine or ThreeFrames()
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
    return JobRun(ctx, job, slots or FairScheduler(1, 4), preemptible=True), outbox, scenes, job


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


class Steps(Engine):
    """A long transition: a step of work (~1 ms) per event until ``finish`` is set (or
    ``limit`` steps); ``steps`` counts them, ``started`` is set at each, ``past_slice`` once
    ``past`` steps (over ``past`` ms) ran."""

    name = "steps"

    def __init__(self, limit: int | None = None, past: int = 40):
        self.limit, self.past = limit, past
        self.steps: list[int] = []
        self.started, self.finish, self._work = threading.Event(), threading.Event(), threading.Event()
        self.past_slice = threading.Event()

    def open_scene(self, request):  # pragma: no cover - not used
        raise NotImplementedError

    def resume_scene(self, scene_id, sessions):  # pragma: no cover - not used
        raise NotImplementedError

    def transition(self, scene, request):
        while not self.finish.is_set() and (self.limit is None or len(self.steps) < self.limit):
            self._work.wait(0.001)  # the step's work: it takes time, as a job's steps do
            self.steps.append(len(self.steps))
            self.started.set()
            if len(self.steps) >= self.past:
                self.past_slice.set()
            yield ProgressOut("render", len(self.steps), self.limit or 0)

    def dynamics(self, scene, request):  # pragma: no cover - not used
        raise NotImplementedError


def _long_job(tmp_path, slots: FairScheduler, engine: Steps):
    """A Steps job of client ``me`` on ``slots``: (its run, its ticket, set when it gives way)."""
    run, outbox, _, _ = _job(tmp_path, room=10, engine=engine, slots=slots)
    gave_way = threading.Event()

    def body():
        resume = run()
        if resume is not None and run.gave_way_at is not None:
            gave_way.set()
        return resume

    return run, outbox, Ticket("me", run.key, body), gave_way


def _work(steps: int) -> None:
    """A short job's work: ``steps`` steps of ~1 ms."""
    idle = threading.Event()
    for _ in range(steps):
        idle.wait(0.001)


def test_a_long_job_gives_the_cpu_to_another_clients_short_job(tmp_path):
    """Two slots. A job past its first time slice stops at its next event while another
    client's fresh job runs beside it (its generator is not advanced: no step of it runs
    meanwhile), and goes on when that job is done."""
    slots = FairScheduler(2, 4, slice_s=0.2)
    engine = Steps(past=250)
    run, outbox, long_ticket, gave_way = _long_job(tmp_path, slots, engine)
    seen: dict = {}

    def short() -> None:
        seen["gave_way"] = gave_way.wait(30)
        seen["running"] = slots.running_keys()
        seen["before"] = len(engine.steps)
        _work(20)  # within its 200 ms slice; the long job, were it running, would take ~20 steps
        seen["after"] = len(engine.steps)

    try:
        slots.submit(long_ticket)
        assert engine.past_slice.wait(30)  # over 250 ms on its slot: past its 200 ms slice
        other = Ticket("you", "short", short)
        slots.submit(other)
        assert other.done.wait(60)
        assert seen["gave_way"] and seen["running"] == {"short"}, seen
        assert seen["after"] == seen["before"], seen  # not a step while the short job ran
        # the short job done, the long one goes on where it was
        resumed = len(engine.steps)
        while len(engine.steps) == resumed:
            assert not long_ticket.done.is_set()
            engine.started.clear()
            assert engine.started.wait(30)
        engine.finish.set()
        assert long_ticket.done.wait(30)
        assert isinstance(outbox.sent[-1], JobDone), outbox.sent[-1]
        assert engine.steps == list(range(len(engine.steps)))
    finally:
        engine.finish.set()
        slots.shutdown()


def test_a_long_job_held_back_by_short_jobs_still_finishes(tmp_path):
    """Short jobs of two other clients follow each other with no gap (each queues the next
    before it ends), so one is always fresh: the long job, held back a whole slice at a time,
    then runs a slice, and ends."""
    slots = FairScheduler(2, 4, slice_s=0.1)
    engine = Steps(limit=300, past=150)
    run, outbox, long_ticket, gave_way = _long_job(tmp_path, slots, engine)
    shorts: list[Ticket] = []

    def chain(i: int) -> None:
        _work(3)  # well within its 100 ms slice: fresh until it ends
        if not long_ticket.done.is_set():  # the next one is due before this one ends
            nxt = Ticket("you" if i % 2 else "them", f"short{i + 1}", lambda: chain(i + 1))
            shorts.append(nxt)
            slots.submit(nxt)

    try:
        slots.submit(long_ticket)
        assert engine.past_slice.wait(30)
        first = Ticket("them", "short0", lambda: chain(0))
        slots.submit(first)
        assert long_ticket.done.wait(60), f"{len(engine.steps)} steps after {len(shorts)} short jobs"
        assert gave_way.is_set() and len(engine.steps) == 300
        assert isinstance(outbox.sent[-1], JobDone), outbox.sent[-1]
        assert all(t.done.wait(30) for t in list(shorts))
    finally:
        engine.finish.set()
        slots.shutdown()
