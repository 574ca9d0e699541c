"""Session folders: what a crash can leave behind is finished or discarded at start."""

from __future__ import annotations

import numpy as np
import pytest

from backend.geometry.cloud import PointCloud
from backend.geometry.store import PointStore
from backend.session import SessionExists, SessionMissing, SessionStore, read_mp4
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
    owned = sessions.owned_by("o")
    image = np.zeros((16, 16, 3), np.uint8)
    a = owned.create("a", image, np.eye(3), SceneText(), "classic", 1.0, store=_store())
    assert a.startswith("a-") and len(a) == len("a-") + 8  # a random part
    frames = [np.full((16, 16, 3), i * 20, np.uint8) for i in range(5)]
    clip = owned.add_clip("a", "transition", frames, np.tile(np.eye(4), (5, 1, 1)), np.eye(3), 24.0,
                          np.eye(4), store=_store(80))
    assert clip == f"{a}/clips/0001.mp4"
    manifest = owned.manifest("a")
    # what a crash at various moments leaves
    (tmp_path / ".new-x1").mkdir()
    (tmp_path / ".new-x1" / "input.png").write_bytes(b"half")
    (tmp_path / a / "clips" / ".f00.part.mp4").write_bytes(b"partial clip")
    (tmp_path / a / "clips" / "0002.mp4").write_bytes(b"clip not in the manifest")
    (tmp_path / a / "cloud-deadbeef.ply").write_bytes(b"cloud ahead of its manifest")
    (tmp_path / a / ".manifest.json.x.part").write_bytes(b"{")
    (tmp_path / a / "original.jpg").write_bytes(b"the explorer's full-size photo")
    assert len(sessions.orphans()) == 5
    report = sessions.recover()
    assert len(report.removed) == 5 and report.quarantined == []
    assert sessions.orphans() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [".dreamjourney-sessions", a]
    assert owned.manifest("a") == manifest
    assert len(read_mp4(tmp_path / clip)) == 5
    assert len(PointStore.load(owned.load("a")["cloud_path"]).cloud()) == 80
    assert (tmp_path / a / "original.jpg").read_bytes() == b"the explorer's full-size photo"


def test_a_saved_session_is_never_overwritten_and_ids_are_per_owner(tmp_path):
    sessions = SessionStore(tmp_path)
    image = np.zeros((8, 8, 3), np.uint8)
    first = sessions.owned_by("o").create("a", image, np.eye(3), SceneText(), "classic", 1.0,
                                          store=_store())
    with pytest.raises(SessionExists):
        sessions.owned_by("o").create("a", image + 1, np.eye(3), SceneText(), "classic", 2.0,
                                      store=_store())
    other = sessions.owned_by("p").create("a", image + 1, np.eye(3), SceneText(), "classic", 2.0,
                                          store=_store())
    assert other != first
    assert sessions.owned_by("o").manifest("a").median_depth == 1.0
    assert sessions.owned_by("p").manifest("a").median_depth == 2.0
    with pytest.raises(SessionMissing, match="no saved session 'a'"):
        sessions.owned_by("q").manifest("a")
    # a restart finds both again
    again = SessionStore(tmp_path)
    assert again.find("o", "a") == first and again.find("p", "a") == other
