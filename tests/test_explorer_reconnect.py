"""A remote backend that goes away and comes back at the same address: the explorer's link
reconnects on its own and resumes the scene from the session folder (real sockets, real
backend, no window)."""

from __future__ import annotations

import socket
import time

import numpy as np
from PIL import Image

from backend.server import Backend, BackendConfig
from explorer.backend_process import BackendLink
from explorer.player import ClipPlayer
from explorer.session import ExplorerSession
from explorer.settings import ExplorerSettings

SCENE = "/work/shared/scenes/03_ancient.jpg"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pump_until(link, session, predicate, timeout=60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        link.watch(session)
        session.pump()
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_remote_backend_lost_and_back_resumes_the_scene(tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"
    config = BackendConfig(bind=address, sessions=tmp_path, heartbeat_s=0.3, peer_timeout_s=2.0)
    settings = ExplorerSettings.load()
    settings.network.heartbeat_s, settings.network.peer_timeout_s = 0.3, 1.5
    settings.network.reconnect_s = 0.3
    with Image.open(SCENE) as im:
        photo = np.asarray(im.convert("RGB").resize((96, 96)))
    points: list[int] = []
    first = Backend(config).start()
    link = BackendLink(settings, address)
    try:
        session = ExplorerSession(link.client, ClipPlayer(), lambda xyz, rgb, r: points.append(len(xyz)),
                                  on_truncate=lambda n: points.clear())
        session.open_scene(photo, scene_id="far-away-scene")
        assert pump_until(link, session, lambda: session.scene and session.opening_progress() is None)
        loaded = sum(points)
        first.stop()  # the remote backend goes away ...
        assert pump_until(link, session, lambda: session.peer_gone, 20)
        second = Backend(config).start()  # ... and comes back at the same address
        try:
            assert pump_until(link, session, lambda: session.scene.resumed
                              and session.opening_progress() is None and sum(points) == loaded)
        finally:
            second.stop()
        assert link.reconnects == 1 and loaded > 0
    finally:
        link.close()
