"""End to end: `dreamjourney explore` in a real X window (Xvfb), driven by xdotool key events,
against test backends on real sockets (and once a real local backend); what it shows is read
back from the X server's screen with ffmpeg x11grab, never from the app's own buffers.
Every wait is on a real condition (a log line, a message on the wire, the screen), with a
generous deadline for a loaded machine."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from explorer.testing import PhotoServer

pytestmark = [pytest.mark.gl, pytest.mark.slow]
SCENE = "/work/shared/scenes/03_ancient.jpg"
TIMEOUT = 300.0  # a deadline for events, generous: the suite also runs beside busy cores


# --- the display, the app, the screen -------------------------------------------------------


@pytest.fixture()
def display():
    if not (shutil.which("Xvfb") and shutil.which("xdotool") and shutil.which("ffmpeg")):
        pytest.skip("needs Xvfb, xdotool and ffmpeg (make setup installs them)")
    for attempt in range(3):  # a display number another run holds makes Xvfb exit: next one
        num = 90 + (os.getpid() * 7 + int(time.monotonic() * 1000) + attempt * 131) % 800
        proc = subprocess.Popen(["Xvfb", f":{num}", "-screen", "0", "640x480x24", "-nolisten",
                                 "tcp"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        env = dict(os.environ, DISPLAY=f":{num}")
        env.pop("WAYLAND_DISPLAY", None)
        def up(proc=proc, env=env) -> bool:
            return proc.poll() is not None or subprocess.run(
                ["xdotool", "getmouselocation"], env=env, capture_output=True).returncode == 0

        if wait_for(up, TIMEOUT) and proc.poll() is None:
            break
        proc.kill()
    else:  # the tools are here, so a display that never comes is a failure, not a skip
        pytest.fail(f"Xvfb did not start on three display numbers within {TIMEOUT:.0f} s each")
    env["_XVFB_PID"] = str(proc.pid)
    yield env
    if proc.poll() is None:
        proc.terminate()
        proc.wait(5)


def wait_for(predicate, timeout: float = TIMEOUT, every: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return bool(predicate())


def log_time(log: str, pattern: str) -> float:
    """The wall-clock time (``time.time()``) of the first log line matching ``pattern``."""
    import datetime

    line = next(line for line in log.splitlines() if re.search(pattern, line))
    stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    return stamp.timestamp()


def settled_screen(app, timeout: float = TIMEOUT) -> np.ndarray:
    """The window's pixels once two grabs in a row agree (points uploaded, nothing moving)."""
    shots = [app.screen()]

    def same() -> bool:
        shots.append(app.screen())
        return np.array_equal(shots[-2], shots[-1])

    assert wait_for(same, timeout), "the view never settled"
    return shots[-1]


