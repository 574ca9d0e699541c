"""Session folders: what a crash can leave behind is finished or discarded at start."""

from __future__ import annotations

import numpy as np
import pytest

from backend.geometry.cloud import PointCloud
from backend.geometry.store import PointStore
from backend.session import SessionExists, SessionStore, read_mp4
from protocol.messages import SceneText


def _store(n: int = 50) -> PointStore:
    rng = np.random.default_rng(n)
    store = PointStore(capacity=10_000)
    store.append(PointCloud(rng.standard_normal((n, 3)).astype(np.float32),
                            rng.integers(0, 255, (n, 3), dtype=np.uint8),
                            np.full(n, 0.01, np.float32)))
    return store


def test_recovery_removes_everything_no_manifest_names(tmp_path):
    sessions = SessionStore(tmp_path)
    image = np.zeros((16, 16, 3), np.uint8)
    sessions.create("a", image, np.eye(3), SceneText(), "classic", 1.0, store=_store(), owner="o")
    frames = [np.full((16, 16, 3), i * 20, np.uint8) for i in range(5)]
    sessions.add_clip("a", "transition", frames, np.tile(np.eye(4), (5, 1, 1)), np.eye(3), 24.0,
                      np.eye(4), store=_store(80))
    manifest = sessions.manifest("a")
    # what a crash at various moments leaves
    (tmp_path / ".new-b-x1").mkdir()
    (tmp_path / ".new-b-x1" / "input.png").write_bytes(b"half")
    (tmp_path / "c").mkdir()  # an old-layout folder whose manifest never came
    (tmp_path / "c" / "input.png").write_bytes(b"x")
    (tmp_path / "a" / "clips" / ".f00.part.mp4").write_bytes(b"partial clip")
    (tmp_path / "a" / "clips" / "0002.mp4").write_bytes(b"clip not in the manifest")
    (tmp_path / "a" / "cloud-deadbeef.ply").write_bytes(b"cloud ahead of its manifest")
    (tmp_path / "a" / ".manifest.json.x.part").write_bytes(b"{")
    (tmp_path / "a" / "original.jpg").write_bytes(b"the explorer's full-size photo")
    assert len(sessions.orphans()) == 6
    removed = sessions.recover()
    assert len(removed) >= 6
    assert sessions.orphans() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    assert sessions.manifest("a") == manifest
    assert len(read_mp4(tmp_path / "a" / "clips" / "0001.mp4")) == 5
    assert len(PointStore.load(sessions.load("a")["cloud_path"]).cloud()) == 80
    assert (tmp_path / "a" / "original.jpg").read_bytes() == b"the explorer's full-size photo"


def test_a_saved_session_is_never_overwritten(tmp_path):
    sessions = SessionStore(tmp_path)
    image = np.zeros((8, 8, 3), np.uint8)
    sessions.create("a", image, np.eye(3), SceneText(), "classic", 1.0, store=_store(), owner="o")
    with pytest.raises(SessionExists):
        sessions.create("a", image + 1, np.eye(3), SceneText(), "classic", 2.0, store=_store(), owner="p")
    assert sessions.manifest("a")["owner"] == "o"
