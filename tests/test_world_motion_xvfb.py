"""A living world on screen: `dreamjourney explore` with a real local backend (classic engine)
in a real X window (Xvfb), an arrow dragged on the river of a shared scene with xdotool, Space;
once the dynamics job is done and its loop stopped, the river's points go on moving in the
cloud itself. The screen is read through the X server (ffmpeg x11grab).

- camera still: two grabs at least 0.5 s apart (and showing different frames) differ inside
  the region that moves (Farneback median > 0.5 px over its textured pixels: a flat patch
  of water moves unseen) and not outside it (p99 < 0.25 px);
- after flying forward with W: the view with world motion on against the same pose at rest
  (M) differs only inside the region, projected at that pose.

The region is what the backend saved: the session's cloud (PLY with its motion columns)
projected with the window's camera.
"""

from __future__ import annotations

import json
import re
import time

import cv2
import numpy as np
import pytest
import test_explorer_xvfb as xvfb

from backend.geometry.ply import read_ply
from tests.test_explorer_render import synthetic_depth

pytestmark = [pytest.mark.gl, pytest.mark.slow]
LOG_DEADLINE = 600.0
SCENE = "/work/shared/scenes/03_ancient.jpg"  # a river under a bridge, 512 x 512
WINDOW = 480
display = xvfb.display
App, wait_for, xdo = xvfb.App, xvfb.wait_for, xvfb.xdo


def moving_mask(tmp_path, pose: np.ndarray) -> np.ndarray:
    """Window pixels the saved cloud's moving points cover at ``pose`` (camera-to-world)."""
    (folder,) = [p for p in (tmp_path / "sessions").iterdir() if not p.name.startswith(".")]
    manifest = json.loads((folder / "manifest.json").read_text())
    cloud = read_ply(folder / manifest["cloud"])
    assert cloud.motion is not None, "the session holds no moving points"
    moving = cloud.motion[:, 3] > 0
    K = np.array(manifest["K"]) * (WINDOW / 512)
    cam = (cloud.xyz[moving].astype(np.float64) - pose[:3, 3]) @ pose[:3, :3]
    cam = cam[cam[:, 2] > 1e-3]
    u = (K[0, 0] * cam[:, 0] / cam[:, 2] + K[0, 2]).astype(int)
    v = (K[1, 1] * cam[:, 1] / cam[:, 2] + K[1, 2]).astype(int)
    ok = (u >= 0) & (u < WINDOW) & (v >= 0) & (v < WINDOW)
    mask = np.zeros((WINDOW, WINDOW), np.uint8)
    mask[v[ok], u[ok]] = 1
    return cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8)) > 0


def flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Farneback flow magnitude (px) from grab ``a`` to grab ``b``."""
    ga, gb = (cv2.cvtColor(x, cv2.COLOR_RGB2GRAY) for x in (a, b))
    f = cv2.calcOpticalFlowFarneback(ga, gb, None, 0.5, 3, 15, 3, 5, 1.2, 0)
    return np.hypot(f[..., 0], f[..., 1])


def grown(mask: np.ndarray, px: int) -> np.ndarray:
    return cv2.dilate(mask.astype(np.uint8), np.ones((2 * px + 1, 2 * px + 1), np.uint8)) > 0


def shrunk(mask: np.ndarray, px: int) -> np.ndarray:
    return cv2.erode(mask.astype(np.uint8), np.ones((2 * px + 1, 2 * px + 1), np.uint8)) > 0


def textured(view: np.ndarray, min_gradient: float = 3.0) -> np.ndarray:
    """Pixels with texture optical flow can follow (a flat patch moves unseen)."""
    grey = cv2.GaussianBlur(cv2.cvtColor(view, cv2.COLOR_RGB2GRAY).astype(np.float32), (0, 0), 1.5)
    gy, gx = np.gradient(grey)
    return np.hypot(gx, gy) >= min_gradient


def later_grab(app, first: np.ndarray, after_s: float) -> np.ndarray:
    """A grab at least ``after_s`` seconds after ``first`` was taken that shows another frame
    (a slow renderer may still show the same one)."""
    t0 = time.monotonic()
    shots = [first]

    def new_frame() -> bool:
        shots.append(app.screen())
        return time.monotonic() - t0 >= after_s and not np.array_equal(shots[-1], first)

    assert wait_for(new_frame, 60, every=after_s / 4), "the window showed no new frame"
    return shots[-1]


def test_the_river_keeps_moving_while_the_camera_is_still_and_flies(display, tmp_path):
    np.save(tmp_path / "depth.npy", synthetic_depth(512, 512))
    app = App(display, tmp_path, SCENE, "--depth", str(tmp_path / "depth.npy"), "--size",
              f"{WINDOW}x{WINDOW}", "--engine", "classic")
    try:
        app.wait_log(r"scene \S+ ready", timeout=LOG_DEADLINE)
        app.key("F2")  # the view only
        # 1. an arrow along the river (under the bridge, left to right), then Space
        y, x0, x1 = int(0.88 * WINDOW), int(0.50 * WINDOW), int(0.70 * WINDOW)
        xdo(display, "mousemove", "--window", app.wid, str(x0), str(y))
        xdo(display, "mousedown", "1")
        for x in np.linspace(x0, x1, 6)[1:]:
            xdo(display, "mousemove", "--window", app.wid, str(int(x)), str(y))
        xdo(display, "mouseup", "1")
        xdo(display, "mousemove", "--window", app.wid, "2", "2")  # the pointer off the view
        app.key("space")
        job = app.wait_log(r"job (dynamics-\S+) done", timeout=LOG_DEADLINE)[0]
        app.wait_log(rf"clip {job} looping", timeout=LOG_DEADLINE)
        app.key("space")  # stop the clip: what moves now is the cloud
        app.wait_log(rf"dynamics {job} stopped")
        region = moving_mask(tmp_path, np.eye(4))
        assert region.mean() > 0.01, region.mean()
        # 2. camera still: two grabs 0.5 s apart differ inside the region only
        app.screen()  # a frame after the stop has surely been shown
        first = app.screen()
        second = later_grab(app, first, 0.5)
        mag = flow(first, second)
        for name, img in (("still-0", first), ("still-1", second)):
            cv2.imwrite(str(tmp_path / f"{name}.png"), img[..., ::-1])
        cv2.imwrite(str(tmp_path / "region.png"), region.astype(np.uint8) * 255)
        inside, outside = shrunk(region, 6) & textured(first), ~grown(region, 24)
        print(f"\nstill: median flow inside {np.median(mag[inside]):.2f} px over {inside.sum()} "
              f"px, p99 outside {np.percentile(mag[outside], 99):.3f} px")
        assert np.median(mag[inside]) > 0.5, np.median(mag[inside])
        assert np.percentile(mag[outside], 99) < 0.25, np.percentile(mag[outside], 99)
        # 3. fly forward with W, stop, note the pose (K logs it); the view at rest (M) and
        #    moving differ only inside the region seen from there
        xdo(display, "keydown", "--window", app.wid, "w")
        wait_for(lambda: np.abs(app.screen().astype(int) - first).mean() > 12, 30)
        xdo(display, "keyup", "--window", app.wid, "w")
        app.key("m")
        app.wait_log(r"world motion off")
        app.key("k")
        line = app.wait_log(r"keyframe.*at \[[^\]]*\]")[-1]
        position = np.array([float(v) for v in re.search(r"\[([^\]]*)\]", line)[1].split()])
        app.key("Delete")  # no keyframe marker in the view
        rest = xvfb.settled_screen(app)
        pose = np.eye(4)
        pose[:3, 3] = position
        region = moving_mask(tmp_path, pose)
        app.key("m")
        app.wait_log(r"world motion on")
        # Grabs until a fifth of the region differs from the view at rest (how far the river
        # flows between two grabs depends on how many frames a busy machine lets the window
        # draw); outside the region no grab may differ.
        grabs: list[np.ndarray] = []

        def differing(view: np.ndarray) -> np.ndarray:
            return np.abs(view.astype(int) - rest).max(axis=2) > 8

        def region_moved() -> bool:
            grabs.append(app.screen())
            return differing(grabs[-1])[shrunk(region, 6)].mean() > 0.2

        wait_for(region_moved, 60)
        outside_worst = max(differing(g)[~grown(region, 24)].mean() for g in grabs)
        moving = grabs[-1]
        differs = differing(moving)
        for name, img in (("flown-rest", rest), ("flown-moving", moving)):
            cv2.imwrite(str(tmp_path / f"{name}.png"), img[..., ::-1])
        print(f"flown to z = {position[2]:.3f}: differing pixels inside "
              f"{differs[shrunk(region, 6)].mean():.1%}, outside {differs[~grown(region, 24)].mean():.3%}")
        assert differs[shrunk(region, 6)].mean() > 0.2, differs[shrunk(region, 6)].mean()
        assert outside_worst < 1e-3, outside_worst
        assert position[2] > 0.01  # it did fly forward
        assert app.quit() == 0
    finally:
        app.kill()
    assert "Traceback" not in app.log()