def xdo(env, *args) -> str:
    out = subprocess.run(["xdotool", *args], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


class App:
    """A `dreamjourney explore` process with its log in a file."""

    def __init__(self, env, tmp_path: Path, *args: str):
        self.env, self.log_path = env, tmp_path / "explore.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "explorer.cli", "explore", *args], env=env, cwd=tmp_path,
            stdout=self.log_path.open("w"), stderr=subprocess.STDOUT)
        found = subprocess.run(["xdotool", "search", "--sync", "--onlyvisible", "--name",
                                "DreamJourney"], env=env, capture_output=True, text=True,
                               timeout=TIMEOUT)
        assert found.returncode == 0, self.log()
        self.wid = found.stdout.split()[0]
        xdo(env, "windowfocus", "--sync", self.wid)

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_log(self, pattern: str, count: int = 1, timeout: float = TIMEOUT) -> list[str]:
        found = lambda: re.findall(pattern, self.log())  # noqa: E731
        assert wait_for(lambda: len(found()) >= count, timeout), \
            f"no {count} x {pattern!r} in the log:\n{self.log()[-3000:]}"
        return found()

    def key(self, *keys: str) -> None:
        xdo(self.env, "key", "--window", self.wid, *keys)

    def geometry(self) -> tuple[int, int, int, int]:
        out = xdo(self.env, "getwindowgeometry", "--shell", self.wid)
        g = dict(line.split("=") for line in out.splitlines())
        return int(g["X"]), int(g["Y"]), int(g["WIDTH"]), int(g["HEIGHT"])

    def screen(self) -> np.ndarray:
        """The window's pixels as the X server has them (ffmpeg x11grab)."""
        x, y, w, h = self.geometry()
        out = subprocess.run(
            ["ffmpeg", "-loglevel", "error", "-f", "x11grab", "-video_size", f"{w}x{h}",
             "-i", f"{self.env['DISPLAY']}+{x},{y}", "-frames:v", "1", "-f", "rawvideo",
             "-pix_fmt", "rgb24", "-"], env=self.env, capture_output=True, timeout=30)
        assert out.returncode == 0, out.stderr.decode()
        return np.frombuffer(out.stdout, np.uint8).reshape(h, w, 3)

    def quit(self) -> int:
        if self.proc.poll() is None:
            self.key("Escape")
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def letterbox(view: np.ndarray, photo_size: tuple[int, int]) -> tuple[slice, slice]:
    """Where a photo of ``photo_size`` (w, h) sits when fitted, centred, in ``view``."""
    h, w = view.shape[:2]
    pw, ph = photo_size
    s = min(w / pw, h / ph)
    fw, fh = round(pw * s), round(ph * s)
    x0, y0 = (w - fw) // 2, (h - fh) // 2
    return slice(y0 + 1, y0 + fh - 1), slice(x0 + 1, x0 + fw - 1)


def photo_psnr(view: np.ndarray, photo: np.ndarray) -> float:
    rows, cols = letterbox(view, (photo.shape[1], photo.shape[0]))
    region = view[rows, cols].astype(np.float64)
    ref = Image.fromarray(photo).resize((region.shape[1] + 2, region.shape[0] + 2),
                                        Image.Resampling.BOX)
    ref = np.asarray(ref, np.float64)[1:-1, 1:-1]
    mse = np.mean((region - ref) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-9)))


def black_band_fraction(view: np.ndarray, photo_size: tuple[int, int]) -> float:
    """Largest share of the photo's area covered by whole rows or columns of black."""
    rows, cols = letterbox(view, photo_size)
    dark = view[rows, cols].max(axis=2) < 12
    return max(dark.all(axis=1).mean(), dark.all(axis=0).mean())


# --- tests -----------------------------------------------------------------------------------


def test_first_view_is_the_photo_on_screen_and_a_lost_display_keeps_the_recording(
        display, tmp_path):
    server = PhotoServer(scene_fields={"depth_source": "given", "points_budget": 500_000})
    record = tmp_path / "rec.mp4"
    app = App(display, tmp_path, SCENE, "--backend", server.address, "--size", "480x320",
              "--record", str(record))
    try:
        app.wait_log(r"scene \S+ ready")
        (photo,) = server.images
        assert photo.shape == (512, 512, 3)  # under the working size: sent as it is
        app.key("F2")  # hide the HUD: the whole view is the scene
        assert wait_for(lambda: photo_psnr(app.screen(), photo) > 22.0, 20), \
            f"PSNR {photo_psnr(app.screen(), photo):.1f} dB"
        view = app.screen()
        assert black_band_fraction(view, (512, 512)) <= 0.005
        # The square photo is letterboxed into the 3:2 window: bars left and right only.
        assert view[:, :70].max() < 20 and view[:, -70:].max() < 20
        app.key("F2")  # the HUD is back, with the depth source and the point budget
        assert wait_for(lambda: np.abs(app.screen().astype(int) - view).max() > 60, 10)
        app.key("r")
        assert wait_for(lambda: record.exists() and record.stat().st_size > 2000, 20), app.log()
        os.kill(int(display["_XVFB_PID"]), signal.SIGKILL)  # the display goes away
        assert app.proc.wait(30) != 0
    finally:
        app.kill()
        server.close()
    assert "lost the X display" in app.log()
    assert "Traceback" not in app.log()
    import av

    with av.open(str(record)) as container:  # finalised: it plays
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) >= 20 and frames[0].shape == (320, 480, 3)
    # Recorded without the HUD: the view is the photo, as on screen with F2.
    assert photo_psnr(frames[0], server.images[0]) > 20.0


