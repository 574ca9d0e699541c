"""Scale-out: 16 explorers against the front door with 1, 2, 4 and 8 Ray engine workers.

The engine is simulated (backend.cluster.simulated.SleepEngine): each frame costs a fixed
sleep, as a GPU's time would, so the figures measure scheduling and streaming, not this
machine's cores. Each explorer opens a scene, then submits transitions one after another.

Also measured, side by side: the per-frame latency the front door adds when the engine runs
on a Ray worker instead of in-process (one explorer, one worker; a frame's latency is its
arrival at the explorer minus the wall-clock time the engine stamped into its pixels).

Prints one JSON object as its last line: jobs_per_s per worker count, efficiency_8 =
jobs_per_s(8) / (8 * jobs_per_s(1)) (goal >= 0.85), and latency percentiles in ms with
added_latency_p99_ms = p99(cluster) - p99(in-process) (goal <= 5 ms).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import msgspec
import numpy as np

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # a local instance on loopback
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray  # noqa: E402

from backend.cluster.simulated import SleepEngine, read_stamp  # noqa: E402
from backend.server import Backend, BackendConfig  # noqa: E402
from protocol import codec  # noqa: E402
from protocol.messages import Frame, JobDone, JobFailed, Transition  # noqa: E402
from protocol.scripted import ScriptedClient  # noqa: E402

SIZE = 64


def make_backend(workers: int, frame_s: float, sessions: str) -> Backend:
    """The front door on loopback; ``workers=0`` runs the engine in-process."""
    options = {"classic": {"frame_s": frame_s, "size": SIZE}}
    config = BackendConfig(bind="tcp://127.0.0.1:0", sessions=str(sessions), save_clips=False,
                           cpu_jobs=max(1, workers))
    if workers:  # the options are SleepEngine's, checked against it
        config = msgspec.structs.replace(config, engine_options=options, cluster="auto", cluster_options={
            "workers": workers, "cpus_per_worker": 0.5, "status_log_s": 0,
            "engine_classes": {"classic": "backend.cluster.simulated:SleepEngine"}})
    backend = Backend(config)
    if not workers:
        backend._engines["classic"] = SleepEngine(frame_s=frame_s, size=SIZE)
    return backend.start()


def run_jobs(client: ScriptedClient, scene_id: str, jobs: int, frames: int, tag: str) -> list[float]:
    """Submit ``jobs`` transitions one after another; each frame's latency in seconds."""
    poses = np.tile(np.eye(4, dtype=np.float32), (frames, 1, 1))
    poses[:, 2, 3] = np.linspace(0, 0.5, frames)
    ref, buf = codec.array_blob(poses, 0)
    latencies = []
    for j in range(jobs):
        job_id = f"{tag}-{j}"
        client.client.send(Transition(job_id=job_id, scene_id=scene_id, poses=ref), [buf])
        while True:
            ev = client.client.poll(timeout=120)
            if ev is None:
                raise TimeoutError(f"{job_id}: no answer in 120 s")
            msg = getattr(ev, "msg", None)
            if isinstance(msg, Frame) and msg.job_id == job_id:
                arrived = time.time()
                latencies.append(arrived - read_stamp(codec.decode_image(msg.image, ev.blobs)))
                client.client.credit(1)
            elif isinstance(msg, (JobDone, JobFailed)) and msg.job_id == job_id:
                if isinstance(msg, JobFailed):
                    raise RuntimeError(f"{job_id} failed: {msg.code} {msg.message}")
                break
    return latencies


def throughput(workers: int, explorers: int, jobs: int, frames: int, frame_s: float) -> float:
    """Jobs per second with ``explorers`` explorers submitting ``jobs`` transitions each."""
    image = np.full((SIZE, SIZE, 3), 80, np.uint8)
    with tempfile.TemporaryDirectory() as sessions:
        backend = make_backend(workers, frame_s, sessions)
        try:
            clients = [ScriptedClient(backend.address, credits=4, timeout_s=120) for _ in range(explorers)]
            for i, c in enumerate(clients):
                c.open_scene(image, scene_id=f"s{i}")
            go = threading.Barrier(explorers + 1)
            errors = []

            def explorer(i: int) -> None:
                go.wait()
                try:
                    run_jobs(clients[i], f"s{i}", jobs, frames, f"e{i}")
                except Exception as exc:  # reported after the run
                    errors.append(exc)

            threads = [threading.Thread(target=explorer, args=(i,)) for i in range(explorers)]
            for t in threads:
                t.start()
            go.wait()
            t0 = time.perf_counter()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - t0
            for c in clients:
                c.close()
            if errors:
                raise errors[0]
        finally:
            backend.stop()
    return explorers * jobs / elapsed


def latency(workers: int, jobs: int, frames: int, frame_s: float) -> np.ndarray:
    """Per-frame latencies (ms) of one explorer's transitions."""
    with tempfile.TemporaryDirectory() as sessions:
        backend = make_backend(workers, frame_s, sessions)
        try:
            with ScriptedClient(backend.address, credits=4, timeout_s=120) as client:
                client.open_scene(np.full((SIZE, SIZE, 3), 80, np.uint8), scene_id="lat")
                run_jobs(client, "lat", 2, frames, "warm")  # first calls pay for imports
                return np.asarray(run_jobs(client, "lat", jobs, frames, "lat")) * 1e3
        finally:
            backend.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--explorers", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=4, help="transitions per explorer")
    parser.add_argument("--frames", type=int, default=8, help="frames per transition")
    parser.add_argument("--frame-s", type=float, default=0.05, help="simulated GPU seconds per frame")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--latency-jobs", type=int, default=50)
    args = parser.parse_args()
    ray.init(num_cpus=max(args.workers), include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False, configure_logging=False)
    try:
        # 1. latency per frame: in-process engine vs one Ray worker, same engine, same load
        local = latency(0, args.latency_jobs, args.frames, args.frame_s)
        remote = latency(1, args.latency_jobs, args.frames, args.frame_s)
        # 2. throughput per worker count
        rates = {}
        for n in args.workers:
            rates[n] = throughput(n, args.explorers, args.jobs, args.frames, args.frame_s)
            print(f"{n} workers: {rates[n]:.2f} jobs/s", file=sys.stderr, flush=True)
    finally:
        ray.shutdown()
    job_s = args.frames * args.frame_s
    result = {
        "explorers": args.explorers,
        "jobs_per_explorer": args.jobs,
        "frames_per_job": args.frames,
        "frame_s": args.frame_s,
        "ideal_jobs_per_s_per_worker": round(1 / job_s, 3),
        "jobs_per_s": {str(n): round(r, 3) for n, r in rates.items()},
        "efficiency_8": round(rates[8] / (8 * rates[1]), 3) if 8 in rates and 1 in rates else None,
        "latency_inprocess_p50_ms": round(float(np.percentile(local, 50)), 3),
        "latency_inprocess_p99_ms": round(float(np.percentile(local, 99)), 3),
        "latency_cluster_p50_ms": round(float(np.percentile(remote, 50)), 3),
        "latency_cluster_p99_ms": round(float(np.percentile(remote, 99)), 3),
        "added_latency_p50_ms": round(float(np.percentile(remote, 50) - np.percentile(local, 50)), 3),
        "added_latency_p99_ms": round(float(np.percentile(remote, 99) - np.percentile(local, 99)), 3),
        "frames_measured": int(len(local)),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
