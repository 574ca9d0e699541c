"""Explorer logic without GL: camera, paths, player policy, and no torch in the import graph."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from explorer.camera import FlyCamera, MoveInput
from explorer.paths import FlightPath, resample_path, stock_path
from explorer.player import ClipFrame, ClipPlayer, PlayerState
from explorer.settings import PlayerSettings
from protocol.camera import interpolate_pose, look_at


def test_importing_the_explorer_does_not_import_torch():
    code = (
        "import sys\n"
        "import explorer.app, explorer.app_main, explorer.window, explorer.demo, "
        "explorer.session, explorer.recorder, explorer.procedural_scene, explorer.testing\n"
        "bad = sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


ROOT = Path(__file__).resolve().parents[1]


def _imported_packages(package: str) -> dict[str, set[str]]:
    """Top-level packages each module of ``package`` imports, lazy imports included."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def test_layers_explorer_never_imports_backend_and_protocol_imports_neither():
    """The explorer reaches the backend only over the wire (shared formats live in protocol/),
    and protocol/ stands alone, at any depth of a function as well as at the top."""
    for module, names in _imported_packages("explorer").items():
        assert "backend" not in names, module
    for module, names in _imported_packages("protocol").items():
        assert not names & {"backend", "explorer"}, module


def test_camera_moves_by_speed_times_time_scaled_by_scene_depth():
    for scale in (1.0, 10.0):
        cam = FlyCamera(scene_scale=scale)
        cam.settings.smoothing = 1e9  # no ramp: velocity follows the keys at once
        for _ in range(50):
            cam.update(0.02, MoveInput(forward=1.0))
        assert cam.pose[2, 3] == pytest.approx(cam.settings.speed * scale * 1.0)
        cam.update(0.5, MoveInput(right=1.0, fast=True))
        assert cam.pose[0, 3] == pytest.approx(cam.settings.speed * scale * 4 * 0.5)


def test_mouse_look_turns_right_and_down_without_roll():
    cam = FlyCamera()
    cam.look(100, 0)  # mouse right: forward turns to +x
    assert cam.pose[0, 2] > 0.2
    cam.look(0, 100)  # mouse down: forward turns to +y (down)
    assert cam.pose[1, 2] > 0.2
    assert abs(cam.pose[1, 0]) < 1e-9  # the right axis stays level (no roll)
    cam.look(0, 1e5)  # pitch is clamped short of straight down
    assert cam.pose[1, 2] < np.sin(np.radians(86))


def test_locked_camera_ignores_input():
    cam = FlyCamera(locked=True)
    assert not cam.update(0.1, MoveInput(forward=1.0))
    cam.look(100, 100)
    np.testing.assert_array_equal(cam.pose, np.eye(4))


def test_resampled_path_keeps_ends_and_spaces_evenly():
    start, end = np.eye(4), look_at([1.0, 0.0, 3.0], [2.0, 0.0, 10.0])
    # An uneven flight: dense at the start, sparse at the end.
    ts = np.linspace(0, 1, 40) ** 3
    path = FlightPath(start, min_step=0.0)
    for t in ts[1:]:
        path.record(interpolate_pose(start, end, float(t)))
    out = path.resampled(16)
    np.testing.assert_allclose(out[0], start, atol=1e-9)
    np.testing.assert_allclose(out[-1], end, atol=1e-9)
    steps = np.linalg.norm(np.diff(out[:, :3, 3], axis=0), axis=1)
    assert steps.max() / steps.min() < 1.3
    for R in out[:, :3, :3]:
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-6)


def test_empty_path_cannot_be_resampled():
    with pytest.raises(ValueError, match="empty"):
        FlightPath(np.eye(4)).resampled(8)
    with pytest.raises(ValueError):
        resample_path(np.stack([np.eye(4)] * 3), 1)


@pytest.mark.parametrize("name", ["backward", "left", "right", "forward"])
def test_stock_paths_start_at_the_view_and_move_the_right_way(name):
    poses = stock_path(name, np.eye(4), 24, scene_scale=4.0)
    assert poses.shape == (24, 4, 4)
    np.testing.assert_allclose(poses[0], np.eye(4), atol=1e-9)
    end = poses[-1]
    if name == "backward":
        assert end[2, 3] < -1.0
    elif name == "forward":
        assert end[2, 3] > 1.0
    elif name == "left":
        assert end[0, 2] < -0.3  # the view direction turned to -x (left)
    else:
        assert end[0, 2] > 0.3