def test_window_fly_commit_and_record(display, tmp_path):
    server = PhotoServer()
    record = tmp_path / "rec.mp4"
    app = App(display, tmp_path, SCENE, "--backend", server.address, "--record", str(record),
              "--size", "320x240")
    try:
        app.wait_log(r"scene \S+ ready")
        app.key("F2")  # without the HUD only the camera changes what the window shows
        first = settled_screen(app)
        # W is held until the view has visibly moved (however slowly a loaded machine renders)
        xdo(display, "keydown", "--window", app.wid, "w")
        moved = wait_for(lambda: np.abs(app.screen().astype(int) - first).mean() > 3.0)
        xdo(display, "keyup", "--window", app.wid, "w")
        assert moved, app.log()
        app.key("F2")
        app.key("Return")
        assert wait_for(lambda: server.transitions), app.log()
        first_key = time.time()
        app.key("r")
        app.wait_log(r"recording to ")
        started = log_time(app.log(), r"recording to ")
        while time.time() < started + 1.5:  # a second and a half of the app's own recording
            time.sleep(0.05)
        second_key = time.time()
        app.key("r")
        app.wait_log(r"recorded \d+ frames")
        finished = log_time(app.log(), r"recorded \d+ frames")
        assert app.quit() == 0, app.log()
    finally:
        app.kill()
        server.close()
    # Enter sent the flown path: from the start pose, straight ahead (+z), evenly resampled.
    (_, poses), = server.transitions
    assert poses.shape == (48, 4, 4)
    np.testing.assert_allclose(poses[0], np.eye(4), atol=1e-5)
    forward = poses[-1][:3, 3]
    assert forward[2] > 0 and abs(forward[0]) < 1e-4 and abs(forward[1]) < 1e-4
    import av

    written = int(re.search(r"recorded (\d+) frames", app.log()).group(1))
    with av.open(str(record)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        duration = float(stream.duration * stream.time_base)
    assert len(frames) == written
    # Real time: the file lasts as long as the recording ran, however fast the renderer (each
    # picture stamped with its time, at most 30 a second): at least from its start (the app's
    # log) to the second key, at most from the first key to its end (the app's log), wherever
    # a loaded machine put the keys.
    assert (second_key - started) - 0.5 <= duration <= (finished - first_key) + 0.5
    assert written <= (finished - first_key + 1.0) * 30
    assert frames[0].shape == (240, 320, 3)


def test_cancel_undo_and_home_by_keys_on_an_8000x6000_photo(display, tmp_path):
    u, v = np.meshgrid(np.linspace(0, 255, 800), np.linspace(0, 255, 600))
    checker = ((np.arange(800)[None] // 40 + np.arange(600)[:, None] // 40) % 2) * 60
    small = np.stack([u, v, 255 - u], -1) * 0.75 + checker[..., None]
    small = small.astype(np.uint8)
    big = tmp_path / "phone photo.jpg"
    Image.fromarray(small).resize((8000, 6000), Image.Resampling.NEAREST).save(big, quality=80)
    server = PhotoServer(frame_delay_s=0.08)
    app = App(display, tmp_path, str(big), "--backend", server.address, "--size", "400x300")
    try:
        app.wait_log(r"scene \S+ ready")
        (photo,) = server.images
        assert photo.shape == (768, 1024, 3)  # the working size, not the 48 MP original
        # a remote backend owns its sessions: the explorer makes no folder in its own
        # (a local backend's session keeps the original: the killed-backend test checks it)
        assert not (tmp_path / "sessions").exists()
        app.key("F2")
        assert wait_for(lambda: photo_psnr(app.screen(), photo) > 22.0, 20)
        home = app.screen()
        # 1: a stock-path transition; Backspace while it plays cancels it and stops the clip.
        app.key("1")
        assert wait_for(lambda: server.frames_sent >= 12)
        app.key("BackSpace")
        assert wait_for(lambda: server.cancels), app.log()
        assert server.cancels == [server.transitions[0][0]]
        app.wait_log(r"clip \S+ played until stopped")
        # 4: another one, played to its end; Z takes it back (its points and its start pose).
        app.key("4")
        app.wait_log(r"clip \S+ played to its end")
        moved = app.screen()
        app.key("z")
        app.wait_log(r"undid transition")
        assert len(server.undos) == 1 and not server.finished
        # Home: back at the photo's viewpoint, the screen is the first view again.
        assert photo_psnr(moved, photo) < 16.0
        app.key("Home")
        assert wait_for(lambda: photo_psnr(app.screen(), photo) > 22.0, 20)
        assert np.abs(app.screen().astype(int) - home).mean() < 3.0
        if os.environ.get("DJ_TEST_SHOTS"):  # to look at them
            for name, img in (("home", home), ("moved", moved)):
                Image.fromarray(img).save(Path(os.environ["DJ_TEST_SHOTS"]) / f"{name}.png")
        assert app.quit() == 0
    finally:
        app.kill()
        server.close()
    assert "Traceback" not in app.log()


def test_slow_renderer_plays_whole_clips_and_credits_every_frame(display, tmp_path):
    config = tmp_path / "slow.toml"
    config.write_text("[debug]\nframe_sleep_s = 0.15\n")  # about 5-6 fps
    server = PhotoServer()
    app = App(display, tmp_path, SCENE, "--backend", server.address, "--size", "320x240",
              "--config", str(config))
    try:
        app.wait_log(r"scene \S+ ready")
        app.key("1")
        app.key("4")  # queued behind the first: sent while the first is still buffering
        ends = app.wait_log(r"clip (\S+) played to its end: (\d+)/48 frames received in "
                            r"([\d.]+) s \((\d+) ticks, longest ([\d.]+) s; ([\d.]+) s waiting "
                            r"for frames\)", count=2, timeout=TIMEOUT)
        assert wait_for(lambda: server.credits_granted() == server.frames_sent == 96), \
            (server.credits_granted(), server.frames_sent)
        fps = [float(m) for m in re.findall(r"rendering at ([\d.]+) fps", app.log())]
        assert app.quit() == 0
    finally:
        app.kill()
        server.close()
    assert [e[0] for e in ends] == [job for job, _ in server.transitions]
    assert all(e[1] == "48" for e in ends)
    for _, _, elapsed, ticks, longest, waited in ends:
        # Played on the wall clock, not a frame a tick: the 48 frames took fewer ticks (the
        # playhead skipped frames) ...
        assert int(ticks) < 48, ends
        # ... and the clip's 2 s of wall time, give or take its last tick, besides the time its
        # clock held for frames not received yet (a starved machine or the credit window).
        played = float(elapsed) - float(waited)
        assert 2.0 - 0.02 <= played <= 2.0 + float(longest) + 0.02, ends
    # A slow renderer indeed (frame_sleep_s caps it under 7 fps), and the HUD measures it.
    assert len(fps) == 2 and all(0.0 < f <= 8.0 for f in fps), fps


def test_a_killed_local_backend_is_restarted_and_the_scene_resumed(display, tmp_path):
    config = tmp_path / "small.toml"
    config.write_text("[photo]\nworking_size = 256\n[network]\npeer_timeout_s = 3.0\n"
                      "reconnect_s = 0.5\n")
    app = App(display, tmp_path, SCENE, "--size", "320x240", "--config", str(config))
    try:
        app.wait_log(r"scene \S+ ready")
        name = re.search(r"scene (\S+) open", app.log()).group(1)
        assert name.startswith("03_ancient-")
        (backend,) = children(app.proc.pid)
        os.kill(backend, signal.SIGKILL)
        app.wait_log(r"scene \S+ resumed")
        app.wait_log(r"scene \S+ ready", count=2)
        (again,) = children(app.proc.pid)
        assert again != backend
        (folder,) = (tmp_path / "sessions").glob(f"{name}-*")  # <scene id>-<random>
        assert (folder / "manifest.json").is_file()
        # the explorer kept the original photo in the session its local backend made
        assert (folder / "original.jpg").read_bytes() == Path(SCENE).read_bytes()
        assert app.quit() == 0
    finally:
        app.kill()
    log = app.log()
    assert "the local backend died" in log
    first, resumed = re.findall(r"scene \S+ ready: (\d+) points", log)
    assert int(first) == int(resumed) > 0


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def hf_energy(image: np.ndarray) -> float:
    """Mean squared high-pass (grey minus its sigma-1 Gaussian blur), as benchmarks/classic.py."""
    import cv2

    grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(np.mean((grey - cv2.GaussianBlur(grey, (0, 0), 1.0)) ** 2))


def forward_flight_grid_energy(env, tmp_path: Path, antialias: bool) -> tuple[float, list]:
    """Fly forward into the photo for ~1.5 s in a real window; the median high-frequency
    energy of the screens grabbed meanwhile (the photo's home region) over the photo's."""
    config = tmp_path / f"splats-{antialias}.toml"
    config.write_text(f"[splats]\nantialias = {str(antialias).lower()}\n")
    server = PhotoServer()
    app = App(env, tmp_path, SCENE, "--backend", server.address, "--size", "480x320",
              "--config", str(config))
    try:
        app.wait_log(r"scene \S+ ready")
        (photo,) = server.images
        app.key("F2")  # no HUD: the screen is the scene
        assert wait_for(lambda: photo_psnr(app.screen(), photo) > 22.0, 20)
        rows, cols = letterbox(app.screen(), (photo.shape[1], photo.shape[0]))
        xdo(env, "keydown", "--window", app.wid, "w")
        shots, t0 = [], time.monotonic()
        while time.monotonic() - t0 < 1.5 or len(shots) < 4:
            shots.append(app.screen())
        xdo(env, "keyup", "--window", app.wid, "w")
        assert app.quit() == 0, app.log()
    finally:
        app.kill()
        server.close()
    moved = [s for s in shots if np.abs(s.astype(int) - shots[0]).mean() > 2.0]
    assert len(moved) >= 2, "the view did not move forward"
    ratio = np.median([hf_energy(s[rows, cols]) for s in shots[1:]]) / hf_energy(photo)
    return float(ratio), shots


def test_flying_forward_shows_no_screen_door(display, tmp_path):
    """Anti-aliased splats keep the screen's high-frequency energy within 1.2x of the
    photo's while flying forward; the opaque discs they replaced do not."""
    filtered, shots = forward_flight_grid_energy(display, tmp_path, antialias=True)
    discs, disc_shots = forward_flight_grid_energy(display, tmp_path, antialias=False)
    if os.environ.get("DJ_TEST_SHOTS"):  # to look at them
        for name, img in (("forward_filtered", shots[-1]), ("forward_discs", disc_shots[-1])):
            Image.fromarray(img).save(Path(os.environ["DJ_TEST_SHOTS"]) / f"{name}.png")
    print(f"forward flight grid energy over the photo's: filtered {filtered:.3f}, "
          f"discs {discs:.3f}")
    assert filtered <= 1.2, (filtered, discs)
    assert discs > 1.2, (filtered, discs)
