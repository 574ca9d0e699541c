"""Fairness in time on the real Backend over real sockets: a slow reader and a long job give
their slot to others, every job has a wall-time and a work cap, arrows are bounded, and a
polite client with many requests in flight is not mistaken for a flooder. Every wait is on
an event (a message on the wire), never on the clock."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from backend.config import LimitsConfig, SchedulerConfig
from backend.scheduler import FairScheduler, Resume, Ticket
from backend.server import Backend, BackendConfig
from protocol import codec
from protocol.messages import Arrow, Frame, JobAccepted, JobDone, JobFailed, Transition
from protocol.scripted import ScriptedClient
from protocol.trajectory import stock_path
from protocol.transport import Client
from tests.helpers import scene


def make_backend(tmp_path, **scheduler) -> Backend:
    sched = {"job_slots": 1, "open_slots": 2, "credit_timeout_s": 60.0, "slice_s": 0.05,
             **scheduler}
    return Backend(BackendConfig(
        bind="tcp://127.0.0.1:0", sessions=str(tmp_path / "s"), heartbeat_s=0.5,
        scheduler=SchedulerConfig(**sched), save_clips=False,
        limits=LimitsConfig(max_image_pixels=512 * 512, max_frames=240,
                            max_job_pixel_frames=128 * 128 * 240)))


def start_job(client: Client, scene_id: str, job_id: str, n: int, size: int = 64) -> None:
    """Open ``scene_id`` on a raw Client and send an ``n``-frame transition (no waiting for
    its end: the caller reads the events)."""
    from protocol import requests

    client.send(*requests.open_scene(scene_id, scene(3, size)))
    while getattr((ev := client.poll(timeout=60)).msg, "last", None) is not True:
        assert ev is not None
    poses = stock_path("forward", n, 1.0)
    client.send(*requests.transition(job_id, scene_id, poses))


def next_of(client: Client, kinds: tuple, job_id: str):
    while True:
        ev = client.poll(timeout=60)
        assert ev is not None, f"nothing for {job_id}"
        if isinstance(ev.msg, kinds) and getattr(ev.msg, "job_id", None) == job_id:
            return ev.msg


def test_a_slow_reader_gives_its_slot_to_others(tmp_path):
    """One job slot. A client that granted one frame of credit and grants no more has a job
    that waits for credit: a second client's job runs and ends meanwhile, then the slow
    reader's job goes on as soon as credit comes."""
    with make_backend(tmp_path) as backend, Client(backend.address, credits=1) as slow:
        slow.connect()
        start_job(slow, "slow", "s", 24)
        next_of(slow, (Frame,), "s")  # its first frame: now it waits for credit
        with ScriptedClient(backend.address) as other:
            other.open_scene(scene(4), scene_id="quick")
            quick = other.transition("quick", stock_path("forward", 4, 1.0))
            assert isinstance(quick.outcome, JobDone), quick.outcome
        status = {j.job_id: j for j in backend.jobs.states()}
        assert "s" in status and not status["s"].running  # parked, holding no slot
        frames = 1
        while True:  # credit comes: the slow reader's job resumes and finishes
            slow.credit(1)
            msg = next_of(slow, (Frame, JobDone, JobFailed), "s")
            if not isinstance(msg, Frame):
                break
            frames += 1
        assert isinstance(msg, JobDone) and frames == 24, msg


def test_a_long_job_hands_its_slot_over_in_time(tmp_path):
    """One job slot, a 240-frame job running: another client's short job is done before the
    long one ends (it was given the slot after a time slice)."""
    with make_backend(tmp_path) as backend, Client(backend.address, credits=1000) as long:
        long.connect()
        start_job(long, "long", "L", 240, size=128)
        next_of(long, (Frame,), "L")
        with ScriptedClient(backend.address) as other:
            other.open_scene(scene(4), scene_id="quick")
            quick = other.transition("quick", stock_path("forward", 4, 1.0))
            assert isinstance(quick.outcome, JobDone), quick.outcome
        assert "L" in backend.jobs.job_ids(), "L ended first"
        end = next_of(long, (JobDone, JobFailed), "L")
        assert isinstance(end, JobDone) and end.num_frames == 240, end