def _frame(i: int, t: float) -> ClipFrame:
    pose = np.eye(4)
    pose[0, 3] = i
    return ClipFrame(i, pose, np.eye(3), np.zeros((2, 2, 3), np.uint8), arrived_at=t)


def test_player_waits_for_a_safe_buffer_at_a_slow_arrival_rate():
    player = ClipPlayer(PlayerSettings(min_prebuffer=2, max_prebuffer=100))
    # 48 frames at 24 fps, arriving at 12 fps: must buffer about half before starting.
    for i in range(30):
        player.add("j", _frame(i, i / 12.0), 48, 24.0, loop=False)
        if player.ready_to_start(player.queue[0]):
            break
    assert 20 <= i + 1 <= 26  # (48 - b) / 12 <= 47 / 24  ->  b >= 24.5 - ~1


def test_player_starts_at_once_when_frames_arrive_fast_enough():
    player = ClipPlayer(PlayerSettings(min_prebuffer=2))
    player.add("j", _frame(0, 0.0), 48, 24.0, loop=False)
    assert not player.ready_to_start(player.queue[0])  # one frame: no rate yet
    player.add("j", _frame(1, 0.02), 48, 24.0, loop=False)
    assert player.ready_to_start(player.queue[0])


def test_player_plays_at_clip_fps_stalls_on_gaps_and_ends():
    player = ClipPlayer(PlayerSettings(min_prebuffer=1, max_prebuffer=1, fade_s=0))
    for i in range(3):
        player.add("j", _frame(i, 0.0), 5, 10.0, loop=False)
    shown = [player.update(0.0, 0.0).frame.index]
    for _ in range(6):  # 0.05 s steps at 10 fps: each frame twice
        shown.append(player.update(0.05, 0.0).frame.index)
    assert shown[:6] == [0, 0, 1, 1, 2, 2] and player.state == PlayerState.STALLED
    player.add("j", _frame(3, 0.0), 5, 10.0, loop=False)
    player.add("j", _frame(4, 0.0), 5, 10.0, loop=False)
    player.finish("j")
    got = [player.update(0.05, 0.0) for _ in range(6)]
    assert [g.frame.index for g in got if g is not None and not g.ended][:3] == [3, 3, 4]
    assert any(g is not None and g.ended for g in got) and not player.active


def test_player_reports_its_ticks_and_the_time_its_clock_held_for_frames(caplog):
    """The clip's end line: its wall time is its own length (give or take the last tick) plus
    the time its clock held for frames not received yet."""
    player = ClipPlayer(PlayerSettings(min_prebuffer=1, max_prebuffer=1, fade_s=0))
    for i in range(3):
        player.add("j", _frame(i, 0.0), 5, 10.0, loop=False)
    now = 0.0
    player.update(0.0, now)

    def tick(dt):
        nonlocal now
        now += dt
        return player.update(dt, now)

    for _ in range(3):  # 0.36 s: 0.06 s into frame 3, which is not here: back to its start
        tick(0.12)
    assert player.state == PlayerState.STALLED
    assert player.waited == pytest.approx(0.06)
    for _ in range(2):  # held
        tick(0.2)
    player.add("j", _frame(3, 0.0), 5, 10.0, loop=False)
    player.add("j", _frame(4, 0.0), 5, 10.0, loop=False)
    assert tick(0.1).frame.index == 3  # held until this tick, then frame 3 from its start
    with caplog.at_level("INFO", logger="explorer.player"):
        assert tick(0.25).ended  # 0.55 s of clip played: past its 0.5 s
    assert player.waited == pytest.approx(0.06 + 0.4 + 0.1)
    assert "5/5 frames received in 1.11 s (7 ticks, longest 0.25 s; 0.56 s waiting for " \
           "frames)" in caplog.text


def test_player_discard_reports_frames_never_shown():
    player = ClipPlayer(PlayerSettings(min_prebuffer=1, max_prebuffer=1))
    for i in range(4):
        player.add("loop", _frame(i, 0.0), 4, 10.0, loop=True)
    player.update(0.0, 0.0)
    assert player.take_credits() == 1  # frame 0 is on screen
    player.discard("loop")
    assert player.take_credits() == 3 and not player.active


