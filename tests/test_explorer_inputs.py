"""Bad inputs to `dreamjourney explore`: one line on stderr, exit code 2, no traceback, and no
window or backend started (DISPLAY points nowhere, so starting either would fail louder)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import msgspec
import numpy as np
import pytest
from PIL import Image

from explorer.camera import FlyCamera
from explorer.inputs import list_sessions, session_name
from explorer.settings import ExplorerSettings, SettingsError

SCENE = "/work/shared/scenes/03_ancient.jpg"


def explore(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, DISPLAY=":9999")
    return subprocess.run([sys.executable, "-m", "explorer.cli", "explore", *args], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "notes.jpg").write_text("this is not a photo\n")
    data = Path(SCENE).read_bytes()
    (d / "cut.jpg").write_bytes(data[: len(data) // 3])
    (d / "folder.jpg").mkdir()
    return d


@pytest.mark.parametrize("args, says", [
    (["{d}/notes.jpg"], "not an image"),
    (["{d}/missing.jpg"], "no such file"),
    (["{d}/cut.jpg"], "cannot be read"),
    (["{d}/folder.jpg"], "is a folder"),
    ([SCENE, "--fov", "-10"], "between 1 and 170 degrees"),
    ([SCENE, "--size", "0x0"], "between 64 and 8192"),
    ([SCENE, "--size", "20000x20000"], "between 64 and 8192"),
    ([SCENE, "--size", "big"], "must look like 1280x720"),
    ([SCENE, "--engine", "Bogus!"], "is not a name"),
    ([SCENE, "--preset", "../paper"], "is not a name"),
    ([], "give a photo to explore, or --resume SESSION"),
    ([SCENE, "--config", "{d}/nothing.toml"], "cannot read"),
])
def test_bad_input_is_one_line_and_exit_code_2(bad_files, tmp_path, args, says):
    out = explore(tmp_path, *(a.format(d=bad_files) for a in args))
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], out.stderr
    assert "Traceback" not in out.stderr + out.stdout


@pytest.fixture(scope="module")
def offering_backend(tmp_path_factory):
    """A real ``dreamjourney serve`` offering both engines (no weights load until a job)."""
    from explorer.backend_process import start_local_backend

    folder = tmp_path_factory.mktemp("offering")
    backend = start_local_backend(["--sessions", str(folder / "sessions"),
                                   "--offer", "classic,diffusion"])
    yield backend
    backend.stop()


@pytest.mark.parametrize("args, says", [
    (["--engine", "bogus"], "--engine 'bogus': this backend offers classic, diffusion"),
    (["--preset", "fastest"], "--preset 'fastest': this backend offers cogvideox, easyanimate, "
                              "interactive, paper, svd, wan, wan-vace"),
])
def test_names_the_backend_does_not_offer(offering_backend, tmp_path, args, says):
    """Engine and preset names are checked against the backend's Welcome, not a list kept
    in the explorer: one line naming what it offers, exit code 2, before a window opens."""
    out = explore(tmp_path, SCENE, "--backend", offering_backend.address, *args)
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.strip().splitlines() if line.startswith("error: ")]
    assert lines == [f"error: {says}"], out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def test_welcome_lists_presets_only_where_an_engine_takes_them(offering_backend):
    from explorer.backend_process import NotOffered, Wanted, check_offered, connect

    settings = ExplorerSettings.load(None)
    client = connect(offering_backend.address, settings, wanted=Wanted("diffusion", "paper"))
    try:
        welcome = client.welcome
        assert welcome is not None and {"interactive", "paper"} <= set(welcome.presets)
        assert welcome.engines == ["classic", "diffusion"]
    finally:
        client.close()
    classic_only = msgspec.structs.replace(welcome, engines=["classic"], presets=[])
    check_offered(classic_only, Wanted("classic", "paper"))  # ignored there, and logged
    with pytest.raises(NotOffered, match="this backend offers classic$"):
        check_offered(classic_only, Wanted("diffusion"))


def test_unknown_settings_key_is_named(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[camera]\nspeeed = 1.0\n")
    with pytest.raises(SettingsError, match="unknown field `speeed` - at `\\$.camera`"):
        ExplorerSettings.load(bad)
    bad.write_text("[recrod]\nfps = 1\n")
    with pytest.raises(SettingsError, match="recrod"):
        ExplorerSettings.load(bad)


def test_a_prebuffer_beyond_the_credits_is_an_error_when_settings_load(tmp_path):
    """A clip waits for max_prebuffer frames but only ever gets network.credits of them: the
    settings say so when they load, instead of being cut down silently."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[player]\nmax_prebuffer = 12\n[network]\ncredits = 8\n")
    with pytest.raises(SettingsError, match="player.max_prebuffer = 12 is more than network.credits = 8"):
        ExplorerSettings.load(bad)
    bad.write_text("[player]\nmax_prebuffer = 8\n[network]\ncredits = 8\n")
    assert ExplorerSettings.load(bad).player.max_prebuffer == 8