def test_wall_time_and_work_caps_name_their_limit(tmp_path):
    with make_backend(tmp_path, max_job_s=0.3) as backend, \
            ScriptedClient(backend.address, timeout_s=600) as client:
        opened = client.open_scene(scene(1, 128), scene_id="cap")
        job = client.transition("cap", stock_path("forward", 240, opened.scene.median_depth))
        assert isinstance(job.outcome, JobFailed) and job.outcome.code == "time_limit", job.outcome
        assert "scheduler.max_job_s" in job.outcome.message and len(job.frames) < 240
        big = client.open_scene(scene(1, 256), scene_id="big")  # 256 x 256 x 240 > the cap
        job = client.dynamics("big", np.eye(4), num_frames=240)
        assert isinstance(job.outcome, JobFailed) and job.outcome.code == "too_large", job.outcome
        assert "limits.max_job_pixel_frames" in job.outcome.message and not job.frames
        assert big.scene.width == 256


def test_arrows_are_bounded_by_the_view(tmp_path):
    with make_backend(tmp_path) as backend, ScriptedClient(backend.address) as client:
        client.open_scene(scene(1), scene_id="a")
        job = client.dynamics("a", np.eye(4), num_frames=3,
                              arrows=[Arrow(start=(10.0, 10.0), vector=(1e9, 0.0))])
        assert isinstance(job.outcome, JobFailed) and job.outcome.code == "bad_request"
        assert "longer than the 64x64 view" in job.outcome.message
        ok = client.dynamics("a", np.eye(4), num_frames=3,
                             arrows=[Arrow(start=(10.0, 10.0), vector=(3.0, 0.0))])
        assert isinstance(ok.outcome, JobDone), ok.outcome


def test_a_polite_client_with_ten_jobs_in_flight_is_served(tmp_path):
    """Ten transitions sent at once, every frame credited the moment it arrives: all ten
    end with JobDone, none with the flooding cut-off."""
    config = dict(max_jobs_per_client=10)
    with make_backend(tmp_path, **config) as backend, Client(backend.address, credits=64) as client:
        client.connect()
        start_job(client, "p", "j0", 8)
        poses = codec.array_blob(stock_path("forward", 8, 1.0).astype(np.float32), 0)
        for i in range(1, 10):
            client.send(Transition(job_id=f"j{i}", scene_id="p", poses=poses[0]), [poses[1]])
        done, accepted = set(), 0
        while len(done) < 10:
            ev = client.poll(timeout=60)
            assert ev is not None and not hasattr(ev, "reason"), ev
            msg = ev.msg
            assert not isinstance(msg, JobFailed), msg
            if isinstance(msg, Frame):
                client.credit(1)
            accepted += isinstance(msg, JobAccepted)
            if isinstance(msg, JobDone):
                done.add(msg.job_id)
        assert accepted == 10 and backend.endpoint.stats.rate_limited == 0


def test_the_scheduler_parks_and_resumes_a_job_without_a_thread():
    """A body that returns a Resume leaves its slot at once to another client's job; its
    next run starts when ``ready`` says so; a client never has two runs at once."""
    sched = FairScheduler(slots=1, max_per_client=2)
    order, go_on, parked = [], threading.Event(), threading.Event()
    runs = iter(range(3))

    def patient() -> Resume | None:
        step = next(runs)
        order.append(f"p{step}")
        if step == 0:
            parked.set()
            return Resume(ready=go_on.is_set)
        return None

    try:
        first = Ticket("A", "p", patient)
        sched.submit(first)
        assert parked.wait(10)
        other = Ticket("B", "b", lambda: order.append("b"))
        sched.submit(other)
        assert other.done.wait(10)  # B ran while A's job waited, on the only slot
        assert not first.done.is_set() and order == ["p0", "b"]
        go_on.set()
        assert first.done.wait(10) and order == ["p0", "b", "p1"]
    finally:
        sched.shutdown()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 0.0, -5.0])
def test_every_timeout_is_finite_and_positive(value, tmp_path):
    from backend.config import ConfigError, check_config

    config = BackendConfig(sessions=str(tmp_path / "s"),
                           scheduler=SchedulerConfig(credit_timeout_s=value))
    with pytest.raises(ConfigError, match=r"scheduler\.credit_timeout_s"):
        check_config(config)