def test_progress_messages_do_not_linger_once_the_clip_streams():
    from explorer.testing import FakeBackend
    from protocol.codec import encode_image, k_list, pose_list
    from protocol.messages import Frame, Progress

    session = _session_with_scene(FakeBackend())
    job = session.send_transition(np.stack([np.eye(4)] * 4), 24.0)
    session.handle(Progress(job_id=job, stage="fill", step=1, total=3,
                            message="filling unseen parts of the path"), [])
    assert session.status == "filling unseen parts of the path"
    ref, data = encode_image(np.zeros((8, 8, 3), np.uint8), "jpeg", 0)
    session.handle(Frame(job_id=job, index=0, num_frames=4, pose=pose_list(np.eye(4)),
                         K=k_list(np.eye(3)), image=ref, fps=24.0), [memoryview(data)])
    session.handle(Progress(job_id=job, stage="fill", step=2, total=3,
                            message="filling unseen parts of the path"), [])
    assert session.status == "transition streaming"



def test_a_frame_whose_image_cannot_be_read_is_skipped_and_its_credit_given_back(caplog):
    """The client leaves image headers to ``decode_image``: a frame whose JPEG disagrees with
    its reference reaches the session, which skips it (a warning) and grants its credit back
    at once instead of stopping the explorer."""
    from explorer.testing import FakeBackend
    from protocol.codec import encode_image, k_list, pose_list
    from protocol.messages import Frame, ImageRef

    session = _session_with_scene(FakeBackend())
    job = session.send_transition(np.stack([np.eye(4)] * 4), 24.0)
    granted = session.credits_granted
    _, data = encode_image(np.zeros((8, 16, 3), np.uint8), "jpeg", 0)
    lying = ImageRef(blob=0, codec="jpeg", width=8, height=8)
    with caplog.at_level("WARNING", logger="explorer.session"):
        session.handle(Frame(job_id=job, index=0, num_frames=4, pose=pose_list(np.eye(4)),
                             K=k_list(np.eye(3)), image=lying, fps=24.0), [memoryview(data)])
    assert "frame 0 of " in caplog.text and "header says 16x8" in caplog.text
    assert session.credits_granted == granted + 1
    assert session.frames_received == 0 and session.player.frames_received == 0
    ref, good = encode_image(np.zeros((8, 8, 3), np.uint8), "jpeg", 0)
    session.handle(Frame(job_id=job, index=1, num_frames=4, pose=pose_list(np.eye(4)),
                         K=k_list(np.eye(3)), image=ref, fps=24.0), [memoryview(good)])
    assert session.frames_received == 1

def _session_with_scene(backend):
    from explorer.player import ClipPlayer
    from explorer.session import ExplorerSession

    session = ExplorerSession(backend, ClipPlayer(), lambda *a: None)
    session.open_scene(np.zeros((48, 64, 3), np.uint8))
    while (event := backend.poll()) is not None:
        session.handle(event.msg, event.blobs)
    return session


def test_clips_are_asked_for_in_the_frame_codec_of_the_settings():
    """``network.frame_codec``: auto is raw from the explorer's own backend and jpeg from any
    other; the session puts it in every Transition and Dynamics, and the frames come back
    in it."""
    from explorer.player import ClipPlayer
    from explorer.session import ExplorerSession
    from explorer.settings import NetworkSettings
    from explorer.testing import FakeBackend
    from protocol.messages import Dynamics, Frame, Transition

    assert NetworkSettings(frame_codec="auto").codec_for(local_backend=True) == "raw"
    assert NetworkSettings(frame_codec="auto").codec_for(local_backend=False) == "jpeg"
    assert NetworkSettings(frame_codec="png").codec_for(local_backend=True) == "png"
    for setting, asked in (("raw", "raw"), ("jpeg", "jpeg"), ("auto", "jpeg")):
        backend = FakeBackend()
        codec = NetworkSettings(frame_codec=setting).codec_for(local_backend=False)
        session = ExplorerSession(backend, ClipPlayer(), lambda *a: None, frame_codec=codec)
        session.open_scene(np.zeros((48, 64, 3), np.uint8))
        while (event := backend.poll()) is not None:
            session.handle(event.msg, event.blobs)
        session.send_transition(np.stack([np.eye(4)] * 3), 24.0)
        session.send_dynamics(np.eye(4), [], None, 4, 24.0)
        jobs = [m for m, _ in backend.sent if isinstance(m, Transition | Dynamics)]
        assert [m.frame_codec for m in jobs] == [asked, asked]
        frames = []
        while (event := backend.poll()) is not None:
            if isinstance(event.msg, Frame):
                frames.append(event.msg.image.codec)
        assert frames and set(frames) == {asked}
