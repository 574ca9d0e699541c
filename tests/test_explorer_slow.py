"""A session that survives a slow machine, without a window: the player's end on a slow
renderer, timestamped recordings stopped without waiting, liveness while another thread
holds the GIL, lost jobs re-sent, HUD lines that fit, the photo while the scene opens,
inputs refused at once, and an offline depth model known at once."""

from __future__ import annotations

import ctypes
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from explorer.player import ClipFrame, ClipPlayer
from explorer.settings import PlayerSettings

IMG = np.zeros((2, 2, 3), np.uint8)


def pose_of(i: int) -> np.ndarray:
    pose = np.eye(4)
    pose[0, 3] = i
    return pose


# --- the player on a slow renderer -------------------------------------------------------------


def play_slowly(player: ClipPlayer, tick_s: float, frame_gap_s: float, n: int = 48,
                credits: int = 8) -> tuple[list[int], np.ndarray]:
    """A backend sending ``n`` frames ``frame_gap_s`` apart under credit, a renderer ticking
    every ``tick_s``: the indices shown and the pose the clip ended on."""
    sent, next_send, now, shown = 0, 0.0, 0.0, []
    player.begin("j", n, 24.0, False)
    for _ in range(1000):
        end = now + tick_s
        while sent < n and credits > 0 and next_send < end:
            at = max(next_send, now)
            player.add("j", ClipFrame(sent, pose_of(sent), np.eye(3), IMG, arrived_at=at), n,
                       24.0, False)
            sent, credits, next_send = sent + 1, credits - 1, at + frame_gap_s
            if sent == n:
                player.finish("j")
        now = end
        show = player.update(tick_s, now)
        credits += player.take_credits()
        if show is not None and show.ended:
            return shown, show.frame.pose
        if show is not None and (not shown or shown[-1] != show.frame.index):
            shown.append(show.frame.index)
    raise AssertionError("the clip never ended")


@pytest.mark.parametrize("tick_s", [0.4, 1.0, 2.5])
def test_a_clip_ends_on_its_last_pose_however_slow_the_renderer(tick_s):
    """At 2.5 fps, 1 fps and 0.4 fps (a tick longer than the whole 2 s clip), frames coming
    slower than the clip plays: the clip ends on frame 47's pose, never where a tick landed."""
    player = ClipPlayer(PlayerSettings(min_prebuffer=2, max_prebuffer=8))
    shown, end = play_slowly(player, tick_s, frame_gap_s=0.1)
    np.testing.assert_array_equal(end, pose_of(47))
    assert shown == sorted(shown) and len(shown) < 48  # frames skipped, not waited for
    assert player.credits_total == player.frames_received == 48


def test_show_every_frame_waits_for_each_one():
    player = ClipPlayer(PlayerSettings(min_prebuffer=2, max_prebuffer=8, show_every_frame=True))
    shown, end = play_slowly(player, tick_s=1.0, frame_gap_s=0.1)
    assert shown == list(range(48))
    np.testing.assert_array_equal(end, pose_of(47))


# --- recordings: each picture once, at its time; stop returns at once -------------------------


def test_a_stopped_recording_is_finished_aside_with_its_timing(tmp_path):
    import av

    from explorer.recorder import VideoRecorder

    rec = VideoRecorder(tmp_path / "r.mp4", 64, 48, fps=30.0, queue_size=8, encode_delay_s=0.2)
    rec.start(0.0)
    times = [0.0, 0.04, 0.5, 2.0, 2.1]  # a renderer that stalls now and then
    for i, t in enumerate(times):
        rec.submit(np.full((48, 64, 3), 40 * i, np.uint8), t)
    rec.submit(np.zeros((48, 64, 3), np.uint8), 2.11)  # under 1/30 s later: not due
    t0 = time.perf_counter()
    rec.stop(3.0)
    returned = time.perf_counter() - t0
    assert not rec.done  # about a second of encoding is still to do
    stats = rec.wait(60)
    assert returned < 0.1 < stats.finalise_s
    with av.open(str(rec.path)) as container:
        video = container.streams.video[0]
        frames = [(f.time, f.to_ndarray(format="rgb24")[0, 0, 0]) for f in container.decode(video)]
        duration = float(video.duration * video.time_base)
    assert [t for t, _ in frames] == pytest.approx(times + [3.0 - 1 / 30], abs=2e-3)
    assert [v for _, v in frames][:5] == pytest.approx([0, 40, 80, 120, 160], abs=6)
    assert stats.frames_written == 6 and stats.frames_dropped == 0
    assert duration == pytest.approx(3.0, abs=0.01) and stats.duration_s == 3.0
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of",
                            "json", str(rec.path)], capture_output=True, text=True, check=True)
    assert float(json.loads(probe.stdout)["format"]["duration"]) == pytest.approx(3.0, abs=0.01)


