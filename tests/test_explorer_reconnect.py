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


def test_a_later_explorer_resumes_its_own_scene_by_its_saved_token(tmp_path):
    """A fresh link (a new ``explore --resume`` run) presents the token the first one saved
    (0600) and resumes its scene; one with another identity is refused. The backend restarts
    in between, so ownership comes from the session folder."""
    address = f"tcp://127.0.0.1:{free_port()}"
    config = BackendConfig(bind=address, sessions=tmp_path / "sessions")
    settings = ExplorerSettings.load()
    settings.network.identity_file = str(tmp_path / "config" / "identity")
    photo = np.zeros((64, 64, 3), np.uint8)
    photo[:, :32] = 200

    def open_with(settings, **kw) -> ExplorerSession:
        link = BackendLink(settings, address)
        links.append(link)
        session = ExplorerSession(link.client, ClipPlayer(), lambda *a: None)
        session.open_scene(photo if not kw else None, scene_id="mine", **kw)
        pump_until(link, session, lambda: session.scene or session.errors, 30)
        return session

    links: list[BackendLink] = []
    with Backend(config):
        first = open_with(settings)
        assert first.scene is not None and not first.scene.resumed
    saved = tmp_path / "config" / "identity"
    assert saved.stat().st_mode & 0o777 == 0o600
    assert saved.read_text().strip() == links[0].token
    with Backend(config):
        again = open_with(settings, resume=True)
        assert again.scene is not None and again.scene.resumed
        other = ExplorerSettings.load()
        other.network.identity_file = str(tmp_path / "other" / "identity")
        stranger = open_with(other, resume=True)
        assert stranger.scene is None and "no saved session 'mine'" in " ".join(stranger.errors)
    for link in links:
        link.close()
