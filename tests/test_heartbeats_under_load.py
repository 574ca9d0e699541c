"""Heartbeats keep their time while an engine saturates the CPU and holds the GIL.

The engine here does what the classic engine does at its worst: compute threads on every
core (calls that release the GIL, as its compiled splatting and OpenCV do) and, on the job's
own thread, a C call that holds the GIL for a second (the point store's ``np.unique`` on a
million distinct keys holds it for about half a second; here the regex engine, which never
releases it, makes the hold the same length on any machine). A thread of this process
measures how late it wakes (it shares the GIL with the engine), so the test knows the GIL
really was held; meanwhile the backend's pings, stamped by the backend when it sends them,
must keep their interval: its network endpoint runs in a process of its own.
"""

from __future__ import annotations

import os
import re
import threading
import time
import zlib
from collections.abc import Iterator

import numpy as np
import pytest
import zmq

from backend.engines.base import Engine, FrameOut, OpenRequest, Scene
from backend.geometry.cloud import PointCloud
from backend.geometry.store import PointStore
from backend.server import Backend, BackendConfig
from protocol import codec
from protocol.messages import PROTOCOL_VERSION, Hello, JobDone, Ping, Pong
from protocol.scripted import ScriptedClient
from tests.helpers import scene

HEARTBEAT_S = 0.25
GIL_HOLD = (re.compile(r"(a+)+b"), "a" * 25)
"""A match that backtracks for about a second, holding the GIL throughout."""


class HogEngine(Engine):
    """Opens a tiny scene; its dynamics saturate every core and hold the GIL per frame."""

    name = "classic"

    def open_scene(self, request: OpenRequest) -> tuple[Scene, PointCloud]:
        h, w = request.image.shape[:2]
        ys, xs = np.mgrid[0:h, 0:w]
        cloud = PointCloud(np.stack([xs.ravel(), ys.ravel(), np.ones(h * w)], 1).astype(np.float32),
                           request.image.reshape(-1, 3), np.full(h * w, 0.01, np.float32))
        store = PointStore()
        store.append(cloud)
        K = np.array([[w, 0, w / 2], [0, w, h / 2], [0, 0, 1.0]])
        return Scene(request.scene_id, request.image, K, store, 1.0), cloud

    def resume_scene(self, scene_id, sessions):
        raise NotImplementedError

    def transition(self, scene, request):
        raise NotImplementedError

    def dynamics(self, scene: Scene, request) -> Iterator[FrameOut]:
        stop = threading.Event()

        def burn() -> None:  # releases the GIL: a compute thread on a core
            data = os.urandom(1 << 20)
            while not stop.is_set():
                zlib.compress(data, 6)

        burners = [threading.Thread(target=burn) for _ in range(os.cpu_count() or 2)]
        for t in burners:
            t.start()
        try:
            for i in range(request.num_frames):
                GIL_HOLD[0].match(GIL_HOLD[1])  # holds the GIL
                yield FrameOut(i, scene.image, request.pose)
        finally:
            stop.set()
            for t in burners:
                t.join()


class HogBackend(Backend):
    def engine(self, name=None) -> Engine:
        return self._hog

    _hog = HogEngine()


@pytest.mark.slow  # seconds of a GIL-holding engine on a real backend, by design
def test_pings_keep_time_while_the_engine_holds_the_gil(tmp_path):
    config = BackendConfig(bind="tcp://127.0.0.1:0", sessions=str(tmp_path / "s"),
                           heartbeat_s=HEARTBEAT_S, peer_timeout_s=60.0, save_clips=False)
    stamps, late, done = [], [], threading.Event()

    def listen(address: str) -> None:  # the pings' send times, as the backend stamped them
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(address)
        sock.send_multipart(codec.encode(Hello(protocol_version=PROTOCOL_VERSION)))
        while not done.is_set():
            if sock.poll(50):
                msg, _ = codec.decode(sock.recv_multipart())
                if isinstance(msg, Ping):
                    stamps.append(msg.sent_at)
                    sock.send_multipart(codec.encode(Pong(seq=msg.seq, sent_at=msg.sent_at)))
        sock.close()
        ctx.term()

    def sleeper() -> None:  # how long this process's threads wait for the GIL
        while not done.is_set():
            t0 = time.monotonic()
            time.sleep(0.005)
            late.append(time.monotonic() - t0 - 0.005)

    with HogBackend(config) as backend, ScriptedClient(backend.address, timeout_s=600) as client:
        threads = [threading.Thread(target=listen, args=(backend.address,)),
                   threading.Thread(target=sleeper)]
        for t in threads:
            t.start()
        try:
            client.open_scene(scene(1, 32), scene_id="hog")
            while len(stamps) < 2:  # the listener is welcomed and pinged
                time.sleep(0.05)
            first = len(stamps)
            job = client.dynamics("hog", np.eye(4), num_frames=4)
            assert isinstance(job.outcome, JobDone), job.outcome
            last = len(stamps)
        finally:
            done.set()
            for t in threads:
                t.join()
    held = max(late)
    gaps = np.diff(stamps[first - 1:last + 1])
    print(f"\nthe GIL was held up to {held:.2f} s; ping intervals during the job: max "
          f"{gaps.max():.2f} s, median {np.median(gaps):.2f} s over {len(gaps)}")
    assert held > 3 * HEARTBEAT_S, "the engine never held the GIL long: the test proves nothing"
    assert gaps.max() < 3 * HEARTBEAT_S + 0.25, gaps
