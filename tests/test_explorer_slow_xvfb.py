"""A session that survives a slow machine, and resume as you left it: `dreamjourney explore`
in a real X window (Xvfb), keys from xdotool on the wall clock, the screen read back from the
X server (ffmpeg x11grab). Waits are on log lines and on the screen, with generous deadlines.

- at about 1 fps a clip ends on its last pose with the cloud grown;
- stopping a recording whose encoder is seconds behind changes the screen within 1 s, keys
  act meanwhile, and the MP4 has the recording's duration (PyAV and ffprobe);
- with both cores saturated beside a real backend for 60 s, no "backend gone", and the
  dynamics loop plays;
- ``--resume`` opens with the photo's aspect, Home at the photo's pose; a missing session or
  a photo under 64 px is one ``error:`` line and exit code 2.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import test_explorer_xvfb as xvfb
from PIL import Image

from explorer.testing import PhotoServer

pytestmark = [pytest.mark.gl]
LOG_DEADLINE = 600.0
display = xvfb.display  # the Xvfb fixture
App, photo_psnr, wait_for, xdo = xvfb.App, xvfb.photo_psnr, xvfb.wait_for, xvfb.xdo


def gradient_photo(path: Path, w: int, h: int) -> np.ndarray:
    """A photo with nothing near white (every channel <= 200) and texture to see motion."""
    u, v = np.meshgrid(np.linspace(0, 1, w), np.linspace(0, 1, h))
    checker = ((np.arange(w)[None] // 16 + np.arange(h)[:, None] // 16) % 2) * 30
    rgb = np.stack([40 + 130 * u, 40 + 120 * v, 150 - 100 * u], -1) + checker[..., None]
    image = np.clip(rgb, 0, 200).astype(np.uint8)
    Image.fromarray(image).save(path)
    return image


def config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "explorer.toml"
    path.write_text(text)
    return str(path)


def white_centroid(view: np.ndarray) -> tuple[np.ndarray, int]:
    """Centroid (x, y) and count of the near-white pixels (the grown points)."""
    ys, xs = np.nonzero(view.min(axis=2) >= 225)
    return np.array([xs.mean(), ys.mean()]) if len(xs) else np.array([np.nan, np.nan]), len(xs)


def project(point: np.ndarray, pose: np.ndarray, photo_size, window) -> np.ndarray:
    """Window pixel of a world point seen from ``pose`` (OpenCV camera-to-world) by the
    explorer's letterboxed camera (the photo's 60 degree field of view fitted to the window)."""
    pw, ph = photo_size
    ww, wh = window
    f = 0.5 * pw / np.tan(np.radians(30.0)) * min(ww / pw, wh / ph)
    cam = np.linalg.inv(pose) @ np.append(point, 1.0)
    return np.array([f * cam[0] / cam[2] + ww / 2, f * cam[1] / cam[2] + wh / 2])


class ScreenStream:
    """The window's pixels as the X server has them, grabbed continuously (ffmpeg x11grab at
    ``rate`` a second), each stamped with the wall clock when it was read."""

    def __init__(self, app: App, rate: int = 15):
        import collections
        import threading

        x, y, self.w, self.h = app.geometry()
        self.frames: collections.deque = collections.deque(maxlen=400)
        self.proc = subprocess.Popen(
            ["ffmpeg", "-loglevel", "error", "-f", "x11grab", "-framerate", str(rate),
             "-video_size", f"{self.w}x{self.h}", "-i", f"{app.env['DISPLAY']}+{x},{y}",
             "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], env=app.env,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        size = self.w * self.h * 3
        while True:
            data = self.proc.stdout.read(size)
            if len(data) < size:
                return
            self.frames.append((time.monotonic(), np.frombuffer(data, np.uint8).reshape(
                self.h, self.w, 3)))

    def since(self, t0: float) -> list[tuple[float, np.ndarray]]:
        return [(t, f) for t, f in list(self.frames) if t >= t0]

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def recording_dot(view: np.ndarray) -> bool:
    """The HUD's red recording square (top right) is on screen."""
    top = view[:40, -160:].astype(int)
    red = (top[..., 0] > 200) & (top[..., 1] < 60) & (top[..., 2] < 60)
    return int(red.sum()) >= 100


# --- a slow renderer -------------------------------------------------------------------------


