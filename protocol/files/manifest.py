"""A session's ``manifest.json``, as typed msgspec structs: what a session folder holds.

The manifest is the commit point of a session (see ``backend.session``). It is decoded with
these structs, never as a free dict, so a tampered or damaged manifest is refused whole:
a wrong type, a missing field, a number that is not finite (NaN and inf fail every bound),
or a path that is not a plain name inside its session folder. Nothing it names can point
outside the folder: the cloud is a plain file name, each clip ``clips/<digits>.mp4``.

Version 3 adds ``folder`` naming: the folder is ``<scene_id>-<random>`` and the manifest
carries the scene id and its owner. Versions 1 and 2 (the folder named by the scene id) are
read as they are.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from protocol.messages import SceneText

MANIFEST_VERSION = 3
MAX_MANIFEST_BYTES = 4 << 20
"""A manifest larger than this is not one we wrote."""
SCENE_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_SCENE_ID = re.compile(SCENE_ID_PATTERN)

Finite = Annotated[float, Meta(ge=-1e9, le=1e9)]
"""A finite number in +-1e9 (NaN and inf fail the bounds)."""
PlainName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
"""A file name inside the session folder: no slash, no leading dot (so never ``..``)."""
ClipFile = Annotated[str, Meta(pattern=r"^clips/[0-9]{4,9}\.mp4$")]
"""A clip's MP4, always ``clips/NNNN.mp4`` inside the session folder."""
SceneId = Annotated[str, Meta(pattern="^" + SCENE_ID_PATTERN + "$")]


ClipKind = Literal["transition", "dynamics"]
"""What made a clip."""


class ClipEntry(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One clip of the session."""

    file: ClipFile
    """The MP4, relative to the session folder; its ``.json`` sibling holds poses and K."""
    kind: ClipKind
    num_frames: Annotated[int, Meta(ge=1, le=1 << 20)]
    fps: Annotated[float, Meta(gt=0.0, le=240.0)]
    undone: bool = False
    """Taken back by Undo (the file stays)."""
    undo_of: str | None = None
    """The job id of the transition Undo took back."""
    region: Annotated[str, Meta(max_length=200)] | None = None
    """A dynamics clip whose region stays moving in the world (4D points in the cloud): the
    region's name for the HUD."""


class Manifest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``manifest.json``: names the session's cloud and clips and whose it is."""

    version: Annotated[int, Meta(ge=1, le=MANIFEST_VERSION)]
    scene_id: SceneId
    owner: Annotated[str, Meta(max_length=256)] = ""
    """The client identity that made it (``token:<digest>`` or ``curve:<key>``); empty in
    sessions made before owners were recorded (any client may resume those)."""
    engine: Annotated[str, Meta(max_length=64)]
    K: Annotated[list[list[Finite]], Meta(min_length=3, max_length=3)]
    """3 x 3 intrinsics in pixels."""
    median_depth: Annotated[float, Meta(gt=0.0, le=1e9)]
    text: SceneText = SceneText()
    pose: Annotated[list[list[Finite]], Meta(min_length=4, max_length=4)]
    """Camera-to-world pose of the last view reached (OpenCV)."""
    depth_source: Annotated[str, Meta(max_length=16)] = ""
    """Where the first view's depth came from (``model``, ``given``, ``prior``; empty in
    sessions saved before it was recorded)."""
    depth_note: Annotated[str, Meta(max_length=500)] = ""
    """The HUD's line about that depth."""
    cloud: PlainName | None = "cloud.ply"
    """The point cloud PLY (version 1 sessions all used ``cloud.ply``)."""
    clips: list[ClipEntry] = []


def decode_manifest(data: bytes) -> Manifest:
    """The manifest in ``data``; ValueError saying what is wrong (never a path)."""
    try:
        manifest = msgspec.json.decode(data, type=Manifest)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ValueError(f"manifest.json: {exc}") from None
    if any(len(row) != 3 for row in manifest.K) or any(len(row) != 4 for row in manifest.pose):
        raise ValueError("manifest.json: K must be 3 x 3 and pose 4 x 4")
    return manifest


def encode_manifest(manifest: Manifest) -> bytes:
    return msgspec.json.format(msgspec.json.encode(manifest), indent=1)


def referenced(manifest: Manifest) -> set[str]:
    """Paths (relative to the session folder) that ``manifest`` names."""
    keep = {"manifest.json", "input.png"}
    if manifest.cloud:
        keep.add(manifest.cloud)
    for clip in manifest.clips:
        keep |= {clip.file, clip.file[: -len(".mp4")] + ".json"}
    return keep


def is_scene_id(name: str) -> bool:
    return _SCENE_ID.fullmatch(name) is not None and ".." not in name


def read_manifest(folder: Path) -> Manifest:
    """The typed manifest of the session in ``folder``; ValueError saying what is wrong."""
    path = folder / "manifest.json"
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise ValueError("no manifest.json") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError("manifest.json is not a plain file")
    if st.st_size > MAX_MANIFEST_BYTES:
        raise ValueError(f"manifest.json is over {MAX_MANIFEST_BYTES >> 20} MB")
    return decode_manifest(path.read_bytes())


def saved_folders(root: Path) -> Iterator[tuple[str, Manifest | None, float]]:
    """Each entry of the sessions folder ``root`` whose name does not start with a dot, in
    name order: (its name, its typed manifest or None when it is not a readable session
    folder, the manifest's modification time or 0). Links are never followed; nothing is
    claimed or changed."""
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return
    for name in names:
        if name.startswith("."):
            continue
        folder = root / name
        try:
            if not stat.S_ISDIR(os.lstat(folder).st_mode):
                raise ValueError("not a folder")
            manifest = read_manifest(folder)
            modified = os.lstat(folder / "manifest.json").st_mtime
        except (OSError, ValueError, UnicodeError):
            yield name, None, 0.0
            continue
        yield name, manifest, modified
