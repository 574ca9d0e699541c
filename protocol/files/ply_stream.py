"""Streaming binary PLY output: the header first, then the rows a chunk at a time.

``PlyStream(path, dtype, count)`` writes ``binary_little_endian 1.0`` with one ``vertex``
element whose properties are ``dtype``'s fields in order (float32 ``float``, uint8
``uchar``). Rows go to ``<path>.part``; :meth:`PlyStream.close` checks that exactly ``count``
rows came and renames the file into place, so a failed export never leaves a truncated PLY
under the final name.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

_PLY_NAMES = {np.dtype("<f4"): "float", np.dtype("u1"): "uchar"}


def ply_header(dtype: np.dtype, count: int, comments: Sequence[str] = ()) -> bytes:
    """The header of a binary little-endian PLY with ``count`` vertices of ``dtype``."""
    lines = ["ply", "format binary_little_endian 1.0", *(f"comment {c}" for c in comments),
             f"element vertex {count}"]
    if dtype.names is None or dtype.fields is None:
        raise ValueError(f"a PLY vertex needs named fields, got {dtype}")
    for name in dtype.names:
        field = dtype.fields[name][0]
        kind = _PLY_NAMES.get(field)
        if kind is None:
            raise ValueError(f"PLY property {name}: no PLY type for {field}")
        lines.append(f"property {kind} {name}")
    lines.append("end_header")
    return ("\n".join(lines) + "\n").encode("ascii")


class PlyStream:
    """A PLY file written row chunk by row chunk (see the module docstring)."""

    def __init__(self, path: str | Path, dtype: np.dtype, count: int, comments: Sequence[str] = ()):
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.count = int(count)
        self.written = 0
        self.part = self.path.with_name(f".{self.path.name}.part")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.part, "wb")  # noqa: SIM115 - closed by close()/abort()
        self._file.write(ply_header(self.dtype, self.count, comments))

    def write(self, rows: np.ndarray) -> None:
        if rows.dtype != self.dtype:
            raise TypeError(f"rows must be {self.dtype}, got {rows.dtype}")
        if self.written + len(rows) > self.count:
            raise ValueError(f"more than the {self.count} rows announced in the header")
        self._file.write(np.ascontiguousarray(rows).data.cast("B"))
        self.written += len(rows)

    def close(self) -> Path:
        """Finish the file and move it to its name; an incomplete file is an error."""
        if self.written != self.count:
            self.abort()
            raise ValueError(f"{self.written} rows written, {self.count} announced")
        self._file.close()
        os.replace(self.part, self.path)
        return self.path

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        self.part.unlink(missing_ok=True)

    def __enter__(self) -> PlyStream:
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is not None:
            self.abort()