@pytest.mark.slow
def test_at_one_fps_a_clip_ends_on_its_last_pose_with_the_cloud_grown(display, tmp_path):
    photo_path = tmp_path / "square.png"
    gradient_photo(photo_path, 256, 256)
    # Frames come slower than the clip plays (as from a CPU engine), the window renders at
    # about 1 fps: each tick the playhead runs 30 frames on, past the frames that arrived.
    server = PhotoServer(grow=3000, frame_delay_s=0.15)
    shot: dict = {}
    app = App(display, tmp_path, str(photo_path), "--backend", server.address, "--size",
              "320x240", "--config",
              config(tmp_path, "[debug]\nframe_sleep_s = 0.9\n[paths]\nfps = 30.0\n"))
    try:
        app.wait_log(r"scene \S+ ready")
        app.key("F2")  # no HUD: the white on screen is the grown points only
        app.key("3")  # stock path: turn right, 48 frames at 30 fps (1.6 s), at about 1 fps
        ends = app.wait_log(r"clip (\S+) played to its end: (\d+)/48 frames received in "
                            r"([\d.]+) s", timeout=LOG_DEADLINE)
        (job, poses), = server.transitions
        # The grown points lie around a point 4 units ahead of the path's last pose: seen from
        # that pose they are centred in the view; from an earlier pose, off to the side.
        end = poses[-1]
        centre = end[:3, 3] + 4.0 * end[:3, 2]
        size = (320, 240)
        want = project(centre, end, (256, 256), size)
        early = project(centre, poses[-12], (256, 256), size)
        assert np.linalg.norm(want - early) > 20  # the check below tells them apart

        def centred() -> bool:
            shot["view"] = view = app.screen()
            shot["xy"], shot["n"] = white_centroid(view)
            return shot["n"] > 300 and np.linalg.norm(shot["xy"] - want) < 8

        assert wait_for(centred, 30), (shot.get("xy"), shot.get("n"), want, early)
        fps = [float(m) for m in re.findall(r"rendering at ([\d.]+) fps", app.log())]
        assert wait_for(lambda: server.credits_granted() == server.frames_sent == 48, 10)
        assert app.quit() == 0
    finally:
        app.kill()
        server.close()
        if "view" in shot:
            Image.fromarray(shot["view"]).save(tmp_path / "end.png")
    assert ends[0][0] == job and ends[0][1] == "48"
    assert fps and fps[0] < 1.5, fps  # a slow renderer indeed
    assert "Traceback" not in app.log()


# --- a recording that takes seconds to finish --------------------------------------------------


@pytest.mark.slow
def test_stopping_a_recording_never_blocks_the_window(display, tmp_path):
    """The encoder sleeps 0.25 s a picture (``debug.encode_sleep_s``) behind a 16-picture
    queue: when R stops the recording, about 4 s of encoding are still to do. The window
    answers within 1 s all the same, flies meanwhile, and the file comes out whole."""
    photo_path = tmp_path / "photo.png"
    gradient_photo(photo_path, 384, 288)
    record = tmp_path / "rec.mp4"
    server = PhotoServer()
    app = App(display, tmp_path, str(photo_path), "--backend", server.address, "--size",
              "480x360", "--record", str(record), "--record-on-start", "--config",
              config(tmp_path, "[debug]\nencode_sleep_s = 0.25\n[record]\nqueue_size = 16\n"))
    stream = None
    try:
        app.wait_log(r"scene \S+ ready")
        app.wait_log(r"the encoder is 16 pictures behind", timeout=LOG_DEADLINE)
        stream = ScreenStream(app)
        assert wait_for(lambda: any(recording_dot(f) for _, f in stream.since(0)), 20)
        started = app.log().count("recording to")
        t0 = time.monotonic()
        app.key("r")
        assert wait_for(lambda: any(not recording_dot(f) for _, f in stream.since(t0)), 20)
        answered = min(t for t, f in stream.since(t0) if not recording_dot(f)) - t0
        # Keys act as keys while the file is finished: W flies (the view moves).
        before = stream.since(0)[-1][1]
        t1 = time.monotonic()
        xdo(display, "keydown", "--window", app.wid, "w")
        moved = wait_for(lambda: any(np.abs(f[:200].astype(int) - before[:200]).mean() > 3
                                     for _, f in stream.since(t1)), 20)
        xdo(display, "keyup", "--window", app.wid, "w")
        still_finalising = "finalised in" not in app.log()
        done = app.wait_log(r"recorded (\d+) frames \((\d+) dropped, ([\d.]+) s\) to \S+, "
                            r"finalised in ([\d.]+) s", timeout=LOG_DEADLINE)
        assert app.quit() == 0
    finally:
        if stream is not None:
            stream.close()
        app.kill()
        server.close()
    assert answered < 1.0, f"the window answered R after {answered:.2f} s"
    assert moved and still_finalising
    written, dropped, duration, finalise = (float(v) for v in done[0])
    assert finalise >= 2.0  # there was real work left when R was pressed
    assert app.log().count("recording to") == started  # no second recording started
    assert dropped > 0
    import av

    with av.open(str(record)) as container:
        video = container.streams.video[0]
        times = [f.time for f in container.decode(video)]
        file_s = float(video.duration * video.time_base)
    assert len(times) == written and times[0] == 0.0 and np.all(np.diff(times) > 0)
    assert file_s == pytest.approx(duration, abs=0.1)
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of",
                            "json", str(record)], capture_output=True, text=True, check=True)
    assert float(json.loads(probe.stdout)["format"]["duration"]) == pytest.approx(duration, abs=0.1)
    assert "Traceback" not in app.log()