def test_version_and_sessions_listing(tmp_path):
    out = subprocess.run([sys.executable, "-m", "explorer.cli", "--version"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("dreamjourney ")
    name = session_name(Path("/photos/My Temple.JPG"), now=0)
    assert name.startswith("My-Temple-19700101-") or name.startswith("My-Temple-1970")
    from backend.session import SessionStore
    from protocol.messages import SceneText

    owned = SessionStore(tmp_path / "sessions").owned_by("me")
    owned.create(name, np.zeros((8, 8, 3), np.uint8), np.eye(3), SceneText(), "classic", 1.0)
    frames = [np.zeros((8, 8, 3), np.uint8)] * 2
    for _ in range(2):
        owned.add_clip(name, "transition", frames, np.tile(np.eye(4), (2, 1, 1)), np.eye(3),
                       24.0, np.eye(4))
    from backend.geometry.store import PointStore

    owned.record_undo(name, "j", PointStore(), np.eye(4))  # the second clip is undone
    (tmp_path / "sessions" / "not-a-session").mkdir()
    (sessions,), skipped = list_sessions(tmp_path / "sessions")
    assert sessions["name"] == name and sessions["clips"] == 1 and skipped == 1
    out = subprocess.run([sys.executable, "-m", "explorer.cli", "sessions", "--folder",
                          str(tmp_path / "sessions")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and name in out.stdout and "1 clips" in out.stdout


def test_far_plane_reaches_past_the_cloud_and_the_whole_photo_fits():
    cam = FlyCamera(scene_scale=1.0)
    cam.extent = 115.0  # the horizon prior puts the sky up to 115 median depths away
    near, far = cam.clip_planes()
    assert near == pytest.approx(0.01) and far >= 115.0 * 1.5
    # A square photo in a 3:2 window: all of it shows, centred (letterboxed).
    cam.fov_x_deg, cam.fit = 60.0, (512, 512)
    K = cam.K(480, 320)
    t = np.tan(np.radians(30))  # the photo's edges: 30 degrees either side (it is square)
    corners = K @ np.array([[-t, -t, 1], [t, t, 1]]).T
    xs, ys = corners[0] / corners[2], corners[1] / corners[2]
    assert xs[0] == pytest.approx(80) and xs[1] == pytest.approx(400)
    assert ys[0] == pytest.approx(0) and ys[1] == pytest.approx(320)


@pytest.mark.slow  # an 8000x6000 photo written and decoded
def test_big_photo_is_scaled_to_the_working_size(tmp_path):
    from explorer.inputs import load_photo

    path = tmp_path / "big.jpg"
    Image.new("RGB", (8000, 6000), (30, 120, 200)).save(path, quality=70)
    settings = ExplorerSettings.load()
    photo = load_photo(path, settings.photo)
    assert photo.image.shape == (768, 1024, 3) and photo.original_size == (8000, 6000)
    settings.photo.working_size = 640
    assert load_photo(path, settings.photo).image.shape == (480, 640, 3)
