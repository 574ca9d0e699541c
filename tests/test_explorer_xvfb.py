"""End to end: the explorer in a real X window (Xvfb), driven by xdotool key events, against a
test backend on a real socket. Holding W flies forward, Enter sends the flown path, R then R
records an MP4."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from protocol.camera import intrinsics
from protocol.codec import array_blob, k_list, pose_list, read_array
from protocol.messages import OpenScene, PointsDelta, SceneOpened, Transition
from protocol.transport import Incoming, ServerEndpoint

pytestmark = [pytest.mark.gl, pytest.mark.slow]
SCENE = "/work/shared/scenes/03_ancient.jpg"
ROOT = Path(__file__).resolve().parents[1]


class SceneServer:
    """Answers OpenScene with a flat cloud at depth 4 and keeps every Transition it gets."""

    def __init__(self):
        self.endpoint = ServerEndpoint("tcp://127.0.0.1:*", heartbeat_s=0.5, peer_timeout_s=5.0)
        self.address = self.endpoint.address
        self.transitions: list[np.ndarray] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            ev = self.endpoint.poll(0.05)
            if not isinstance(ev, Incoming):
                continue
            if isinstance(ev.msg, OpenScene):
                self._open(ev.peer, ev.msg)
            elif isinstance(ev.msg, Transition):
                self.transitions.append(read_array(ev.msg.poses, ev.blobs).copy())

    def _open(self, peer: bytes, msg: OpenScene) -> None:
        w = h = 64
        K = intrinsics(w, h, 60.0)
        self.endpoint.send(peer, SceneOpened(
            request_id=msg.request_id, scene_id=msg.scene_id, engine="test", width=w, height=h,
            K=k_list(K), pose=pose_list(np.eye(4)), median_depth=4.0, num_points=w * h))
        u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
        xyz = np.stack([(u - 32) / K[0, 0] * 4, (v - 32) / K[1, 1] * 4, np.full_like(u, 4.0)], -1)
        rgb = np.zeros((w * h, 3), np.uint8)
        rgb[:, 1] = 220
        xr, xa = array_blob(xyz.reshape(-1, 3).astype(np.float32), 0)
        cr, ca = array_blob(rgb, 1)
        rr, ra = array_blob(np.full(w * h, 0.1, np.float32), 2)
        self.endpoint.send(peer, PointsDelta(scene_id=msg.scene_id, chunk=0, last=True, xyz=xr,
                                             rgb=cr, radius=rr, total_points=w * h), [xa, ca, ra])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.endpoint.close()


@pytest.fixture()
def display():
    if not (shutil.which("Xvfb") and shutil.which("xdotool")):
        pytest.skip("needs Xvfb and xdotool (make setup installs them)")
    num = 90 + os.getpid() % 500
    proc = subprocess.Popen(["Xvfb", f":{num}", "-screen", "0", "640x480x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = dict(os.environ, DISPLAY=f":{num}")
    for _ in range(100):
        if subprocess.run(["xdotool", "getmouselocation"], env=env,
                          capture_output=True).returncode == 0:
            break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.skip("Xvfb did not start")
    yield env
    proc.terminate()
    proc.wait(5)


def xdo(env, *args) -> str:
    out = subprocess.run(["xdotool", *args], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_window_fly_commit_and_record(display, tmp_path):
    server = SceneServer()
    record = tmp_path / "rec.mp4"
    app = subprocess.Popen(
        [sys.executable, "-m", "explorer.cli", "explore", SCENE, "--backend", server.address,
         "--record", str(record), "--size", "320x240"],
        env=display, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wid = xdo(display, "search", "--sync", "--onlyvisible", "--name", "DreamJourney")
        wid = wid.splitlines()[0]
        xdo(display, "mousemove", "--window", wid, "160", "120")
        xdo(display, "windowfocus", "--sync", wid)
        time.sleep(1.5)  # the scene opens and loads
        xdo(display, "keydown", "w")
        time.sleep(1.0)
        xdo(display, "keyup", "w")
        time.sleep(0.3)
        xdo(display, "key", "Return")
        t0 = time.monotonic()
        xdo(display, "key", "r")
        time.sleep(1.5)
        xdo(display, "key", "r")
        held = time.monotonic() - t0
        deadline = time.time() + 10
        while not server.transitions and time.time() < deadline:
            time.sleep(0.05)
        xdo(display, "key", "Escape")
        out, _ = app.communicate(timeout=30)
    finally:
        if app.poll() is None:
            app.kill()
        server.close()
    assert app.returncode == 0, out
    # Enter sent the flown path: from the start pose, straight ahead (+z), evenly resampled.
    (poses,) = server.transitions
    assert poses.shape[1:] == (4, 4) and len(poses) >= 2
    np.testing.assert_allclose(poses[0], np.eye(4), atol=1e-5)
    forward = poses[-1][:3, 3]
    assert forward[2] > 0.3 and abs(forward[0]) < 1e-4 and abs(forward[1]) < 1e-4
    # R then R wrote an MP4 with the frames the app says, at the configured rate.
    import av

    written = int(re.search(r"recorded (\d+) frames", out).group(1))
    with av.open(str(record)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        fps = float(stream.average_rate)
    assert fps == pytest.approx(30.0)
    assert len(frames) == written
    assert 0.5 * 30 <= written <= (held + 0.5) * 30
    assert frames[0].shape == (240, 320, 3)
    assert frames[-1][100:140, 140:180, 1].mean() > 150  # the green cloud, as the window showed