# --- a saturated machine -------------------------------------------------------------------------

BURNER = "import time\nend = time.monotonic() + {s}\nwhile time.monotonic() < end:\n    pass\n"


@pytest.mark.slow
def test_saturated_cores_keep_the_backend_and_the_dynamics_loop(display, tmp_path):
    """A real local backend (classic engine) animates the river while two processes keep
    both cores busy for 60 s: no side declares the other gone, the loop plays on screen."""
    from explorer.procedural_scene import make_valley, river_flow

    scene = make_valley(320, 180)
    Image.fromarray(scene.image).save(tmp_path / "valley.png")
    np.save(tmp_path / "valley-depth.npy", scene.depth)
    app = App(display, tmp_path, str(tmp_path / "valley.png"), "--depth",
              str(tmp_path / "valley-depth.npy"), "--fov", "70", "--size", "480x270")
    burners, shots = [], []
    try:
        app.wait_log(r"scene \S+ ready", timeout=LOG_DEADLINE)
        app.key("F2")  # the view only: the loop's motion is what changes
        # An arrow along the river, dragged in window pixels.
        K = scene.K * (480 / 320)
        K[2, 2] = 1.0
        (x0, y0), (x1, y1) = (K[:2, :2] @ (np.array(p[:2]) / p[2]) + K[:2, 2]
                              for p in river_flow())
        xdo(display, "mousemove", "--window", app.wid, str(int(x0)), str(int(y0)))
        xdo(display, "mousedown", "1")
        for a in np.linspace(0, 1, 8)[1:]:
            xdo(display, "mousemove", "--window", app.wid, str(int(x0 + a * (x1 - x0))),
                str(int(y0 + a * (y1 - y0))))
        xdo(display, "mouseup", "1")
        t0 = time.monotonic()
        burners = [subprocess.Popen([sys.executable, "-c", BURNER.format(s=60)])
                   for _ in range(2)]
        app.key("space")
        job = app.wait_log(r"job (dynamics-\S+) done", timeout=LOG_DEADLINE)[0]
        app.wait_log(rf"clip {job} looping", timeout=LOG_DEADLINE)
        shots.append(app.screen())

        def moves() -> bool:  # the loop shows other frames: the river's pixels change
            shots.append(app.screen())
            return int((np.abs(shots[-1].astype(int) - shots[0]).max(axis=2) > 8).sum()) > 200

        changed = wait_for(moves, 30)
        # Hold the load for the whole minute, watching that nobody is declared gone.
        while time.monotonic() - t0 < 60 and any(b.poll() is None for b in burners):
            assert "gone" not in app.log(), app.log()[-3000:]
            time.sleep(1.0)
        assert "looping" in app.log()
        loaded = time.monotonic() - t0
        assert app.quit() == 0
    finally:
        for b in burners:
            b.kill()
            b.wait(10)
        app.kill()
        for i, shot in enumerate(shots[:1] + shots[-1:]):
            Image.fromarray(shot).save(tmp_path / f"loop-{i}.png")
    log = app.log()
    assert loaded >= 60
    assert changed, "the dynamics loop did not move on screen"
    assert "backend gone" not in log and "no message for" not in log and "lost" not in log
    assert "(1 arrows)" in log and "Traceback" not in log