def test_a_full_queue_drops_pictures_and_keeps_the_others_times(tmp_path):
    import av

    from explorer.recorder import VideoRecorder

    rec = VideoRecorder(tmp_path / "r.mp4", 32, 32, fps=10.0, queue_size=2, encode_delay_s=0.5)
    rec.start(0.0)
    kept = [rec.submit(np.full((32, 32, 3), 20 * i, np.uint8), 0.1 * i) for i in range(6)]
    rec.stop(1.0)
    stats = rec.wait(60)
    with av.open(str(rec.path)) as container:
        times = [f.time for f in container.decode(video=0)]
    assert stats.frames_dropped == kept.count(False) > 0
    assert times[: kept.count(True)] == pytest.approx(
        [0.1 * i for i, k in enumerate(kept) if k], abs=2e-3)


# --- liveness while the render thread holds the GIL --------------------------------------------


def test_a_client_whose_thread_was_starved_does_not_declare_a_live_backend_gone():
    """A GL call holds the GIL for the whole frame (moderngl does not release it); a frame
    longer than the peer timeout leaves the client's I/O thread waiting with the backend's
    pings queued on its socket. They prove the backend alive: no PeerGone."""
    from protocol.events import PeerGone
    from protocol.transport import Client

    hold_gil = ctypes.PyDLL(None).usleep  # a PyDLL call keeps the GIL, like a long GL call
    hold_gil.argtypes = [ctypes.c_uint]
    server = subprocess.Popen([sys.executable, "-c", PING_SERVER], stdout=subprocess.PIPE,
                              text=True)
    client = None
    try:
        client = Client(server.stdout.readline().strip(), heartbeat_s=0.2, peer_timeout_s=0.6)
        client.connect(timeout=20)
        events = []
        for _ in range(4):  # each round lands in another phase of the client's I/O loop
            hold_gil(800_000)  # 0.8 s: longer than the client's 0.6 s timeout
            deadline = time.monotonic() + 0.4  # the backend kept pinging: nothing is gone
            while time.monotonic() < deadline:
                events.append(client.poll(0.05))
        assert not [e for e in events if isinstance(e, PeerGone)]
        server.kill()  # a backend that really is gone still is declared so
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not isinstance(client.poll(0.1), PeerGone):
            pass
        assert time.monotonic() < deadline
    finally:
        server.kill()
        server.wait(10)
        if client is not None:
            client.close()


PING_SERVER = """
import time
from protocol.transport import ServerEndpoint
server = ServerEndpoint("tcp://127.0.0.1:*", heartbeat_s=0.2, peer_timeout_s=30.0)
print(server.address, flush=True)
while True:
    server.poll(1.0)
"""


# --- lost jobs: said, and re-sent on the new connection ----------------------------------------


class Wire:
    """A client stand-in: records what is sent; the test puts events in ``inbox``."""

    def __init__(self):
        self.sent, self.inbox = [], []

    def send(self, msg, blobs=()):
        self.sent.append(msg)

    def poll(self, timeout=0.0):
        return self.inbox.pop(0) if self.inbox else None

    def credit(self, frames):
        pass


def scene_opened(resumed: bool):
    from protocol.codec import k_list, pose_list
    from protocol.events import Incoming
    from protocol.messages import SceneOpened

    return Incoming(SceneOpened(request_id="s", scene_id="s", engine="classic", width=64,
                                height=48, K=k_list(np.eye(3)), pose=pose_list(np.eye(4)),
                                median_depth=4.0, num_points=0, resumed=resumed), [], None)


