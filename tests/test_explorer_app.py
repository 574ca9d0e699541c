"""The explorer app, headless (pyglet on EGL), driven through its real pyglet event handlers."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("moderngl")

from explorer.window import configure_pyglet  # noqa: E402

configure_pyglet(headless=True)

from explorer.testing import FakeBackend, frame_color  # noqa: E402
from protocol.codec import read_array  # noqa: E402
from protocol.messages import Cancel, Credit, Dynamics, Transition  # noqa: E402

pytestmark = pytest.mark.gl


@pytest.fixture(scope="module", autouse=True)
def _egl():
    import moderngl

    try:
        moderngl.create_standalone_context(backend="egl").release()
    except Exception as exc:  # a machine without EGL: nothing here can run
        pytest.skip(f"no EGL: {exc}")
DT = 1.0 / 30.0


@pytest.fixture()
def app(tmp_path, monkeypatch):
    import pyglet

    from explorer.settings import ExplorerSettings
    from explorer.window import ExplorerWindow

    monkeypatch.chdir(tmp_path)
    settings = ExplorerSettings.load()
    settings.paths.transition_frames = 12
    settings.dynamics.num_frames = 6
    backend = FakeBackend(size=(64, 48))
    win = ExplorerWindow(backend, settings, visible=False, size=(160, 120))
    win.backend = backend
    win.key = pyglet.window.key
    scene = np.zeros((48, 64, 3), np.uint8)
    win.explorer.session.open_scene(scene)
    for _ in range(3):
        win.tick(DT)
    yield win
    win.close()


def send(win, event, *args):
    """Post an input event to the window and let pyglet deliver it (as its event loop does)."""
    win.window.dispatch_event(event, *args)
    win.window.dispatch_events()


def press(win, symbol, ticks=0):
    send(win, "on_key_press", symbol, 0)
    for _ in range(ticks):
        win.tick(DT)
    send(win, "on_key_release", symbol, 0)


def run_until(win, predicate, limit=300):
    for _ in range(limit):
        if predicate():
            return True
        win.tick(DT)
    return predicate()


def test_scene_loads_and_renders(app):
    ex = app.explorer
    assert ex.points.count == 64 * 48
    assert ex.camera.scene_scale == pytest.approx(4.0)
    press(app, app.key.F2)  # the HUD's wrapped lines cover much of a 160 x 120 window
    app.tick(DT)
    img = ex.target.read_rgb()
    # The cloud (red ramp) fills the window's middle: fov matches the scene's K.
    assert img[60, 80, 0] > 150 and img[60, 80, 1] < 40


def test_holding_w_moves_forward_and_enter_sends_flown_path(app):
    ex = app.explorer
    start = ex.camera.pose.copy()
    press(app, app.key.W, ticks=30)  # one second of app clock
    moved = ex.camera.pose[:3, 3] - start[:3, 3]
    speed = ex.settings.camera.speed * ex.camera.scene_scale
    assert moved[2] == pytest.approx(speed * 1.0, rel=0.15)  # forward = +z, minus ramp-up
    assert abs(moved[0]) < 1e-9 and abs(moved[1]) < 1e-9
    end = ex.camera.pose.copy()
    press(app, app.key.ENTER)
    (msg, blobs), = app.backend.of_type(Transition)
    poses = read_array(msg.poses, blobs)
    assert poses.shape == (12, 4, 4)
    np.testing.assert_allclose(poses[0], start, atol=1e-5)
    np.testing.assert_allclose(poses[-1], end, atol=1e-5)
    z = poses[:, 2, 3]
    assert np.all(np.diff(z) > 0)  # monotone along the flight
    steps = np.diff(z)
    assert steps.max() / steps.min() < 1.6  # evenly spaced by arc length


def test_j_sends_a_dynamic_transition_and_world_motion_makes_every_commit_dynamic(app):
    ex = app.explorer

    def commit(symbol):
        press(app, app.key.W, ticks=6)
        clock = ex.time
        press(app, symbol)
        msg, _ = app.backend.of_type(Transition)[-1]
        assert run_until(app, lambda: not ex.player.active and not ex.session.jobs
                         and not ex.camera.locked)
        return msg, clock

    plain, _ = commit(app.key.ENTER)
    assert plain.dynamics is None
    dynamic, clock = commit(app.key.J)
    assert dynamic.dynamics is not None and dynamic.dynamics.start_s == pytest.approx(clock)
    assert dynamic.dynamics.prompt is None and dynamic.dynamics.k is None
    # points a dynamics job left moving, world motion on (M): Enter sends dynamic transitions
    ex.points.set_motion(np.array([0]), np.array([[0.1, 0.0, 0.0, 1.0]], np.float32))
    assert ex.world_motion
    moving, clock = commit(app.key.ENTER)
    assert moving.dynamics is not None and moving.dynamics.start_s == pytest.approx(clock)
    press(app, app.key.M)  # the world stilled: plain transitions again
    assert not ex.world_motion
    assert commit(app.key.ENTER)[0].dynamics is None


def test_clip_plays_aligned_then_hands_camera_back(app):
    ex = app.explorer
    press(app, app.key.F2)  # no HUD over the middle of this small window
    press(app, app.key.D, ticks=15)
    end = ex.camera.pose.copy()
    press(app, app.key.ENTER)
    (msg, blobs), = app.backend.of_type(Transition)
    poses = read_array(msg.poses, blobs).astype(np.float64)
    seen = {}
    for _ in range(120):
        app.tick(DT)
        if ex.player.active and ex.clip_view.shown is not None:
            idx = ex.clip_view.shown.frame.index
            np.testing.assert_allclose(ex.camera.pose, poses[idx], atol=1e-5)
            seen[idx] = ex.target.read_rgb()[60, 80].astype(int)
        if seen and not ex.player.active and not ex.session.jobs:
            break
    assert sorted(seen) == list(range(12))  # every frame shown, in order
    for idx, px in seen.items():  # the clip covers the window (it fades in and out)
        if 4 <= idx <= 7:
            assert np.abs(px - frame_color(idx)).max() <= 6, (idx, px)
    assert not ex.camera.locked
    np.testing.assert_allclose(ex.camera.pose, end, atol=1e-5)  # handed back at the end pose
    assert app.backend.credits_granted == 12  # one credit per frame consumed


def test_space_sends_dynamics_with_arrows_and_loops_until_space(app):
    ex = app.explorer
    # Drag an arrow on the paused view: 40 px to the right in the middle of the window.
    send(app, "on_mouse_press", 60, 60, 1, 0)  # pyglet y is up
    send(app, "on_mouse_drag", 100, 60, 40, 0, 1, 0)
    send(app, "on_mouse_release", 100, 60, 1, 0)
    press(app, app.key.F)  # freeze brush
    send(app, "on_mouse_press", 20, 100, 1, 0)
    send(app, "on_mouse_release", 20, 100, 1, 0)
    press(app, app.key.SPACE)
    (msg, blobs), = app.backend.of_type(Dynamics)
    assert len(msg.arrows) == 1
    arrow = msg.arrows[0]
    scale = 64 / 160  # window pixels -> scene image pixels (same fov)
    assert arrow.start[0] == pytest.approx(60 * scale, abs=0.5)
    assert arrow.start[1] == pytest.approx(60 * scale, abs=0.5)
    frames = ex.settings.dynamics.arrow_frames
    assert arrow.vector[0] == pytest.approx(40 * scale / frames, rel=1e-3)
    assert arrow.vector[1] == pytest.approx(0.0, abs=1e-6)
    frozen = read_array(msg.frozen, blobs)
    assert frozen.shape == (48, 64) and frozen[8, 8] == 255 and frozen[40, 60] == 0
    # The clip loops: 6 frames played twice over means indexes wrap around.
    shown = []
    for _ in range(40):
        app.tick(DT)
        if ex.clip_view.shown is not None:
            shown.append(ex.clip_view.shown.frame.index)
    assert ex.camera.locked and shown.count(0) >= 2 and max(shown) == 5
    press(app, app.key.SPACE)
    assert app.backend.of_type(Cancel) and not ex.camera.locked
    for _ in range(5):
        app.tick(DT)
    assert ex.clip_view.shown is None
    # Every frame that reached the explorer gave its credit back, shown or not, so a
    # stopped loop never leaves the backend's credit window blocked.
    assert app.backend.credits_granted == app.backend.frames_delivered


def test_credits_bound_frames_in_flight(app):
    ex = app.explorer
    press(app, app.key.W, ticks=5)
    press(app, app.key.ENTER)
    app.backend.hold = True
    for _ in range(5):
        app.tick(DT)
    assert ex.player.state.value == "idle" or not ex.player.active
    app.backend.hold = False
    run_until(app, lambda: not ex.session.jobs and not ex.player.active)
    credits = sum(m.frames for m, _ in app.backend.of_type(Credit))
    assert credits == 12 == app.backend.frames_delivered


def test_record_toggle_writes_a_timestamped_mp4(app, tmp_path):
    import av

    ex = app.explorer
    ex.settings.record.queue_size = 64  # ticks here outrun the wall clock: keep every picture
    press(app, app.key.R)
    assert ex.recorder is not None
    for _ in range(45):  # 1.5 s of app clock at 30 ticks/s, recorded at up to 30 fps
        app.tick(DT)
    for _ in range(3):  # then 0.9 s at about 3 fps: three pictures, each lasting 0.3 s
        app.tick(0.3)
    press(app, app.key.R)
    assert ex.recorder is None and not ex.recordings  # finalised aside: R returned at once
    (recorder,) = ex.recording.finalising
    stats = recorder.wait(30)
    with av.open(str(stats.path)) as container:
        stream = container.streams.video[0]
        frames = [(f.time, f.to_ndarray(format="rgb24")) for f in container.decode(stream)]
        duration = float(stream.duration * stream.time_base)
    assert len(frames) == stats.frames_written == 45 + 3 and stats.frames_dropped == 0
    assert stats.duration_s == pytest.approx(44 * DT + 0.9, abs=2e-3)  # first picture to stop
    assert duration == pytest.approx(stats.duration_s, abs=0.05)
    times = [t for t, _ in frames]
    assert times[0] == 0.0 and np.all(np.diff(times) > 0)
    np.testing.assert_allclose(np.diff(times)[:44], DT, atol=2e-3)
    np.testing.assert_allclose(np.diff(times)[44:], 0.3, atol=2e-3)  # the slow pictures
    frames = [f for _, f in frames]
    assert frames[0].shape == (120, 160, 3)
    # What was recorded is what the window showed: the red cloud in the middle.
    assert frames[-1][60, 80, 0] > 140


def test_f12_writes_a_screenshot(app, tmp_path):
    from PIL import Image

    app.explorer.settings.record.screenshot_folder = str(tmp_path)
    press(app, app.key.F12)
    app.tick(DT)
    (thread,) = app.explorer.screenshot_threads
    thread.join()
    (shot,) = tmp_path.glob("*.png")
    img = np.asarray(Image.open(shot))
    # The screenshot is the view without the HUD: the window (HUD on) differs from it, and
    # with the HUD hidden (F2) the window shows exactly the screenshot.
    assert (img != app.explorer.target.read_rgb()).any()
    press(app, app.key.F2)
    app.tick(DT)
    np.testing.assert_array_equal(img, app.explorer.target.read_rgb())