# --- resume as you left it --------------------------------------------------------------------


def saved_session(root: Path, name: str, photo: np.ndarray, end_pose: np.ndarray,
                  identity_file: Path) -> None:
    """A session as a local backend saves it (its own SessionStore, owned by the identity
    token kept in ``identity_file``, as the backend would have issued it): the photo lifted on
    a plane 4 units ahead, opened with the horizon prior, one clip that ended at ``end_pose``."""
    from backend.geometry.store import PointStore
    from backend.geometry.unproject import unproject
    from backend.session import SessionStore
    from protocol.camera import intrinsics
    from protocol.identity import TokenSigner, token_identity
    from protocol.messages import SceneText

    h, w = photo.shape[:2]
    K = intrinsics(w, h, 60.0)
    store = PointStore()
    store.append(unproject(photo, np.full((h, w), 4.0, np.float32), K, np.eye(4)))
    store_root = SessionStore(root)
    token = TokenSigner(store_root.token_key).issue()
    identity_file.parent.mkdir(parents=True, exist_ok=True)
    identity_file.write_text(token + "\n")
    sessions = store_root.owned_by(token_identity(token))
    sessions.create(name, photo, K, SceneText(), "classic", 4.0, store=store,
                    depth=("prior", "depth: horizon prior (a guess)"))
    sessions.add_clip(name, "transition", [photo, photo], np.stack([np.eye(4), end_pose]), K,
                      24.0, end_pose, store=store)


@pytest.mark.slow
def test_resume_opens_with_the_photo_shape_and_home_at_the_photo(display, tmp_path):
    photo = gradient_photo(tmp_path / "square.png", 256, 256)
    a = 0.6  # where the last clip ended: forward and turned right, the photo's edge in view
    end = np.array([[np.cos(a), 0, np.sin(a), 0.5], [0, 1, 0, 0], [-np.sin(a), 0, np.cos(a), 1.0],
                    [0, 0, 0, 1]])
    identity = tmp_path / "identity"
    saved_session(tmp_path / "sessions", "square-1", photo, end, identity)
    shots: dict = {}
    app = App(display, tmp_path, "--resume", "square-1", "--config",
              config(tmp_path, f"[window]\nwidth = 400\n[network]\nidentity_file = '{identity}'\n"))
    try:
        app.wait_log(r"scene square-1 ready", timeout=LOG_DEADLINE)
        _, _, w, h = app.geometry()
        app.key("F2")
        def shows(name: str, predicate) -> bool:
            def check() -> bool:
                shots[name] = app.screen()
                return predicate(photo_psnr(shots[name], photo))
            return wait_for(check, 20)

        # As left: at the last clip's end, which does not look like the photo ...
        assert shows("left", lambda db: db < 16.0), photo_psnr(shots["left"], photo)
        app.key("Home")  # ... and Home is the photo's own view
        assert shows("home", lambda db: db > 22.0), photo_psnr(shots["home"], photo)
        assert app.quit() == 0
    finally:
        app.kill()
        for name, shot in shots.items():
            Image.fromarray(shot).save(tmp_path / f"{name}.png")
    assert (w, h) == (400, 400)  # the square photo's shape, not the 960 x 540 default
    assert re.search(r"scene square-1 resumed \(classic engine, \d+ points, depth: prior\)",
                     app.log()), app.log()[-2000:]
    assert "Traceback" not in app.log()


def test_resume_of_a_session_a_remote_backend_lacks_is_an_error(display, tmp_path):
    from backend.config import BackendConfig
    from backend.server import Backend

    config_ = BackendConfig(bind="tcp://127.0.0.1:0", sessions=str(tmp_path / "remote"))
    with Backend(config_) as backend:
        out = subprocess.run([sys.executable, "-m", "explorer.cli", "explore", "--resume",
                              "nosuchsession", "--backend", backend.address], env=display,
                             cwd=tmp_path, capture_output=True, text=True, timeout=LOG_DEADLINE)
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode == 2, out.stderr[-2000:]
    assert len(errors) == 1 and "nosuchsession" in errors[0], out.stderr[-2000:]
    assert "Traceback" not in out.stderr