def test_a_job_lost_with_the_backend_is_said_and_sent_again():
    from explorer.hud_presenter import HudPresenter
    from explorer.session import ExplorerSession
    from protocol.events import PeerGone
    from protocol.messages import Dynamics

    old = Wire()
    player = ClipPlayer()
    session = ExplorerSession(old, player, lambda *a: None)
    session.open_scene(np.zeros((48, 64, 3), np.uint8), scene_id="s")
    old.inbox.append(scene_opened(False))
    session.pump()
    job = session.send_dynamics(np.eye(4), [], None, 48, 24.0)
    player.begin(job, 48, 24.0, True)
    old.inbox.append(PeerGone(None, "no message from the backend for 5.0 s"))
    session.pump()
    assert "1 job(s) lost" in session.status and player.find(job) is None
    bars = HudPresenter._bars(session)
    assert "lost with the backend" in bars[job].label and bars[job].fraction == 0.0
    assert [j.job_id for j in session.lost_now] == [job]
    new = Wire()
    session.reattach(new)
    new.inbox.append(scene_opened(True))
    session.pump()
    (again,) = [m for m in new.sent if isinstance(m, Dynamics)]
    assert session.replaced == {job: again.job_id} and again.job_id != job
    assert again.num_frames == 48 and "re-sent 1 job" in session.status
    assert "(re-sent)" in HudPresenter._bars(session)[again.job_id].label


# --- the HUD fits the window -------------------------------------------------------------------


NOTE = ("depth: horizon prior (a guess: flat ground, far sky); model depth-anything/"
        "Depth-Anything-V2-Small-hf unavailable (not cached and offline: HF_HUB_OFFLINE is set); "
        "for real depth run `dreamjourney models fetch` once online")


def test_wrapped_lines_fit_the_width():
    from PIL import ImageFont

    from explorer.hud import wrap_text

    font = ImageFont.load_default(size=16)
    for width in (900, 320, 120):
        rows = wrap_text(NOTE, font, width)
        assert all(font.getlength(r) + 2 <= width for r in rows)
        assert " ".join(rows).replace(" ", "") == NOTE.replace(" ", "")  # nothing lost


@pytest.mark.gl
def test_the_hud_draws_nothing_past_the_window_edge():
    """Every label of the HUD (status, scene, depth, bars) lies inside a 900 px window."""
    moderngl = pytest.importorskip("moderngl")
    from explorer.hud import Hud, HudState, JobBar
    from explorer.renderer import OverlayRenderer

    ctx = moderngl.create_standalone_context(backend="egl")
    overlay = OverlayRenderer(ctx)
    drawn = []
    image = overlay.image
    overlay.image = lambda tex, x, y, w, h, alpha=1.0: (drawn.append((x, y, w, h)),
                                                        image(tex, x, y, w, h, alpha))
    target = ctx.simple_framebuffer((900, 500))
    target.use()
    overlay.begin(900, 500)
    state = HudState(lines=["scene ready: fly with W A S D, F1 for help",
                            "1,234,567 points of 4,000,000 max  |  speed x1.00", NOTE],
                     jobs={"j": JobBar("transition " + NOTE, 0.5)}, recording=True)
    Hud(ctx, overlay).draw(state, 900, 500)
    assert len(drawn) >= 6
    assert all(x >= 0 and x + w <= 900 and y >= 0 and y + h <= 500 for x, y, w, h in drawn)
    ctx.release()


# --- the photo while the scene opens -----------------------------------------------------------


@pytest.mark.gl
def test_the_photo_is_shown_until_its_cloud_is_loaded():
    pytest.importorskip("moderngl")
    from explorer.window import configure_pyglet

    configure_pyglet(headless=True)
    from explorer.settings import ExplorerSettings
    from explorer.testing import FakeBackend
    from explorer.window import ExplorerWindow

    backend = FakeBackend(size=(64, 48))
    win = ExplorerWindow(backend, ExplorerSettings.load(), visible=False, size=(200, 120))
    try:
        ex = win.explorer
        ex.hud.visible = False
        photo = np.zeros((48, 64, 3), np.uint8)
        photo[:, :32] = (250, 240, 10)  # yellow left, blue right
        photo[:, 32:] = (10, 30, 250)
        ex.show_photo(photo)
        win.tick(1 / 30)  # nothing from the backend yet: the photo, letterboxed (x 20-180)
        view = ex.target.read_rgb()
        assert tuple(view[60, 60]) == pytest.approx((250, 240, 10), abs=8)
        assert tuple(view[60, 140]) == pytest.approx((10, 30, 250), abs=8)
        assert view[:, :18].max() < 20 and view[:, -18:].max() < 20  # the bars stay dark
        ex.session.open_scene(photo)
        for _ in range(3):
            win.tick(1 / 30)
        assert not ex.card.shown  # the cloud (FakeBackend's red ramp) replaced it
        assert ex.target.read_rgb()[60, 100, 0] > 150
    finally:
        win.close()


