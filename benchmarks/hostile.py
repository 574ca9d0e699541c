"""The canary's request latency with hostile clients running against `dreamjourney serve`,
side by side with the canary alone, in one run.

The backend runs as its own process (as deployed). The canary flies short transitions
(64x64, 4 frames) and times each request.
Phases alternate in rounds (alone, under attack, ...), so a shared machine's drift hits both
alike. Under attack, other processes send refused messages of every kind (bit flips and splices of
every message type, invalid UTF-8, deep nesting, image bombs, oversized multiparts,
non-finite numbers, wrong tuple lengths, ...) as fast as the backend answers them (senders)
or at a fixed rate without reading answers (sprayers), each reconnecting at once when shut
out; a client never grants frame credit, a client floods valid transitions, and 500
connections stay silent.

Prints one JSON object as its last line: canary p50/p99 alone and under attack,
``canary_p99_ratio`` (goal <= 1.5), ``rss_growth_mb`` of the backend process (goal <= 200),
and how many hostile messages were answered with an Error or dropped (a sender over
``max_messages_per_s`` or ``max_refused_per_s`` is shut out; it reconnects and goes on, as an
attacker would, and waits for admission like any newcomer).
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


def hostile_batch(seed: int) -> list:
    """4000 refused messages of every kind (as ``HostileMessages.batch`` makes them)."""
    from protocol.hostile import HostileMessages
    from protocol.limits import Limits

    return HostileMessages(Limits(max_message_bytes=512 << 10, max_image_pixels=262144),
                           seed=seed).batch(4000)


def connect(ctx, address: str):
    """A DEALER that said Hello and was welcomed, or None (refused or timed out)."""
    import zmq

    from tests.test_hostile import raw_dealer

    try:
        return raw_dealer(ctx, address)
    except (AssertionError, zmq.Again):
        return None


def hostile_sender(address: str, seed: int, stop, active, sent, dropped) -> None:
    """Refused messages in batches of 200, as fast as answered; reconnects when shut out."""
    import zmq

    from protocol.messages import Error
    from tests.test_hostile import next_msg

    batch = hostile_batch(seed)
    ctx = zmq.Context()
    sock, i = None, 0
    while not stop.is_set():
        if not active.wait(0.1):
            continue
        if sock is None and (sock := connect(ctx, address)) is None:
            continue
            sock.setsockopt(zmq.RCVTIMEO, 1000)
        chunk = [batch[(i + k) % len(batch)][1] for k in range(200)]
        i += 200
        for frames in chunk:
            sock.send_multipart(frames, copy=False)
        got = 0
        try:
            while got < len(chunk):
                msg = next_msg(sock)
                got += 1
                if isinstance(msg, Error) and "per second" in msg.message:
                    raise zmq.Again()  # shut out: the rest of the batch is dropped
        except zmq.Again:
            sock.close()
            sock = None
            with dropped.get_lock():
                dropped.value += len(chunk) - got
        with sent.get_lock():
            sent.value += got
    if sock is not None:
        sock.close()
    ctx.term()


def hostile_sprayer(address: str, seed: int, rate: float, stop, active, sprayed) -> None:
    """Refused messages at ``rate`` per second without waiting for answers (open loop); reads
    what comes back only to notice a shut-out, then reconnects at once."""
    import zmq

    from protocol import codec
    from protocol.messages import Error

    batch = hostile_batch(seed)
    ctx = zmq.Context()
    sock, i, t_next = None, 0, time.monotonic()
    while not stop.is_set():
        if not active.wait(0.1):
            continue
        if sock is None and (sock := connect(ctx, address)) is None:
            continue
            sock.setsockopt(zmq.SNDTIMEO, 0)
        t_next = max(t_next + 0.01, time.monotonic() - 0.1)
        time.sleep(max(0.0, t_next - time.monotonic()))
        shut, n = False, 0
        for _ in range(int(rate * 0.01)):  # one 10 ms slice of the rate
            try:
                sock.send_multipart(batch[i % len(batch)][1], copy=False)
                n += 1
            except zmq.Again:
                break
            i += 1
        while not shut:
            try:
                msg, _ = codec.decode(sock.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                break
            except Exception:
                continue
            shut = isinstance(msg, Error) and "per second" in msg.message
        with sprayed.get_lock():
            sprayed.value += n
        if shut:
            sock.close()
            sock = None
    if sock is not None:
        sock.close()
    ctx.term()


def nuisances(address: str, stop, active) -> None:
    """500 silent connections, and in each attack round a never-crediting client and a client
    flooding 300 valid transitions."""
    import threading

    from tests.test_hostile import flooder, never_credits, silent_connections

    silent, ctx, dealers = silent_connections(address)
    n = 0
    while not stop.is_set():  # one of each per attack round
        if not active.wait(0.1):
            continue
        threads = [threading.Thread(target=never_credits, args=(address, {}), kwargs={"scene_id": f"st{n}"}),
                   threading.Thread(target=flooder, args=(address, {}), kwargs={"scene_id": f"fl{n}"})]
        n += 1
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        while active.is_set() and not stop.is_set():
            time.sleep(0.05)
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
    parser.add_argument("--requests", type=int, default=240, help="canary requests per phase")
    parser.add_argument("--senders", type=int, default=2, help="hostile sender processes")
    parser.add_argument("--sprayers", type=int, default=1, help="open-loop hostile processes")
    parser.add_argument("--spray-rate", type=float, default=5000.0, help="messages/s per sprayer")
    parser.add_argument("--rounds", type=int, default=4, help="alternating alone/attacked rounds")
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
        stop, active, sent, dropped = fork.Event(), fork.Event(), fork.Value("q", 0), fork.Value("q", 0)
        sprayed = fork.Value("q", 0)
        procs = [fork.Process(target=hostile_sender, args=(address, s, stop, active, sent, dropped))
                 for s in range(args.senders)]
        procs += [fork.Process(target=hostile_sprayer,
                               args=(address, 100 + s, args.spray_rate, stop, active, sprayed))
                  for s in range(args.sprayers)]
        procs.append(fork.Process(target=nuisances, args=(address, stop, active)))
        for p in procs:  # started before any client thread exists here (fork)
            p.start()
        with ScriptedClient(address, credits=8) as client:
            opened = client.open_scene(scene(1), scene_id="canary")
            poses = preset("forward", 4, opened.scene.median_depth)
            canary_latencies(client, poses, 10)  # warm up
            alone, attacked, rss0, peak, attack_s = [], [], rss_mb(server.pid), 0.0, 0.0
            per_round = max(1, args.requests // args.rounds)
            for _ in range(args.rounds):
                alone += canary_latencies(client, poses, per_round)
                active.set()
                time.sleep(1.5)  # the attack is in full swing
                t0 = time.monotonic()
                for _ in range(per_round):
                    attacked += canary_latencies(client, poses, 1)
                    peak = max(peak, rss_mb(server.pid))
                attack_s += time.monotonic() - t0
                active.clear()
                time.sleep(1.0)  # the attack's last batches drain
            stop.set()
            for p in procs:
                p.join(timeout=60)
            alive = server.poll() is None
    finally:
        stop.set()
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
        "hostile_messages_dropped": int(dropped.value),
        "hostile_messages_per_s": round(sent.value / max(attack_s, 1e-9), 1),
        "sprayed_messages_per_s": round(sprayed.value / max(attack_s, 1e-9), 1),
        "backend_alive": alive,
        "cpu_cores": os.cpu_count(),
        "canary_p50_ratio": round(float(p50h / p50a), 3),
        "canary_p99_ratio": round(float(p99h / p99a), 3),
        "rss_growth_mb": round(max(peak - rss0, 0.0), 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
