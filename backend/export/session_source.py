"""A saved session as the exporters see it: the one place that knows the session folder.

``open_session(SESSION, folder)`` takes a session folder (``sessions/NAME``) or a name under
``folder`` and returns a :class:`SavedSession`: the scene's intrinsics, size and median
depth, the path of its cloud PLY and its clips with their poses. The manifest is read
through ``backend.session.read_session`` (its public reading API, no second parser); only
the clips' sidecar JSON (``clips/NNNN.json``: poses, K, fps) is read here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backend.session import SessionError, read_session
from protocol.files.manifest import saved_folders


class ExportError(Exception):
    """An export cannot be made; the message says why in one line."""


@dataclass(frozen=True)
class SavedClip:
    path: Path
    """The clip's MP4."""
    kind: str
    """``transition`` or ``dynamics``."""
    fps: float
    poses: np.ndarray
    """N x 4 x 4 camera-to-world pose of each frame (OpenCV)."""
    undone: bool
    """Taken back by undo (its file stays, its points are gone)."""


@dataclass(frozen=True)
class SavedSession:
    folder: Path
    scene_id: str
    K: np.ndarray
    """3 x 3 intrinsics in pixels of every view."""
    width: int
    height: int
    median_depth: float
    cloud_path: Path | None
    """The cloud PLY (x y z red green blue radius); None if the session has no cloud."""
    clips: list[SavedClip]


def open_session(session: str | Path, folder: str | Path | None = None) -> SavedSession:
    """The session at ``session`` (a session folder) or with scene id ``session`` under
    ``folder`` (the newest, if several clients saved one so named). The folder is read, never
    claimed or changed."""
    path = Path(session)
    found = path if (path / "manifest.json").is_file() else _by_scene_id(str(session), folder)
    if found is None:
        where = f" or under {folder}" if folder is not None else ""
        raise ExportError(f"no saved session at {session}{where} (see `dreamjourney sessions`)")
    try:
        saved = read_session(found)
    except SessionError as exc:
        raise ExportError(f"cannot read session {session}: {exc}") from None
    try:
        height, width = saved["image"].shape[:2]
        cloud = saved.get("cloud_path")
        clips = [_clip(found, entry) for entry in saved["clips"]]
        return SavedSession(found, saved["scene_id"], np.asarray(saved["K"], np.float64),
                            int(width), int(height), float(saved["median_depth"]),
                            Path(cloud) if cloud is not None and Path(cloud).is_file() else None,
                            clips)
    except (KeyError, TypeError, ValueError) as exc:  # a malformed manifest too
        raise ExportError(f"cannot read session {session}: {exc}") from None


def _by_scene_id(scene_id: str, folder: str | Path | None) -> Path | None:
    if folder is None:
        return None
    root = Path(folder)
    if (root / scene_id / "manifest.json").is_file():
        return root / scene_id
    best: tuple[float, Path] | None = None
    for name, manifest, modified in saved_folders(root):
        if manifest is not None and manifest.scene_id == scene_id and (
                best is None or modified > best[0]):
            best = (modified, root / name)
    return best[1] if best else None


def _clip(folder: Path, entry: dict) -> SavedClip:
    mp4 = folder / entry["file"]
    try:
        meta = json.loads(mp4.with_suffix(".json").read_text())
        poses = np.asarray(meta["poses"], np.float64).reshape(-1, 4, 4)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ExportError(f"clip {entry['file']} has no readable poses: {exc}") from None
    return SavedClip(mp4, str(entry.get("kind", "transition")), float(meta.get("fps", entry.get("fps", 24))),
                     poses, bool(entry.get("undone", False)))