# --- inputs refused before any window ---------------------------------------------------------


def explore(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in __import__("os").environ.items() if k != "DISPLAY"}
    return subprocess.run([sys.executable, "-m", "explorer.cli", "explore", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("size", [(1, 1), (63, 400)])
def test_a_photo_under_64_px_a_side_is_refused(tmp_path, size):
    Image.new("RGB", size, (90, 120, 60)).save(tmp_path / "tiny.png")
    out = explore("tiny.png", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        f"error: tiny.png is {size[0]}x{size[1]}: a photo needs at least 64 pixels a side")
    assert "Traceback" not in out.stderr


def test_resuming_a_missing_session_is_an_error(tmp_path):
    out = explore("--resume", "nosuchsession", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        "error: no saved session 'nosuchsession' under sessions "
        "(`dreamjourney sessions` lists them)"]
    bad = explore("--resume", "../etc", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --resume '../etc'")


# --- the depth model: offline is known at once ------------------------------------------------


@pytest.fixture()
def hub(tmp_path, monkeypatch):
    """An empty hub cache, no HF_HUB_OFFLINE, the network path a failure if taken."""
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    real = huggingface_hub.snapshot_download

    def no_download(*args, **kwargs):
        if not kwargs.get("local_files_only"):
            pytest.fail("tried to download")
        return real(*args, **kwargs)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_download)
    return tmp_path / "hub"


def test_no_route_to_the_hub_is_known_without_trying_to_download(hub, monkeypatch):
    from huggingface_hub import constants

    from backend.engines import depth_model

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed.getsockname()[1]}")
    result = depth_model.load_depth_model("some-org/some-depth-model")
    closed.close()
    assert result.predict is None
    assert result.reason == "not cached and offline: 127.0.0.1 unreachable"


def test_hf_hub_offline_is_known_at_once(hub, monkeypatch):
    from backend.engines import depth_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert depth_model.offline_reason() == "HF_HUB_OFFLINE is set"


def test_a_cached_model_is_found_without_the_network(hub, monkeypatch):
    from backend.engines import depth_model

    snapshot = hub / "models--some-org--depth" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (hub / "models--some-org--depth" / "refs").mkdir()
    (hub / "models--some-org--depth" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(depth_model, "offline_reason",
                        lambda *a: pytest.fail("probed the network for a cached model"))
    assert Path(depth_model.fetch("some-org/depth")) == snapshot


def test_a_recording_started_while_one_is_finished_gets_its_own_file(tmp_path):
    from explorer.recording import Recording
    from explorer.settings import RecordSettings

    recording = Recording(RecordSettings(folder=str(tmp_path)), encode_delay_s=0.3)
    first = recording.start((32, 32), 0.0)
    recording.capture(lambda: np.zeros((32, 32, 3), np.uint8), 0.0, with_hud=False)
    recording.stop(0.5)
    second = recording.start((32, 32), 0.6)  # R again, within the same second
    assert second != first and recording.finalising[0].path == first
    assert [s.path for s in recording.finish(1.0)] == [first, second]


def test_the_whole_depth_note_shows_a_few_seconds_then_one_short_line():
    from explorer.hud_presenter import DEPTH_NOTE_S, DepthLine

    depth = DepthLine()
    assert depth.line("prior", NOTE, 100.0) == NOTE
    assert depth.line("prior", NOTE, 100.0 + DEPTH_NOTE_S - 0.1) == NOTE
    assert depth.line("prior", NOTE, 100.0 + DEPTH_NOTE_S) == "depth: pop-up guess (no depth model)"
    other = NOTE.replace("offline", "unreachable")  # a new note (another scene) shows whole again
    assert depth.line("prior", other, 200.0) == other
    model = "depth: depth-anything/Depth-Anything-V2-Small-hf"
    depth.line("model", model, 300.0)
    assert depth.line("model", model, 300.0 + DEPTH_NOTE_S) == model
    given = "depth: your depth map; model x unavailable (offline); for real depth run ..."
    depth.line("given", given, 400.0)  # the user's own depth: the missing model is no matter
    assert depth.line("given", given, 400.0 + DEPTH_NOTE_S) == "depth: your depth map"
