"""Session folders: everything a scene made, saved so that no crash loses or mixes it.

The root is claimed first (``backend.session_root``: never an assumed folder). Each session
is ``<root>/<scene_id>-<random>/`` and holds ``input.png`` (the first view),
``cloud-<random>.ply`` (the point store after the last clip), ``clips/NNNN.mp4`` with
``clips/NNNN.json`` (frame poses, K, fps) for every clip, and ``manifest.json``
(``protocol.files.manifest``), which names the cloud and the clips, the scene id and whose client
owns it. Scene ids are per owner: two clients may each have a scene ``a``, and nothing a
client sends can name, probe or reach another's session. Every change is ordered so the
manifest is the commit point:

1. A new session is built in a hidden folder and renamed into place in one step.
2. A clip is streamed into ``clips/.<random>.part.mp4`` while it is made, then renamed.
3. The grown cloud is written under a new name (atomically).
4. The manifest naming the new clip and cloud replaces the old one (atomically).

A crash at any moment leaves the old manifest or the new one; ``backend.session_recovery``
(run at start) finishes the job. Nothing here follows a symbolic link inside the root: a
session folder or ``clips`` folder that is not a real folder is refused.

Over 400 lines on purpose: every write to a session (create, clip, cloud, undo) goes through
the ordered commit steps above, and those steps are only checkable read side by side.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import av
import msgspec
import numpy as np
from av.container import OutputContainer
from av.video.stream import VideoStream
from PIL import Image

from backend.session_root import claim_root
from protocol.files.manifest import (
    MANIFEST_VERSION,
    ClipEntry,
    ClipKind,
    Manifest,
    encode_manifest,
    is_scene_id,
    read_manifest,
)
from protocol.messages import SceneText


class SessionError(Exception):
    """A session cannot be saved or loaded; the message says why (never a path). ``code``
    is the Error code."""

    code = "bad_value"


class SessionMissing(SessionError):
    code = "unknown_scene"


class SessionExists(SessionError):
    code = "scene_exists"


def check_scene_id(scene_id: str) -> str:
    """Scene ids name folders, so they must be plain names (no slashes, no ``..``)."""
    if not isinstance(scene_id, str) or not is_scene_id(scene_id):
        raise SessionError(
            f"scene id {scene_id!r} must be 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return scene_id


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def real_dir(path: Path, create: bool = False) -> Path:
    """``path`` if it is a folder and not a symbolic link (made when ``create``);
    SessionError otherwise."""
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(path)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        raise SessionMissing("the saved session is gone") from None
    if not stat.S_ISDIR(mode):
        raise SessionError("the session folder was tampered with (not a real folder)")
    return path


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a mix."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ClipWriter:
    """An H.264 MP4 written frame by frame as a clip is made (memory does not grow with it).

    Frames go to a ``.part.mp4`` file; :meth:`finish` moves it to its final name. Sizes are
    rounded down to even for yuv420p.
    """

    def __init__(self, part: Path, fps: float):
        self.part = part
        self.fps = fps
        self.count = 0
        self._out: tuple[OutputContainer, VideoStream] | None = None
        """The open MP4 and its video stream, from the first frame until finished."""

    def add(self, img: np.ndarray) -> None:
        h, w = img.shape[:2]
        if self._out is None:
            container = av.open(str(self.part), mode="w", format="mp4")
            stream = container.add_stream("libx264", rate=max(1, round(self.fps)))
            stream.width, stream.height = w - w % 2, h - h % 2
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "18", "preset": "veryfast"}
            # encoded on the job's own thread: x264's frame threads would go on encoding
            # while the job waits for another client's (scheduler.gives_way), and each
            # holds its own frames in memory
            stream.codec_context.thread_count = 1
            self._out = container, stream
        container, stream = self._out
        crop = np.ascontiguousarray(img[: stream.height, : stream.width])
        container.mux(stream.encode(av.VideoFrame.from_ndarray(crop, format="rgb24")))
        self.count += 1

    def bytes_written(self) -> int:
        """Bytes of the partial MP4 on disk so far."""
        try:
            return os.lstat(self.part).st_size
        except OSError:
            return 0

    def finish(self, path: Path) -> Path:
        """Flush and close the MP4, then rename it to ``path``."""
        if self._out is None:
            raise SessionError("a clip needs at least one frame")
        container, stream = self._out
        container.mux(stream.encode())
        container.close()
        self._out = None
        with open(self.part, "rb") as f:
            os.fsync(f.fileno())
        os.replace(self.part, path)
        return path

    def abort(self) -> None:
        """Close and delete the partial file."""
        if self._out is not None:
            with contextlib.suppress(Exception):
                self._out[0].close()
            self._out = None
        self.part.unlink(missing_ok=True)


def read_mp4(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def read_session(folder: Path) -> dict:
    """A session folder, read and checked without claiming its root (for resuming and for
    tools): ``scene_id``, ``engine``, ``K``, ``median_depth``, ``text`` (a SceneText),
    ``pose``, ``depth_source``, ``depth_note``, ``image`` (H x W x 3 uint8), ``cloud_path``
    (None when it has no cloud) and ``clips`` (manifest entries as dicts). SessionError
    saying what is wrong (never a path)."""
    try:
        manifest = read_manifest(folder)
    except (OSError, ValueError) as exc:
        raise SessionError(f"the saved session cannot be read ({exc})") from None
    try:
        with Image.open(folder / "input.png") as im:
            image = np.asarray(im.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError):
        raise SessionError(f"the saved session {manifest.scene_id!r} has no readable photo") from None
    return {"scene_id": manifest.scene_id, "engine": manifest.engine, "K": manifest.K,
            "median_depth": manifest.median_depth, "text": manifest.text, "pose": manifest.pose,
            "depth_source": manifest.depth_source, "depth_note": manifest.depth_note,
            "image": image, "cloud_path": folder / manifest.cloud if manifest.cloud else None,
            "clips": msgspec.to_builtins(manifest.clips)}


def folder_bytes(folder: Path) -> int:
    """Bytes of the plain files in ``folder`` and its real subfolders (links not followed)."""
    total = 0
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                total += folder_bytes(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                total += entry.stat(follow_symlinks=False).st_size
    return total


@dataclass
class _Entry:
    owner: str
    scene_id: str
    bytes: int


class SessionStore:
    """The sessions under one claimed ``root``, indexed by (owner, scene id)."""

    def __init__(self, root: str | Path):
        self.root, self.token_key = claim_root(root)
        self._lock = threading.Lock()
        self._folder_locks: dict[str, threading.Lock] = {}
        self._entries: dict[str, _Entry] = {}
        """Folder name -> whose session it is and its size."""
        self._index: dict[tuple[str, str], str] = {}
        """(owner, scene id) -> folder name."""
        from backend.session_recovery import scan

        for verdict in scan(self.root):
            if verdict.manifest is not None and verdict.problem is None:
                self._add(verdict.name, verdict.manifest.owner, verdict.manifest.scene_id)

    def owned_by(self, owner: str) -> OwnerSessions:
        """The sessions ``owner`` may see (its own, and ownerless ones of old backends)."""
        return OwnerSessions(self, owner)

    def recover(self):
        """Finish or discard what a crash left, quarantine what does not load (see
        ``backend.session_recovery``); returns its report."""
        from backend.session_recovery import recover

        report = recover(self.root)
        with self._lock:
            self._entries.clear()
            self._index.clear()
        for name, manifest in report.sessions.items():
            self._add(name, manifest.owner, manifest.scene_id)
        return report

    def orphans(self) -> list[Path]:
        """Files in sessions that no manifest names (empty after :meth:`recover`)."""
        from backend.session_recovery import orphans

        return orphans(self.root)

    # -- index and usage --

    def _add(self, folder: str, owner: str, scene_id: str) -> None:
        size = folder_bytes(self.root / folder)
        with self._lock:
            self._entries[folder] = _Entry(owner, scene_id, size)
            self._index[(owner, scene_id)] = folder

    def find(self, owner: str, scene_id: str) -> str | None:
        """The folder of ``owner``'s session ``scene_id`` (or of an ownerless one)."""
        with self._lock:
            return self._index.get((owner, scene_id)) or self._index.get(("", scene_id))

    def usage(self, owner: str | None = None) -> tuple[int, int]:
        """(sessions, bytes on disk) of ``owner``, or of everyone when None."""
        with self._lock:
            mine = [e for e in self._entries.values() if owner is None or e.owner == owner]
        return len(mine), sum(e.bytes for e in mine)

    def owners(self) -> set[str]:
        """Identities with saved sessions."""
        with self._lock:
            return {e.owner for e in self._entries.values() if e.owner}

    def refresh_usage(self, folder: str) -> None:
        size = folder_bytes(self.root / folder)
        with self._lock:
            if folder in self._entries:
                self._entries[folder].bytes = size

    def folder_lock(self, folder: str) -> threading.Lock:
        with self._lock:
            return self._folder_locks.setdefault(folder, threading.Lock())

    def path(self, folder: str) -> Path:
        """The session folder, checked to be a real folder (never a link)."""
        return real_dir(self.root / folder)

    # -- create --

    def create(self, owner: str, scene_id: str, image: np.ndarray, K: np.ndarray,
               text: SceneText, engine: str, median_depth: float, store=None,
               depth: tuple[str, str] = ("", "")) -> str:
        """A complete new session (image, cloud, manifest), renamed into place in one step;
        returns its folder name. SessionExists if ``owner`` has a session ``scene_id``.
        ``depth`` is the first view's depth source and HUD note, given back on resume."""
        check_scene_id(scene_id)
        if self.find(owner, scene_id) is not None:
            raise SessionExists(f"a saved session {scene_id!r} exists: resume it or pick another id")
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=".new-"))
        try:
            Image.fromarray(image).save(tmp / "input.png")
            cloud = None
            if store is not None:
                cloud = f"cloud-{secrets.token_hex(6)}.ply"
                store.save(tmp / cloud)
            manifest = Manifest(version=MANIFEST_VERSION, scene_id=scene_id, owner=owner,
                                engine=engine, K=np.asarray(K, float).tolist(),
                                median_depth=float(median_depth), text=text,
                                pose=np.eye(4).tolist(), depth_source=depth[0],
                                depth_note=depth[1][:500], cloud=cloud, clips=[])
            atomic_write(tmp / "manifest.json", encode_manifest(manifest))
            folder = f"{scene_id}-{secrets.token_hex(4)}"
            with self._lock:
                if (owner, scene_id) in self._index:
                    raise SessionExists(f"a saved session {scene_id!r} exists: resume it or "
                                        "pick another id")
                os.rename(tmp, self.root / folder)  # a fresh random name: nothing is there
                self._index[(owner, scene_id)] = folder
                self._entries[folder] = _Entry(owner, scene_id, 0)
            _fsync_dir(self.root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.refresh_usage(folder)
        return folder


class OwnerSessions:
    """One client's sessions, by scene id. What it cannot see answers as missing."""

    def __init__(self, store: SessionStore, owner: str):
        self.store = store
        self.owner = owner

    def folder(self, scene_id: str) -> str:
        folder = self.store.find(self.owner, scene_id)
        if folder is None:
            raise SessionMissing(f"no saved session {scene_id!r}")
        return folder

    def exists(self, scene_id: str) -> bool:
        return self.store.find(self.owner, scene_id) is not None

    def create(self, scene_id: str, image: np.ndarray, K: np.ndarray, text: SceneText,
               engine: str, median_depth: float, store=None,
               depth: tuple[str, str] = ("", "")) -> str:
        return self.store.create(self.owner, scene_id, image, K, text, engine, median_depth,
                                 store, depth)

    def manifest(self, scene_id: str) -> Manifest:
        try:
            return read_manifest(self.store.path(self.folder(scene_id)))
        except ValueError as exc:
            raise SessionError(f"the saved session {scene_id!r} cannot be read ({exc})") from None

    def load(self, scene_id: str) -> dict:
        """What an engine needs to resume (see :func:`read_session`)."""
        return read_session(self.store.path(self.folder(scene_id)))

    # -- changes --

    def save_cloud(self, scene_id: str, store, pose: np.ndarray | None = None) -> None:
        """Write the store as the session's cloud (and ``pose`` as its last view): a new
        file, then the manifest naming it."""
        folder = self.folder(scene_id)
        with self.store.folder_lock(folder):
            manifest = self.manifest(scene_id)
            old = manifest.cloud
            manifest.cloud = self._write_cloud(folder, store)
            if pose is not None:
                manifest.pose = np.asarray(pose, float).tolist()
            self._commit(folder, manifest, old)

    def begin_clip(self, scene_id: str, fps: float) -> ClipWriter:
        """A writer streaming a new clip into the session's clips folder."""
        clips = real_dir(self.store.path(self.folder(scene_id)) / "clips", create=True)
        return ClipWriter(clips / f".{secrets.token_hex(6)}.part.mp4", fps)

    def commit_clip(self, scene_id: str, kind: ClipKind, writer: ClipWriter,
                    poses: np.ndarray, K: np.ndarray, fps: float, end_pose: np.ndarray, store=None,
                    timings: dict | None = None, region: str | None = None) -> str:
        """Finish ``writer``'s clip, write the grown cloud (or the cloud a dynamics clip set
        moving, ``region`` naming what moves), then the manifest naming both; returns the
        clip's path relative to the sessions root."""
        folder = self.folder(scene_id)
        with self.store.folder_lock(folder):
            manifest = self.manifest(scene_id)
            path = self.store.path(folder)
            n = len(manifest.clips) + 1
            mp4 = writer.finish(real_dir(path / "clips") / f"{n:04d}.mp4")
            meta = {"kind": kind, "fps": fps, "K": np.asarray(K).tolist(),
                    "poses": np.asarray(poses).tolist(), "timings": timings or {}}
            atomic_write(mp4.with_suffix(".json"), msgspec.json.encode(meta))
            old = manifest.cloud
            if store is not None:
                manifest.cloud = self._write_cloud(folder, store)
            manifest.clips.append(ClipEntry(file=f"clips/{n:04d}.mp4", kind=kind,
                                            num_frames=writer.count, fps=fps,
                                            region=region[:200] if region else None))
            manifest.pose = np.asarray(end_pose, float).tolist()
            self._commit(folder, manifest, old)
        return f"{folder}/clips/{n:04d}.mp4"

    def add_clip(self, scene_id: str, kind: ClipKind, frames: list[np.ndarray], poses: np.ndarray,
                 K: np.ndarray, fps: float, end_pose: np.ndarray, store=None,
                 timings: dict | None = None) -> str:
        """Save a clip held in memory (prefer :meth:`begin_clip` to stream one)."""
        writer = self.begin_clip(scene_id, fps)
        try:
            for img in frames:
                writer.add(img)
            return self.commit_clip(scene_id, kind, writer, poses, K, fps, end_pose, store, timings)
        except BaseException:
            writer.abort()
            raise

    def record_undo(self, scene_id: str, job_id: str, store, pose: np.ndarray,
                    kind: str = "transition") -> None:
        """The last transition (or dynamics clip kept in the world, ``kind``) was undone:
        mark its clip ``undone`` (the file stays), write the truncated (or no longer moving)
        cloud under a new name, then the manifest naming it and the pose it returned to (the
        same cloud-then-manifest order as a clip)."""
        folder = self.folder(scene_id)
        with self.store.folder_lock(folder):
            manifest = self.manifest(scene_id)
            for clip in reversed(manifest.clips):
                if clip.kind == kind and not clip.undone and (kind == "transition" or clip.region):
                    clip.undone, clip.undo_of = True, job_id
                    break
            old = manifest.cloud
            manifest.cloud = self._write_cloud(folder, store)
            manifest.pose = np.asarray(pose, float).tolist()
            self._commit(folder, manifest, old)

    def _write_cloud(self, folder: str, store) -> str:
        path = self.store.path(folder)
        name = f"cloud-{secrets.token_hex(6)}.ply"
        part = path / f".{name}.part"
        store.save(part)
        with open(part, "rb") as f:
            os.fsync(f.fileno())
        os.replace(part, path / name)
        return name

    def _commit(self, folder: str, manifest: Manifest, old_cloud: str | None) -> None:
        """Replace the manifest, then delete the cloud the old one named and the new one does
        not (a plain name inside the folder, by the manifest's type)."""
        path = self.store.path(folder)
        atomic_write(path / "manifest.json", encode_manifest(manifest))
        if old_cloud and old_cloud != manifest.cloud:
            (path / old_cloud).unlink(missing_ok=True)
        self.store.refresh_usage(folder)
