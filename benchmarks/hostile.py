"""The canary's request latency with hostile clients running against `dreamjourney serve`,
side by side with the canary alone, in one run.

The backend runs as its own process (as deployed). The canary flies short transitions
(64x64, 4 frames) and times each request. Phases alternate: alone, under attack, alone.
Under attack, other processes send refused messages of every kind (bit flips and splices of
every message type, invalid UTF-8, deep nesting, image bombs, oversized multiparts,
non-finite numbers, wrong tuple lengths, ...) as fast as the backend answers them, a client
never grants frame credit, a client floods valid transitions, and 500 connections stay silent.

Prints one JSON object as its last line: canary p50/p99 alone and under attack,
``canary_p99_ratio`` (goal <= 1.5), ``rss_growth_mb`` of the backend process (goal <= 200),
and how many hostile messages were answered.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONFIG = """
bind = "{bind}"
sessions = "{sessions}"
heartbeat_s = 0.5
peer_timeout_s = 20.0
[scheduler]
job_slots = 2
open_slots = 2
credit_timeout_s = 2.0
[connections]
hello_timeout_s = 1.5
[limits]
max_message_mb = 0.5
max_image_pixels = 262144
max_frames = 64
"""


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- hostile processes --------------------------------------------------------------------


def hostile_sender(address: str, seed: int, stop, sent) -> None:
    import zmq

    from protocol.hostile import HostileMessages
    from protocol.limits import Limits
    from tests.test_hostile import next_msg, raw_dealer

    batch = HostileMessages(Limits(max_message_bytes=512 << 10, max_image_pixels=262144),
                            seed=seed).batch(4000)
    ctx = zmq.Context()
    sock = raw_dealer(ctx, address)
    i = 0
    while not stop.is_set():
        chunk = [batch[(i + k) % len(batch)][1] for k in range(200)]
        i += 200
        for frames in chunk:
            sock.send_multipart(frames, copy=False)
        for _ in chunk:
            next_msg(sock)
        with sent.get_lock():
            sent.value += len(chunk)
    sock.close()
    ctx.term()


def nuisances(address: str, stop) -> None:
    """A never-crediting client, a flooding client and 500 silent connections, repeated."""
    import threading

    import zmq

    from tests.test_hostile import flooder, never_credits

    port = int(address.rsplit(":", 1)[1])
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(400)]
    ctx = zmq.Context()
    dealers = []
    for _ in range(100):
        d = ctx.socket(zmq.DEALER)
        d.setsockopt(zmq.LINGER, 0)
        d.connect(address)
        dealers.append(d)
    n = 0
    while not stop.is_set():
        threads = [threading.Thread(target=never_credits, args=(address, {}), kwargs={"scene_id": f"st{n}"}),
                   threading.Thread(target=flooder, args=(address, {}), kwargs={"scene_id": f"fl{n}"})]
        n += 1
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for s in silent:
        s.close()
    for d in dealers:
        d.close()
    ctx.term()


# -- canary -------------------------------------------------------------------------------


def canary_latencies(client, poses, count: int) -> list[float]:
    from protocol.messages import JobDone

    out = []
    for _ in range(count):
        t0 = time.perf_counter()
        job = client.transition("canary", poses)
        assert isinstance(job.outcome, JobDone), job.outcome
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=80, help="canary requests per phase")
    parser.add_argument("--senders", type=int, default=2, help="hostile sender processes")
    args = parser.parse_args()
    from protocol.scripted import ScriptedClient
    from protocol.trajectory import preset
    from tests.test_hostile import scene

    tmp = Path(tempfile.mkdtemp(prefix="dj-hostile-"))
    address = f"tcp://127.0.0.1:{free_port()}"
    (tmp / "backend.toml").write_text(CONFIG.format(bind=address, sessions=tmp / "sessions"))
    exe = Path(sys.executable).with_name("dreamjourney")
    server = subprocess.Popen([str(exe), "serve", "--config", str(tmp / "backend.toml")],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert "listening" in server.stdout.readline()
    fork = mp.get_context("fork")
    try:
        stop, sent = fork.Event(), fork.Value("q", 0)
        with ScriptedClient(address, credits=8) as client:
            opened = client.open_scene(scene(1), scene_id="canary")
            poses = preset("forward", 4, opened.scene.median_depth)
            canary_latencies(client, poses, 10)  # warm up
            alone = canary_latencies(client, poses, args.requests // 2)
            rss0 = rss_mb(server.pid)
            procs = [fork.Process(target=hostile_sender, args=(address, s, stop, sent))
                     for s in range(args.senders)]
            procs.append(fork.Process(target=nuisances, args=(address, stop)))
            for p in procs:
                p.start()
            time.sleep(2.0)  # the attack is in full swing
            t0 = time.monotonic()
            attacked, peak = [], rss0
            for _ in range(args.requests):
                attacked += canary_latencies(client, poses, 1)
                peak = max(peak, rss_mb(server.pid))
            attack_s = time.monotonic() - t0
            stop.set()
            for p in procs:
                p.join(timeout=60)
            alone += canary_latencies(client, poses, args.requests - args.requests // 2)
            alive = server.poll() is None
    finally:
        server.terminate()
        server.wait(timeout=30)
    p50a, p99a = np.percentile(alone, [50, 99]) * 1e3
    p50h, p99h = np.percentile(attacked, [50, 99]) * 1e3
    result = {
        "canary_requests_alone": len(alone),
        "canary_requests_attacked": len(attacked),
        "canary_p50_ms_alone": round(float(p50a), 2),
        "canary_p99_ms_alone": round(float(p99a), 2),
        "canary_p50_ms_attacked": round(float(p50h), 2),
        "canary_p99_ms_attacked": round(float(p99h), 2),
        "hostile_messages_answered": int(sent.value),
        "hostile_messages_per_s": round(sent.value / max(attack_s, 1e-9), 1),
        "backend_alive": alive,
        "cpu_cores": os.cpu_count(),
        "canary_p99_ratio": round(float(p99h / p99a), 3),
        "rss_growth_mb": round(peak - rss0, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
