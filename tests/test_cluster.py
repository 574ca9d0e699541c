"""`serve --cluster`: the real front door on loopback, the classic engine on Ray actors.

One small local Ray instance per module (2 logical CPUs, loopback only, no dashboard) and one
backend with two CPU EngineWorkers, reused by every test. The workers run the classic engine
paced by PacedEngine (a wait before the first event and before each frame), so a test can act
while a job is running.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep Ray on loopback
ray = pytest.importorskip("ray")

from backend.server import Backend, BackendConfig  # noqa: E402
from protocol import codec  # noqa: E402
from protocol.messages import Frame, JobDone, JobFailed, Status, StatusReply, Transition  # noqa: E402
from protocol.scripted import ScriptedClient  # noqa: E402
from protocol.trajectory import stock_path  # noqa: E402
from protocol.transport import Client  # noqa: E402

pytestmark = pytest.mark.slow
SIZE = 96
START_S = 1.5  # the paced engine's wait before a job's first event
FRAME_S = 0.08  # and before each frame
READY_S = 3000.0  # how long a Ray worker may take to start or restart: a loaded machine is slow


def load(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR))


@pytest.fixture(scope="module")
def cluster():
    # Ray starts its workers at nice 15: beside busy processes at nice 0 they got about 1 % of a
    # core each (8 busy processes: 3.5 min to start the two workers, minutes per job).
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_worker_niceness", "0")
        ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
                 log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def holds(tmp_path_factory):
    """A job of scene X waits before its first event while ``holds / X`` exists."""
    return tmp_path_factory.mktemp("holds")


@pytest.fixture(scope="module")
def backend(cluster, holds, tmp_path_factory):
    config = BackendConfig(
        bind="tcp://127.0.0.1:0", sessions=tmp_path_factory.mktemp("sessions"), heartbeat_s=0.2,
        peer_timeout_s=30.0, cluster="auto", status_shows="all",  # an operator's view
        cluster_options={"workers": 2, "status_log_s": 0, "max_restarts": 4,
                         "ready_timeout_s": READY_S,
                         "engine_classes": {"classic": "backend.cluster.simulated:PacedEngine"}},
        # the horizon prior: these tests are about scheduling, not about loading a depth model
        engine_options={"classic": {"start_s": START_S, "frame_s": FRAME_S, "depth_model": "none",
                                    "hold_dir": str(holds)}})
    with Backend(config) as b:
        yield b


def status(address: str) -> StatusReply:
    with Client(address, name="status") as client:
        client.connect()
        client.send(Status(request_id="s"))
        while True:
            ev = client.poll(timeout=120)
            assert ev is not None, "no StatusReply"
            if isinstance(ev.msg, StatusReply):
                return ev.msg


def wait_for(predicate, timeout: float = 300.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def worker_running(backend, scene_id: str, kind: str | None = None):
    """The pool slot running a job of ``scene_id`` (only of ``kind``, e.g. a transition and
    not the scene's opening, when given), if any."""
    pool = backend._cluster
    with pool._cond:
        return next((s for s in pool.slots if s.job and s.job["scene_id"] == scene_id
                     and kind in (None, s.job["kind"])), None)


@contextlib.contextmanager
def held(holds, scene_id: str):
    """Jobs of ``scene_id`` wait before their first event until this block ends (with
    ``scene_id@k``: before their frame ``k``)."""
    flag = holds / scene_id
    flag.touch()
    try:
        yield
    finally:
        flag.unlink()


def all_idle(backend) -> bool:
    return all(s.state == "idle" for s in backend._cluster.slots)


def fly(backend, image, scene_id: str, n: int, out: dict, credits: int = 2, **kw) -> None:
    with ScriptedClient(backend.address, credits=credits, timeout_s=600, peer_timeout_s=60.0) as client:
        opened = client.open_scene(image, scene_id=scene_id)
        poses = stock_path("rotate_left", n_frames=n, median_depth=opened.scene.median_depth)
        out["poses"] = poses
        out["opened"] = opened
        out["job"] = client.transition(scene_id, poses, **kw)


def start(target, *args, **kw) -> threading.Thread:
    t = threading.Thread(target=target, args=args, kwargs=kw, daemon=True)
    t.start()
    return t


def test_two_explorers_run_on_two_workers_at_once(backend, scenes_dir):
    a, b = {}, {}
    threads = [start(fly, backend, load(scenes_dir / "09_countryside.jpg"), "two-a", 16, a),
               start(fly, backend, load(scenes_dir / "12_desert.jpg"), "two-b", 16, b)]
    both = wait_for(lambda: (r := status(backend.address)).jobs_running == 2 and r, what="two jobs")
    busy = [w for w in both.workers if w.state == "busy"]
    assert {w.scene_id for w in busy} == {"two-a", "two-b"} and len({w.name for w in busy}) == 2
    assert {w.job_kind for w in busy} == {"transition"} and both.cluster == "auto"
    assert len(both.clients) == 2 and all(c.running == 1 for c in both.clients)
    for t in threads:
        t.join(timeout=600)
    for r in (a, b):
        job = r["job"]
        assert isinstance(job.outcome, JobDone), job.outcome
        assert len(job.frames) == 16
        for sent, got in zip(r["poses"], job.poses, strict=True):
            np.testing.assert_allclose(got, sent, atol=1e-5)  # in order, none missing
    # That they ran at the same time is the status above (two workers busy with the two scenes
    # at one moment), not the clock: beside busy cores a frame can take longer than the pace.


def test_frames_stay_in_order_under_credit_and_the_worker_waits(backend, scenes_dir):
    n = 40
    with ScriptedClient(backend.address, credits=1, timeout_s=600, peer_timeout_s=60.0) as sc:
        opened = sc.open_scene(load(scenes_dir / "16_ink_lake.jpg"), scene_id="credit")
        poses = stock_path("forward", n_frames=n, median_depth=opened.scene.median_depth)
        ref, buf = codec.array_blob(poses.astype(np.float32), 0)
        sc.client.send(Transition(job_id="credit-job", scene_id="credit", poses=ref), [buf])
        indices = []

        def next_frame(timeout):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                ev = sc.client.poll(timeout=0.1)
                if ev is not None and isinstance(ev.msg, (Frame, JobDone, JobFailed)):
                    return ev.msg
            return None

        first = next_frame(60)
        assert isinstance(first, Frame)
        indices.append(first.index)
        # 1. no credit granted: nothing more arrives, and the worker stops a few frames ahead
        assert next_frame(2.0) is None
        slot = worker_running(backend, "credit")
        info = ray.get(slot.actor.info.remote(), timeout=300)
        made = info["job"]["frames"]
        # 1 sent + the server's frames_ahead + the generator's backpressure + 1 being yielded
        assert made <= 1 + backend.config.frames_ahead + backend._cluster.config.frames_ahead + 1, made
        time.sleep(1.0)
        assert ray.get(slot.actor.info.remote(), timeout=300)["job"]["frames"] == made  # it waits
        # 2. credit one by one: every frame, in order
        while True:
            sc.client.credit(1)
            msg = next_frame(60)
            if not isinstance(msg, Frame):
                break
            indices.append(msg.index)
        assert isinstance(msg, JobDone), msg
        assert indices == list(range(n))


def test_cancel_stops_the_remote_job(backend, scenes_dir):
    wait_for(lambda: all_idle(backend), what="idle workers")
    infos = ray.get([s.actor.info.remote() for s in backend._cluster.slots], timeout=300)
    done_before = sum(i["jobs_done"] for i in infos)
    with ScriptedClient(backend.address, credits=1, timeout_s=600, peer_timeout_s=60.0) as client:
        opened = client.open_scene(load(scenes_dir / "03_ancient.jpg"), scene_id="cancel")
        poses = stock_path("forward", n_frames=60, median_depth=opened.scene.median_depth)
        job = client.transition("cancel", poses, cancel_after=3)
    assert isinstance(job.outcome, JobFailed) and job.outcome.code == "cancelled"
    assert len(job.frames) <= 4

    def remote_stopped():
        infos = ray.get([s.actor.info.remote() for s in backend._cluster.slots], timeout=300)
        return all(i["job"] is None for i in infos) and infos

    infos = wait_for(remote_stopped, timeout=120, what="the remote job to stop")
    # it stopped long before its 60 frames (60 * FRAME_S = 4.8 s) and never completed
    assert sum(i["jobs_done"] for i in infos) == done_before


def test_killed_worker_fails_only_its_job_and_comes_back(backend, holds, scenes_dir):
    """Job b's worker is killed mid-job (held before its fifth frame, so the kill lands there
    however slowly a loaded machine streams), while job a runs on the other worker."""
    wait_for(lambda: all_idle(backend), what="idle workers")
    a, b = {}, {}
    ta = start(fly, backend, load(scenes_dir / "58_woodland.jpg"), "kill-a", 30, a)
    wait_for(lambda: worker_running(backend, "kill-a", "transition"), what="job a running")
    with held(holds, "kill-b@4"):
        tb = start(fly, backend, load(scenes_dir / "56_village.jpg"), "kill-b", 30, b, credits=1)
        slot = wait_for(lambda: worker_running(backend, "kill-b", "transition"), what="job b running")
        # mid-job: frames 0-3 of job b are out (the explorer has some), frame 4 is held
        wait_for(lambda: (i := ray.get(slot.actor.info.remote()))["job"] and i["job"]["frames"] >= 4,
                 what="job b streaming")
        restarts = slot.restarts
        ray.kill(slot.actor, no_restart=False)
        tb.join(timeout=600)
    ta.join(timeout=600)
    outcome = b["job"].outcome
    assert isinstance(outcome, JobFailed) and outcome.code == "worker_lost", outcome
    assert 1 <= len(b["job"].frames) <= 4
    assert isinstance(a["job"].outcome, JobDone) and len(a["job"].frames) == 30
    # Ray restarts the actor; the explorer can resubmit and it completes
    wait_for(lambda: slot.state == "idle" and slot.restarts == restarts + 1, timeout=READY_S,
             what="the restart")
    with ScriptedClient(backend.address, timeout_s=600, peer_timeout_s=60.0) as client:
        opened = client.open_scene(load(scenes_dir / "56_village.jpg"), scene_id="kill-b2")
        again = client.transition("kill-b2", stock_path("forward", 6, opened.scene.median_depth))
    assert isinstance(again.outcome, JobDone) and len(again.frames) == 6


def test_requeued_job_completes_after_a_restart(backend, holds, scenes_dir):
    """A worker killed before its job's first event: the job waits for the restart and runs.

    Both jobs are held before their first event (flag files) until the test lets them go, so
    the kill lands before job b starts and job a keeps the other worker busy meanwhile, however
    slowly a loaded machine runs them."""
    wait_for(lambda: all_idle(backend), what="idle workers")
    a, b = {}, {}
    with held(holds, "rq-a"):
        ta = start(fly, backend, load(scenes_dir / "09_countryside.jpg"), "rq-a", 8, a)
        other = wait_for(lambda: worker_running(backend, "rq-a", "transition"), what="job a running")
        with held(holds, "rq-b"):
            tb = start(fly, backend, load(scenes_dir / "12_desert.jpg"), "rq-b", 8, b)
            slot = wait_for(lambda: worker_running(backend, "rq-b", "transition"), what="job b on a worker")
            restarts, done = slot.restarts, slot.jobs_done
            ray.kill(slot.actor, no_restart=False)
            wait_for(lambda: slot.restarts == restarts + 1, what="the restart")
        tb.join(timeout=600)
        # the other worker was busy with job a, so job b waited for this worker's restart
        assert slot is not other and slot.restarts == restarts + 1, (slot.name, other.name)
        assert slot.jobs_done == done + 1, (slot.jobs_done, done)
        assert isinstance(b["job"].outcome, JobDone), b["job"].outcome
        assert len(b["job"].frames) == 8
        for sent, got in zip(b["poses"], b["job"].poses, strict=True):
            np.testing.assert_allclose(got, sent, atol=1e-5)
    ta.join(timeout=600)
    assert isinstance(a["job"].outcome, JobDone) and len(a["job"].frames) == 8


def test_scene_versions_follow_the_work(backend, scenes_dir):
    """The second job of a scene runs where its version is resident: no second put."""
    wait_for(lambda: all_idle(backend), what="idle workers")
    engine = backend.engine("classic")
    with ScriptedClient(backend.address, timeout_s=600, peer_timeout_s=60.0) as client:
        opened = client.open_scene(load(scenes_dir / "03_ancient.jpg"), scene_id="affinity")
        puts = engine.versions.puts
        first = client.transition("affinity", stock_path("rotate_right", 5, opened.scene.median_depth))
        holder = next(s for s in backend._cluster.slots if "affinity" in s.holds)
        second = client.transition("affinity", stock_path("forward", 5, opened.scene.median_depth,
                                                      start=first.poses[-1]))
        # the front door's scene (dropped once its explorer leaves) grew as the explorer's cloud did
        from protocol.identity import token_identity

        scene = backend.scenes.get(token_identity(client.client.token), "affinity").scene
        total = opened.points.count() + first.points.count() + second.points.count()
        assert len(scene.cloud) == total
    assert isinstance(first.outcome, JobDone) and isinstance(second.outcome, JobDone)
    assert engine.versions.puts == puts + 1  # the first job's copy only
    assert "affinity" in holder.holds


def test_status_command_prints_the_workers(backend):
    out = subprocess.run([sys.executable, "-m", "explorer.cli", "status", "--backend", backend.address],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "Ray cluster auto" in out.stdout and "worker-0" in out.stdout and "worker-1" in out.stdout


def test_a_job_past_the_deadline_is_reported_and_abandoned(cluster, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="backend.cluster")
    config = BackendConfig(
        bind="tcp://127.0.0.1:0", sessions=tmp_path / "s", save_clips=False, cluster="auto",
        cluster_options={"workers": 1, "cpus_per_worker": 0, "busy_deadline_s": 1.5, "status_log_s": 0.5,
                         "ready_timeout_s": READY_S,
                         "engine_classes": {"classic": "backend.cluster.simulated:SleepEngine"}},
        engine_options={"classic": {"frame_s": 0.4}})
    with Backend(config) as b, ScriptedClient(b.address, timeout_s=600, peer_timeout_s=60.0) as client:
        client.open_scene(np.full((64, 64, 3), 90, np.uint8), scene_id="late")
        t0 = time.monotonic()
        job = client.transition("late", np.tile(np.eye(4), (20, 1, 1)))  # 8 s of frames
        took = time.monotonic() - t0
        assert isinstance(job.outcome, JobFailed) and job.outcome.code == "worker_lost"
        # abandoned before its 20 frames (8 s of them), whatever the machine's load
        assert "deadline" in job.outcome.message, (job.outcome, took)
        assert 1 <= len(job.frames) < 20, (len(job.frames), took)
        logged = [r.getMessage() for r in caplog.records]
        assert any("busy for more than" in m for m in logged)
        assert any(m.startswith("status: 1 workers (1 busy), 1 jobs running, 0 queued; explorers ")
                   for m in logged), logged
        slot = b._cluster.slots[0]
        wait_for(lambda: slot.state == "idle", what="the restart")
        assert slot.restarts == 1
