"""The keyframe path editor in a real X window (Xvfb), driven by xdotool, the screen read
through the X server (ffmpeg x11grab), against a test backend on a real socket: three
keyframes, the drawn path on the screen, the preview at the clip's speed, Enter sends a
transition through the keyframes; then ``explore --path`` sends the saved path at start.
The display, app and screen helpers are ``test_explorer_xvfb``'s."""

from __future__ import annotations

import datetime
import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_explorer_xvfb import SCENE, App, display, wait_for, xdo  # noqa: F401 - display is a fixture

from explorer.path_view import KEY_COLOUR, SPLINE_COLOUR
from explorer.testing import PhotoServer
from protocol.camera_path import CameraPath

pytestmark = [pytest.mark.gl, pytest.mark.slow]


def count_colour(screen: np.ndarray, rgba, tol: int = 40) -> int:
    target = np.array(rgba[:3]) * 255
    return int((np.abs(screen.astype(int) - target).max(axis=2) <= tol).sum())


def hold(env, app: App, key: str, seconds: float) -> None:
    xdo(env, "keydown", "--window", app.wid, key)
    time.sleep(seconds)
    xdo(env, "keyup", "--window", app.wid, key)


def log_time(line: str) -> float:
    stamp = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})", line).group(1)
    return datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def test_keyframes_drawn_previewed_and_sent_through_the_keyframes(display, tmp_path):  # noqa: F811
    server = PhotoServer()
    app = App(display, tmp_path, SCENE, "--backend", server.address, "--size", "320x240")
    try:
        app.wait_log(r"scene \S+ ready")
        app.key("F2")  # no HUD: the screen is the scene and the path
        before = app.screen()
        # 1. three keyframes: here, after flying right, after flying on and up
        app.key("k")
        app.wait_log(r"keyframe 1 of 1")
        hold(display, app, "d", 1.0)
        app.key("k")
        app.wait_log(r"keyframe 2 of 2")
        hold(display, app, "w", 1.0)
        hold(display, app, "e", 0.5)
        app.key("k")
        app.wait_log(r"keyframe 3 of 3")
        # 2. from behind the first keyframe the path lies ahead, drawn: fly back until the
        #    line and the keyframes' markers show (how far a held key flies in a given time
        #    depends on how many frames a busy machine lets the window draw)
        shots: list[np.ndarray] = []

        def path_in_view() -> bool:
            shots.append(app.screen())
            return (count_colour(shots[-1], SPLINE_COLOUR) > 40 and count_colour(
                shots[-1], KEY_COLOUR) > count_colour(before, KEY_COLOUR) + 20)  # markers

        xdo(display, "keydown", "--window", app.wid, "s")
        try:
            in_view = wait_for(path_in_view, 60)
        finally:
            xdo(display, "keyup", "--window", app.wid, "s")
        drawn = shots[-1]
        assert in_view, (count_colour(drawn, SPLINE_COLOUR), count_colour(drawn, KEY_COLOUR),
                         count_colour(before, KEY_COLOUR))
        if os.environ.get("DJ_TEST_SHOTS"):  # to look at it
            Image.fromarray(drawn).save(Path(os.environ["DJ_TEST_SHOTS"]) / "keyframe_path.png")
        assert count_colour(before, SPLINE_COLOUR) < 10  # the photo itself has no such cyan
        # 3. F5 saves the path (its keyframes, exactly); P previews it on the screen
        app.key("F5")
        (saved,) = app.wait_log(r"path saved to (\S+)")
        app.key("p")
        started = app.wait_log(r".*preview started: (\d+) frames at ([\d.]+) fps")
        assert wait_for(lambda: np.abs(app.screen().astype(int) - drawn).mean() > 5, 10)  # it flies
        app.wait_log(r"preview done", timeout=30)
        log = app.log().splitlines()
        t0 = log_time(next(ln for ln in log if "preview started" in ln))
        t1 = log_time(next(ln for ln in log if "preview done" in ln))
        frames, fps = (float(x) for x in re.search(r"preview started: (\d+) frames at ([\d.]+) fps",
                                                  "\n".join(log)).groups())
        assert frames / fps <= t1 - t0 <= frames / fps + 3.0  # the clip's own speed (48 at 24: 2 s)
        # 4. Enter sends it
        app.key("Return")
        assert wait_for(lambda: server.transitions), app.log()
        assert app.quit() == 0, app.log()
    finally:
        app.kill()
        server.close()
    assert started and "Traceback" not in app.log()
    (_, poses), = server.transitions
    keys = CameraPath.load(tmp_path / saved).keyframes
    assert len(keys) == 3
    for k in keys:  # the transition passes through every keyframe
        assert min(np.abs(poses - k).max(axis=(1, 2))) < 1e-4
    np.testing.assert_allclose(poses[0], np.eye(4), atol=1e-5)


def test_explore_path_sends_the_file_once_the_scene_opens(display, tmp_path):  # noqa: F811
    keys = np.tile(np.eye(4), (3, 1, 1))
    keys[1, :3, 3] = [0.4, 0.0, 0.8]
    keys[2, :3, 3] = [0.4, -0.3, 1.6]
    K = np.array([[300.0, 0, 160], [0, 300.0, 120], [0, 0, 1]])
    path = CameraPath.from_K(np.zeros((2, 4, 4)) + np.eye(4), K, 320, 240, 24.0, keys, median_depth=2.0)
    data = path.to_json()
    (tmp_path / "trip.json").write_text(json.dumps(data))
    server = PhotoServer()  # its scenes have a median depth of 4: the path doubles
    app = App(display, tmp_path, SCENE, "--backend", server.address, "--size", "320x240",
              "--path", "trip.json")
    try:
        assert wait_for(lambda: server.transitions), app.log()
        app.wait_log(r"keyframe path sent")
        assert app.quit() == 0, app.log()
    finally:
        app.kill()
        server.close()
    (_, poses), = server.transitions
    for k in keys:
        scaled = k.copy()
        scaled[:3, 3] *= 2.0
        assert min(np.abs(poses - scaled).max(axis=(1, 2))) < 1e-4
