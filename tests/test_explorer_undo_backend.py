"""Undo on the real backend: a finished transition's points, pose and clip are taken back,
over a real socket, and the session folder records it."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from backend.server import Backend, BackendConfig
from backend.session import SessionStore
from protocol import trajectory
from protocol.scripted import ScriptedClient

SCENE = "/work/shared/scenes/03_ancient.jpg"


def test_undo_drops_the_last_transition(tmp_path):
    with Image.open(SCENE) as im:
        photo = np.asarray(im.convert("RGB").resize((128, 72)))
    config = BackendConfig(bind="tcp://127.0.0.1:*", sessions=tmp_path)
    with Backend(config) as backend, ScriptedClient(backend.address, timeout_s=600) as client:
        opened = client.open_scene(photo, scene_id="undo-test")
        n0 = opened.points.count()
        nothing = client.undo("undo-test")
        assert nothing.job_id is None and nothing.total_points == n0
        poses = trajectory.stock_path("backward", n_frames=6, median_depth=opened.scene.median_depth,
                                  start=np.eye(4))
        result = client.transition("undo-test", poses)
        grown = n0 + result.points.count()
        assert result.points.count() > 0 and result.points.total == grown
        undone = client.undo("undo-test")
        assert undone.job_id == result.job_id and undone.total_points == n0
        assert client.undo("undo-test").job_id is None  # only one transition to take back
        resumed = client.open_scene(None, scene_id="undo-test", resume=True)
        assert resumed.points.count() == n0  # the saved cloud is the truncated one
    folder = tmp_path / resumed.scene.session
    manifest = json.loads((folder / "manifest.json").read_text())
    (clip,) = [c for c in manifest["clips"] if c["kind"] == "transition"]
    assert clip["undone"] is True and clip["undo_of"] == result.job_id
    # the truncated cloud was committed as a new file; the clip stays; nothing is left over
    assert (folder / manifest["cloud"]).is_file()
    assert (folder / clip["file"]).is_file()
    assert SessionStore(tmp_path).orphans() == []
