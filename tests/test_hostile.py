"""The real Backend on loopback under attack, with a well-behaved canary working throughout.

At once: >= 20,000 hostile messages of 16 kinds from several connections (each must get an
Error; a frame over the message limit gets its connection dropped), a client that never
grants credit, a client flooding valid requests, and 500 silent connections. At the end every
server thread is alive, every canary request succeeded, and RSS stayed under a bound.
"""

from __future__ import annotations

import collections
import os
import threading
import time

import numpy as np
import pytest
import zmq

from backend.config import ConnectionsConfig, LimitsConfig, SchedulerConfig
from backend.server import Backend, BackendConfig
from protocol import codec
from protocol.hostile import HostileMessages
from protocol.messages import (
    Error,
    JobDone,
    Ping,
    Pong,
)
from protocol.scripted import ScriptedClient
from protocol.trajectory import stock_path
from tests.attackers import flooder, never_credits, silent_connections
from tests.helpers import next_msg, raw_dealer, scene

N_HOSTILE = 20_400
SENDERS = 3
RSS_BOUND_MB = 600  # growth of this process (server and every client) over the attack


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


@pytest.fixture
def backend(tmp_path):
    config = BackendConfig(
        bind="tcp://127.0.0.1:0", sessions=str(tmp_path / "sessions"), heartbeat_s=0.5,
        peer_timeout_s=20.0,
        scheduler=SchedulerConfig(job_slots=2, open_slots=2, max_jobs_per_client=4,
                                  credit_timeout_s=2.0),
        # no rate limit here, so every refused message is answered (test_transport covers it)
        connections=ConnectionsConfig(hello_timeout_s=1.5, max_peers=32, max_messages_per_s=1e6,
                                      max_refusals_per_s=1e6),
        limits=LimitsConfig(max_message_mb=0.5, max_image_pixels=512 * 512, max_frames=64),
    )
    with Backend(config) as b:
        yield b


class Canary(threading.Thread):
    """Opens a scene, then flies short transitions until told to stop; records every outcome."""

    def __init__(self, address: str):
        super().__init__(name="canary", daemon=True)
        self.address = address
        self.stop = threading.Event()
        self.outcomes: list = []
        self.latencies: list[float] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with ScriptedClient(self.address, timeout_s=600, credits=8) as client:
                opened = client.open_scene(scene(1), scene_id="canary")
                poses = stock_path("forward", 4, opened.scene.median_depth)
                while not self.stop.is_set():
                    t0 = time.perf_counter()
                    job = client.transition("canary", poses)
                    self.latencies.append(time.perf_counter() - t0)
                    self.outcomes.append(job.outcome)
        except BaseException as exc:  # reported by the test
            self.error = exc


def hostile_sender(address: str, batch: list, result: dict) -> None:
    """Send ``batch`` in chunks and read one Error per message."""
    ctx = zmq.Context()
    sock = raw_dealer(ctx, address)
    codes = collections.Counter()
    try:
        for start in range(0, len(batch), 400):
            chunk = batch[start : start + 400]
            for _, frames in chunk:
                sock.send_multipart(frames, copy=False)
            for _ in chunk:
                msg = next_msg(sock)
                assert isinstance(msg, Error), msg
                codes[msg.code] += 1
        result["codes"] = codes
    except BaseException as exc:
        result["error"] = exc
    finally:
        sock.close()
        ctx.term()


def oversized_frames(address: str, limit: int, n: int) -> int:
    """``n`` connections each sending one frame over the limit; returns how many got no answer."""
    ctx = zmq.Context()
    dropped = 0
    for _ in range(n):
        sock = raw_dealer(ctx, address)
        sock.setsockopt(zmq.RCVTIMEO, 300)
        sock.send_multipart([b"\x81\xa4type\xa6cancel", b"\0" * (limit + 1)])
        try:
            while True:
                msg, _ = codec.decode(sock.recv_multipart())
                if not isinstance(msg, (Ping, Pong)):
                    break  # an answer: not dropped
        except zmq.Again:
            dropped += 1
        sock.close()
    ctx.term()
    return dropped


