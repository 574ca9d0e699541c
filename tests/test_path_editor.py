"""The keyframe path editor: the spline through the keyframes, orbits, camera-path files, and
the explorer's keys (headless, through the real pyglet handlers). The real window is in
``test_path_editor_xvfb.py``."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from explorer.path_editor import PathEditor, frame_params
from protocol.camera import look_at, rotation_about
from protocol.camera_path import CameraPath, CameraPathError
from protocol.trajectory import keyframe_spline, pose_steps


def _keys() -> list[np.ndarray]:
    out = []
    for i, (x, z, yaw) in enumerate([(0, 0, 0), (0.5, 1.0, 0.3), (0.6, 3.0, -0.2), (2.0, 3.5, 0.8)]):
        p = np.eye(4)
        p[:3, :3] = rotation_about([0, 1, 0], yaw) @ rotation_about([1, 0, 0], 0.05 * i)
        p[:3, 3] = [x, -0.1 * i, z]
        out.append(p)
    return out


def test_the_path_passes_through_every_keyframe_at_an_even_speed():
    editor = PathEditor()
    for k in _keys():
        editor.add(k)
    poses = editor.path(None, 48)
    assert poses.shape == (48, 4, 4)
    for k in _keys():  # each keyframe is one of the frames, exactly
        assert min(np.abs(poses - k).max(axis=(1, 2))) < 1e-9
    params = frame_params(np.stack(_keys()), 48)
    assert set(range(4)) <= set(params.tolist()) and np.all(np.diff(params) > 0)
    # frames shared by length: steps more even than with as many frames per segment
    def unevenness(p: np.ndarray) -> float:
        dt, da = pose_steps(p)
        return float((dt + da).max() / (dt + da).min())

    even_params = keyframe_spline(np.stack(_keys()), 49)  # 16 frames a segment
    assert unevenness(poses) < 1.5 < unevenness(even_params)


def test_editing_inserts_after_the_selection_and_deletes_it():
    editor = PathEditor()
    a, b, c, d = _keys()
    editor.add(a)
    editor.add(c)
    editor.select(-1)
    editor.add(b)  # after a, before c
    assert [np.allclose(x, y) for x, y in zip(editor.keyframes, (a, b, c), strict=True)] == [True] * 3
    assert editor.selected == 1
    assert editor.remove_selected() and editor.selected == 1 and len(editor) == 2
    np.testing.assert_array_equal(editor.keyframes[1], c)
    # the path starts where the camera's path starts when the first keyframe is elsewhere
    poses = editor.path(d, 12)
    np.testing.assert_allclose(poses[0], d, atol=1e-12)


def test_orbit_keeps_the_pivot_at_the_same_place_in_view():
    pose = look_at(np.array([0.0, -1.0, 0.0]), np.array([0.3, 0.0, 5.0]))
    pivot = np.array([0.3, 0.0, 5.0])
    orbit = PathEditor.orbit_keyframes(pose, pivot, np.deg2rad(60), 3)
    assert len(orbit) == 3
    cam = np.linalg.inv(pose) @ np.append(pivot, 1)
    for p in orbit:
        np.testing.assert_allclose(np.linalg.inv(p) @ np.append(pivot, 1), cam, atol=1e-9)
    turned = np.arccos(np.clip((np.trace(pose[:3, :3].T @ orbit[-1][:3, :3]) - 1) / 2, -1, 1))
    assert turned == pytest.approx(np.deg2rad(60))


def test_camera_path_files_round_trip_and_refuse_bad_ones(tmp_path):
    K = np.array([[300.0, 0, 160], [0, 300.0, 120], [0, 0, 1]])
    keys = np.stack(_keys())
    editor = PathEditor()
    editor.replace(keys)
    saved = editor.to_file(tmp_path / "p.json", None, 30, 1.0, K, 320, 240, 24.0, median_depth=2.0)
    back = CameraPath.load(tmp_path / "p.json")
    np.testing.assert_allclose(back.poses, saved.poses, atol=1e-12)
    np.testing.assert_allclose(back.keyframes, keys, atol=1e-12)
    np.testing.assert_allclose(back.K(), K, atol=1e-9)
    assert (back.width, back.height, back.fps, back.median_depth) == (320, 240, 24.0, 2.0)
    # loaded into a scene twice as deep, the path is twice as long
    other = PathEditor()
    other.from_file(back, median_depth=4.0)
    np.testing.assert_allclose(np.stack(other.keyframes)[:, :3, 3], 2 * keys[:, :3, 3], atol=1e-12)
    data = json.loads((tmp_path / "p.json").read_text())
    for broken, says in ((dict(data, render_width=0), "render_width"),
                         (dict(data, camera_path=[]), "camera_path"),
                         (dict(data, camera_type="fisheye"), "perspective"),
                         (dict(data, camera_path=[{"camera_to_world": [1] * 16, "fov": 50}]), "pose")):
        with pytest.raises(CameraPathError, match=says):
            CameraPath.from_json(broken)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(CameraPathError, match="not JSON"):
        CameraPath.load(tmp_path / "bad.json")


def test_the_explorers_export_path_does_not_import_torch():
    code = ("import sys; import explorer.path_tools, protocol.files.clouds, protocol.camera_path\n"
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- the keys, in the headless app ------------------------------------------------------------

pytest.importorskip("moderngl")


@pytest.fixture(scope="module")
def _egl():
    import moderngl

    try:
        moderngl.create_standalone_context(backend="egl").release()
    except Exception as exc:
        pytest.skip(f"no EGL: {exc}")


@pytest.fixture()
def app(tmp_path, monkeypatch, _egl):
    from explorer.window import configure_pyglet

    configure_pyglet(headless=True)
    import pyglet

    from explorer.settings import ExplorerSettings
    from explorer.testing import FakeBackend
    from explorer.window import ExplorerWindow

    monkeypatch.chdir(tmp_path)
    settings = ExplorerSettings.load()
    settings.paths.transition_frames = 24
    backend = FakeBackend(size=(64, 48))
    win = ExplorerWindow(backend, settings, visible=False, size=(160, 120))
    win.backend, win.key = backend, pyglet.window.key
    win.explorer.session.open_scene(np.zeros((48, 64, 3), np.uint8))
    for _ in range(3):
        win.tick(1 / 30)
    yield win
    win.close()


def key(win, symbol, ticks=0, modifiers=0):
    win.window.dispatch_event("on_key_press", symbol, modifiers)
    win.window.dispatch_events()
    for _ in range(ticks):
        win.tick(1 / 30)
    win.window.dispatch_event("on_key_release", symbol, modifiers)
    win.window.dispatch_events()


def test_keys_make_preview_and_send_a_keyframe_path(app):
    from protocol.codec import read_array
    from protocol.messages import Transition

    ex, k = app.explorer, app.key
    added = []
    for move in (None, k.D, k.W):
        if move is not None:
            key(app, move, ticks=12)
        key(app, k.K)
        added.append(ex.camera.pose.copy())
    assert len(ex.path_tools.editor) == 3
    key(app, k.DELETE)  # the selected (last) one goes, and comes back
    assert len(ex.path_tools.editor) == 2
    key(app, k.K)
    assert len(ex.path_tools.editor) == 3
    # the preview flies the path at the clip's rate: 24 frames at 24 fps take 1 s of app clock
    key(app, k.HOME)
    key(app, k.P)
    poses = ex.path_tools.transition_poses()
    assert ex.path_tools.editor.previewing
    ticks = 0
    while ex.path_tools.editor.previewing and ticks < 100:
        app.tick(1 / 30)
        ticks += 1
        if ex.path_tools.editor.previewing:
            assert min(np.abs(poses - ex.camera.pose).max(axis=(1, 2))) < 1e-9  # on the path
    assert 29 <= ticks <= 32
    np.testing.assert_allclose(ex.camera.pose, added[0], atol=1e-9)  # back at the start
    key(app, k.ENTER)
    (msg, blobs), = app.backend.of_type(Transition)
    sent = read_array(msg.poses, blobs)
    for pose in added:
        assert min(np.abs(sent - pose).max(axis=(1, 2))) < 1e-4
    assert len(ex.path_tools.editor) == 0  # a new path starts after sending


def test_f5_f6_save_and_load_and_f8_exports_the_world(app, tmp_path):
    from plyfile import PlyData

    ex, k = app.explorer, app.key
    key(app, k.K)
    key(app, k.W, ticks=10)
    key(app, k.K)
    key(app, k.F5)
    (saved,) = (tmp_path / "paths").glob("*-path.json")
    keys = [p.copy() for p in ex.path_tools.editor.keyframes]
    ex.path_tools.editor.clear()
    key(app, k.F6)
    np.testing.assert_allclose(np.stack(ex.path_tools.editor.keyframes), np.stack(keys), atol=1e-9)
    key(app, k.F8)
    ex.path_tools.export_thread.join(60)
    v = PlyData.read(str(ex.path_tools.exported))["vertex"]
    assert len(v) == ex.points.count == 64 * 48
    assert [p.name for p in v.properties][:3] == ["x", "y", "z"] and "rot_3" in v.properties[-1].name


def test_orbit_picks_the_point_under_the_cursor_from_the_depth_buffer(app):
    ex = app.explorer
    ex.path_tools.pointer = (80.0, 60.0)  # the window's centre
    pivot = ex.path_tools.pick_point(80.0, 60.0)
    # the fake scene is a plane at the median depth (4) facing the camera
    assert pivot[2] == pytest.approx(4.0, rel=0.01) and abs(pivot[0]) < 0.05 and abs(pivot[1]) < 0.05
    key(app, app.key.O)
    assert len(ex.path_tools.editor) == 1 + ex.settings.editor.orbit_keyframes
    last = ex.path_tools.editor.keyframes[-1]
    np.testing.assert_allclose(ex.camera.pose, last, atol=1e-12)
    assert np.linalg.norm(last[:3, 3] - pivot) == pytest.approx(np.linalg.norm(pivot), rel=1e-6)


def test_the_editor_keys_are_bound_and_listed_in_the_f1_table():
    from explorer.window import configure_pyglet

    configure_pyglet(headless=True)  # before pyglet.window is imported, as the app fixture does
    from pyglet.window import key

    from explorer.path_tools import ACTIONS
    from explorer.settings import KeyBindings

    bindings = KeyBindings.load()
    symbols = bindings.symbol_map()
    expected = {key.K: "keyframe", key.O: "orbit", key.DELETE: "delete_keyframe", key.P: "preview",
                key.BRACKETLEFT: "prev_keyframe", key.BRACKETRIGHT: "next_keyframe",
                key.F5: "save_path", key.F6: "load_path", key.F8: "export_world"}
    assert {s: symbols[s] for s in expected} == expected
    assert set(ACTIONS) == set(expected.values())
    listed = " | ".join(f"{r.keys}: {r.does}" for r in bindings.help.rows)
    for words in ("K / O", "keyframe", "Delete", "P", "F5 / F6", "F8", "splats"):
        assert words in listed


def test_a_bad_path_file_is_one_error_line_before_anything_starts(tmp_path, capsys):
    from explorer.cli import main

    (tmp_path / "p.json").write_text('{"render_width": 64}')
    photo = tmp_path / "photo.png"
    from PIL import Image

    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(photo)
    assert main(["explore", str(photo), "--path", str(tmp_path / "p.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --path") and "render_height" in err[0]
    assert main(["demo", "--path", str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
