"""Binary PLY for point clouds: ``write_ply(path, cloud)``, ``read_ply(path) -> PointCloud``.

Files are ``binary_little_endian 1.0`` with one ``vertex`` element of properties
``float x, y, z; uchar red, green, blue; float radius`` (radius is an extra property that
plyfile, Open3D and MeshLab read or ignore). The reader accepts any binary little-endian PLY
whose vertex element has x y z and red green blue (radius optional, 0 when absent) with
other vertex properties skipped; it refuses ASCII and big-endian files with a clear error.
``iter_ply(path, chunk_size)`` reads the same files a chunk at a time (exports of large
worlds), ``ply_vertex_count(path)`` reads the header only.
The header is bounded (``MAX_HEADER_BYTES``) and its element counts are checked against the
file's size before anything is read, so a header that claims more than the file holds costs
nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from backend.geometry.cloud import PointCloud

MAX_HEADER_BYTES = 64 * 1024
"""A PLY header longer than this is refused (ours is a few hundred bytes)."""

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "<i2", "int16": "<i2", "ushort": "<u2", "uint16": "<u2",
    "int": "<i4", "int32": "<i4", "uint": "<u4", "uint32": "<u4",
    "float": "<f4", "float32": "<f4", "double": "<f8", "float64": "<f8",
}  # fmt: skip
_VERTEX = np.dtype(
    [("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
     ("red", "u1"), ("green", "u1"), ("blue", "u1"), ("radius", "<f4")]
)  # fmt: skip


def write_ply(path: str | Path, cloud: PointCloud) -> None:
    """Write ``cloud`` as binary little-endian PLY."""
    rows = np.empty(len(cloud), _VERTEX)
    rows["x"], rows["y"], rows["z"] = cloud.xyz.T
    rows["red"], rows["green"], rows["blue"] = cloud.rgb.T
    rows["radius"] = cloud.radius
    header = [
        "ply",
        "format binary_little_endian 1.0",
        "comment dreamjourney point cloud; radius = world-space splat radius",
        f"element vertex {len(cloud)}",
        *(f"property {'uchar' if name in ('red', 'green', 'blue') else 'float'} {name}"
          for name in _VERTEX.names or ()),
        "end_header",
    ]  # fmt: skip
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(rows.tobytes())


def _parse_header(f) -> tuple[list[tuple[str, int, list[tuple[str, str]]]], str]:
    if f.readline(8).strip() != b"ply":
        raise ValueError("not a PLY file")
    elements: list[tuple[str, int, list[tuple[str, str]]]] = []
    fmt = ""
    while True:
        line = f.readline(MAX_HEADER_BYTES)
        if not line:
            raise ValueError("PLY header has no end_header")
        if f.tell() > MAX_HEADER_BYTES:
            raise ValueError(f"PLY header is over {MAX_HEADER_BYTES} bytes")
        words = line.decode("ascii", "replace").split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "end_header":
            return elements, fmt
        try:
            if words[0] == "format":
                fmt = words[1]
            elif words[0] == "element":
                count = int(words[2])
                if count < 0:
                    raise ValueError
                elements.append((words[1], count, []))
            elif words[0] == "property":
                if words[1] == "list":
                    raise TypeError("PLY list properties are not supported for point clouds")
                if words[1] not in _PLY_TYPES:
                    raise TypeError(f"unknown PLY property type {words[1]!r}")
                elements[-1][2].append((words[2], _PLY_TYPES[words[1]]))
        except TypeError as exc:
            raise ValueError(str(exc)) from None
        except (ValueError, IndexError):
            raise ValueError(f"bad PLY header line: {line[:80]!r}") from None


def _vertex_layout(f) -> tuple[np.dtype, int]:
    """Parse the header of the open file ``f`` and seek to its vertex data: (dtype, count)."""
    elements, fmt = _parse_header(f)
    if fmt != "binary_little_endian":
        raise ValueError(f"only binary_little_endian PLY is supported, got {fmt!r}")
    left = os.fstat(f.fileno()).st_size - f.tell()
    for name, count, props in elements:
        try:
            dtype = np.dtype(props)
        except (TypeError, ValueError):
            raise ValueError(f"PLY element {name!r} has repeated or bad properties") from None
        size = count * dtype.itemsize
        if size > left:
            raise ValueError(f"PLY header claims {count} {name} elements ({size} bytes), "
                             f"the file holds {left} bytes after its header")
        left -= size
        if name == "vertex":
            break
        f.seek(size, os.SEEK_CUR)
    else:
        raise ValueError("PLY file has no vertex element")
    missing = {"x", "y", "z", "red", "green", "blue"} - set(dtype.names or ())
    if missing:
        raise ValueError(f"PLY vertex element lacks {sorted(missing)}")
    return dtype, count


def _as_cloud(data: np.ndarray) -> PointCloud:
    xyz = np.stack([data["x"], data["y"], data["z"]], axis=1).astype(np.float32)
    rgb = np.stack([data["red"], data["green"], data["blue"]], axis=1).astype(np.uint8)
    names = data.dtype.names or ()
    radius = data["radius"].astype(np.float32) if "radius" in names else np.zeros(len(data), np.float32)
    return PointCloud(xyz, rgb, radius)


def read_ply(path: str | Path) -> PointCloud:
    """Read a binary little-endian PLY point cloud."""
    with open(path, "rb") as f:
        dtype, count = _vertex_layout(f)
        data = np.frombuffer(f.read(count * dtype.itemsize), dtype, count=count)
    return _as_cloud(data)


def ply_vertex_count(path: str | Path) -> int:
    """How many points a PLY point cloud holds (its header only is read)."""
    with open(path, "rb") as f:
        return _vertex_layout(f)[1]


def iter_ply(path: str | Path, chunk_size: int = 1 << 18) -> Iterator[PointCloud]:
    """The points of a PLY file in order, ``chunk_size`` at a time: a file of any size is
    read with at most one chunk in memory."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    with open(path, "rb") as f:
        dtype, count = _vertex_layout(f)
        for start in range(0, count, chunk_size):
            n = min(chunk_size, count - start)
            data = np.frombuffer(f.read(n * dtype.itemsize), dtype)
            if len(data) != n:
                raise ValueError(f"{path} ends after {start + len(data)} of {count} points")
            yield _as_cloud(data)