@pytest.mark.slow
def test_hostile_clients_cannot_stop_starve_or_bloat_the_backend(backend):
    address = backend.address
    limits = backend.limits
    messages = HostileMessages(limits, seed=7).batch(N_HOSTILE)
    kinds = collections.Counter(k for k, _ in messages)
    assert len(kinds) >= 12 and len(messages) >= 20_000

    canary = Canary(address)
    canary.start()
    deadline = time.monotonic() + 30
    while not canary.outcomes and canary.error is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert canary.outcomes, canary.error
    rss0, peak = rss_mb(), [0.0]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            peak[0] = max(peak[0], rss_mb())
            time.sleep(0.05)

    threading.Thread(target=sample, daemon=True).start()

    # 500 silent connections: 400 bare TCP (no ZMTP greeting), 100 DEALERs that never say Hello
    silent_tcp, silent_ctx, silent_zmq = silent_connections(address, reconnect_ivl_ms=600_000)

    results = [dict() for _ in range(SENDERS)]
    stingy, flood = {}, {}
    threads = [threading.Thread(target=hostile_sender, args=(address, messages[i::SENDERS], results[i]))
               for i in range(SENDERS)]
    threads += [threading.Thread(target=never_credits, args=(address, stingy)),
                threading.Thread(target=flooder, args=(address, flood))]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    dropped = oversized_frames(address, limits.max_message_bytes, 20)
    for t in threads:
        t.join(timeout=600)
    attack_s = time.monotonic() - t0

    # silent connections are shut by the server (bare TCP sees EOF after the hello timeout)
    closed = 0
    for s in silent_tcp:
        s.settimeout(10)
        try:
            while s.recv(4096):
                pass
            closed += 1
        except OSError:
            closed += 1  # reset by the server
        s.close()
    for s in silent_zmq:
        s.close()
    silent_ctx.term()

    canary.stop.set()
    canary.join(timeout=60)
    sampling.set()

    # every hostile message got an Error (a frame over the limit: a drop)
    for r in results:
        assert "error" not in r, r.get("error")
    codes = sum((r["codes"] for r in results), collections.Counter())
    assert sum(codes.values()) == len(messages), codes
    assert codes["too_large"] >= kinds["png_bomb"] + kinds["jpeg_bomb"] + kinds["oversized_multipart"]
    assert dropped == 20
    assert closed == 400
    # the never-crediting client's job was cancelled and freed its slot
    assert stingy["failed"].code == "credit_timeout", stingy
    assert stingy["after_s"] < 2.0 + 20
    # the flood was bounded: a few jobs ran, the rest were refused as busy, all answered
    assert "error" not in flood, flood.get("error")
    ends = flood["ends"]
    assert ends["busy"] + ends["error:busy"] >= 200, ends
    assert ends["done"] >= 1 and ends["accepted"] <= 300 - 200, ends
    # the canary never failed, and the server lost no thread
    assert canary.error is None, canary.error
    assert len(canary.outcomes) >= 3
    assert all(isinstance(o, JobDone) for o in canary.outcomes), canary.outcomes
    assert all(backend.threads_alive().values()), backend.threads_alive()
    assert backend.endpoint.stats.io_faults == 0
    assert backend.endpoint.stats.connections_shut >= 100
    growth = peak[0] - rss0
    print(f"\n{len(messages)} hostile messages of {len(kinds)} kinds in {attack_s:.1f} s; "
          f"codes {dict(codes)}; flood {dict(ends)}; canary {len(canary.outcomes)} jobs, "
          f"p50 {np.median(canary.latencies) * 1e3:.0f} ms; rss +{growth:.0f} MB; "
          f"fds {len(os.listdir('/proc/self/fd'))}")
    assert growth < RSS_BOUND_MB, growth
