"""Clouds to files, a chunk at a time: ``write_splats`` and ``write_points``.

Both take the points as an iterable of ``(xyz, rgb, radius)`` chunks and their total count
(the PLY header comes first), so a session's PLY and the explorer's GPU buffer stream
through the same code with one chunk in memory. ``progress(done, total)`` is called after
every chunk. Numpy only (the explorer imports this module).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from protocol.files.ply_stream import PlyStream
from protocol.files.points import FRAME_COMMENTS as POINT_COMMENTS
from protocol.files.points import POINT_DTYPE, point_rows
from protocol.files.splats import FRAME_COMMENTS as SPLAT_COMMENTS
from protocol.files.splats import SplatSettings, splat_dtype, splat_rows

Chunk = tuple[np.ndarray, np.ndarray, np.ndarray]
"""(xyz N x 3 float32, rgb N x 3 uint8, radius N float32) of consecutive points."""
Progress = Callable[[int, int], None]


def _write(rows_of, dtype: np.dtype, comments: list[str], chunks: Iterable[Chunk], count: int,
           out: str | Path, progress: Progress | None) -> Path:
    """Rows of the next chunk are made on a worker thread while this one writes the last
    (numpy and file writes release the GIL); two row buffers take turns."""
    buffers: list[np.ndarray | None] = [None, None]

    def make(k: int, chunk: Chunk) -> np.ndarray:
        buf = buffers[k % 2]
        if buf is None or len(buf) < len(chunk[0]):
            buf = buffers[k % 2] = np.zeros(len(chunk[0]), dtype)
        return rows_of(*chunk, buf)

    with PlyStream(out, dtype, count, comments) as ply, ThreadPoolExecutor(1) as worker:
        pending = None
        for k, chunk in enumerate(chunks):
            made = worker.submit(make, k, chunk)
            if pending is not None:
                ply.write(pending.result())
                if progress is not None:
                    progress(ply.written, count)
            pending = made
        if pending is not None:
            ply.write(pending.result())
            if progress is not None:
                progress(ply.written, count)
        return ply.close()


def write_splats(chunks: Iterable[Chunk], count: int, out: str | Path,
                 settings: SplatSettings | None = None, progress: Progress | None = None) -> Path:
    """A 3D Gaussian splat PLY (``splats``) of ``count`` points (default :class:`SplatSettings`)."""
    settings = settings or SplatSettings()
    return _write(lambda xyz, rgb, radius, buf: splat_rows(xyz, rgb, radius, settings, buf),
                  splat_dtype(settings.sh_degree), SPLAT_COMMENTS, chunks, count, out, progress)


def write_points(chunks: Iterable[Chunk], count: int, out: str | Path,
                 progress: Progress | None = None) -> Path:
    """A coloured point PLY (``points``) of ``count`` points."""
    return _write(lambda xyz, rgb, radius, buf: point_rows(xyz, rgb, buf), POINT_DTYPE, POINT_COMMENTS,
                  chunks, count, out, progress)
