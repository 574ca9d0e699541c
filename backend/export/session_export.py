"""A saved session exported as splats, points, a camera path or one video.

``export_session(session, kind, out, progress)``: the cloud streams from the session's PLY a
chunk at a time (``geometry.ply.iter_ply``) through ``clouds``; the path is every frame's
camera of the clips that were not undone, in order (keyframes: where each clip starts and
the last clip ends), at the first clip's frame rate; the video joins those clips.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backend.export.session_source import ExportError, SavedSession
from backend.export.video import join_clips
from protocol.camera_path import CameraPath
from protocol.files.clouds import write_points, write_splats
from protocol.files.splats import SplatSettings

KINDS = ("splats", "points", "path", "video")
SUFFIXES = {"splats": "-splats.ply", "points": "-points.ply", "path": "-path.json", "video": ".mp4"}
CHUNK_POINTS = 1 << 18


@dataclass(frozen=True)
class ExportResult:
    kind: str
    path: Path
    count: int
    """Points, cameras or frames written."""
    seconds: float


def session_path(session: SavedSession) -> CameraPath:
    """Every camera of the session's kept clips as one camera path."""
    clips = [c for c in session.clips if not c.undone]
    if not clips:
        raise ExportError(f"session {session.scene_id} has no clips, so no cameras to export")
    poses = np.concatenate([c.poses for c in clips])
    keys = np.stack([c.poses[0] for c in clips] + [clips[-1].poses[-1]])
    return CameraPath.from_K(poses, session.K, session.width, session.height, clips[0].fps, keys,
                             session.median_depth)


def export_session(session: SavedSession, kind: str, out: str | Path,
                   progress: Callable[[int, int], None] | None = None,
                   settings: SplatSettings | None = None, chunk_size: int = CHUNK_POINTS) -> ExportResult:
    """Write ``session`` as ``kind`` (one of :data:`KINDS`) to ``out``."""
    if kind not in KINDS:
        raise ExportError(f"cannot export as {kind!r}; choose one of {', '.join(KINDS)}")
    out, t0 = Path(out), time.perf_counter()
    if kind in ("splats", "points"):
        from backend.geometry.ply import iter_ply, ply_vertex_count

        if session.cloud_path is None:
            raise ExportError(f"session {session.scene_id} has no cloud")
        count = ply_vertex_count(session.cloud_path)
        chunks = ((c.xyz, c.rgb, c.radius) for c in iter_ply(session.cloud_path, chunk_size))
        if kind == "splats":
            write_splats(chunks, count, out, settings, progress)
        else:
            write_points(chunks, count, out, progress)
    elif kind == "path":
        path = session_path(session)
        path.save(out)
        count = len(path.poses)
        if progress is not None:
            progress(count, count)
    else:
        count = join_clips(session.clips, out, progress)
    return ExportResult(kind, out, count, time.perf_counter() - t0)
