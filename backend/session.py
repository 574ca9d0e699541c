"""Session folders: everything a scene made, saved so that no crash loses or mixes it.

``<root>/<scene_id>/`` holds ``input.png`` (the first view), ``cloud-NNNN.ply`` (the point
store after clip NNNN), ``clips/NNNN.mp4`` with ``clips/NNNN.json`` (frame poses, K, fps) for
every clip, and ``manifest.json``, which names the cloud and the clips and whose client owns
the scene. Every change is ordered so the manifest is the commit point:

1. A new session is built in a hidden folder and renamed into place in one step.
2. A clip is streamed into ``clips/.<job>.part.mp4`` while it is made, then renamed.
3. The grown cloud is written under a new name (atomically).
4. The manifest naming the new clip and cloud replaces the old one (atomically).

A crash at any moment leaves the old manifest or the new one. :meth:`SessionStore.recover`,
run at start, deletes what no manifest names (hidden folders, ``.part`` files, clouds and
clips written after the last manifest), so every session resumes completely or is absent.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import threading
import uuid
from pathlib import Path

import av
import numpy as np
from PIL import Image

from protocol.messages import SceneText

MANIFEST_VERSION = 2
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class SessionError(Exception):
    """A session cannot be saved or loaded; the message says why. ``code`` is the Error code."""

    code = "bad_value"


class SessionMissing(SessionError):
    code = "unknown_scene"


class SessionExists(SessionError):
    code = "scene_exists"


class NotOwner(SessionError):
    code = "forbidden"


def check_scene_id(scene_id: str) -> str:
    """Scene ids name folders, so they must be plain names (no slashes, no ``..``)."""
    if not isinstance(scene_id, str) or not _SAFE_ID.fullmatch(scene_id) or ".." in scene_id:
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


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
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
        self._container = None
        self._stream = None

    def add(self, img: np.ndarray) -> None:
        h, w = img.shape[:2]
        if self._container is None:
            self.part.parent.mkdir(parents=True, exist_ok=True)
            self._container = av.open(str(self.part), mode="w", format="mp4")
            self._stream = self._container.add_stream("libx264", rate=max(1, round(self.fps)))
            self._stream.width, self._stream.height = w - w % 2, h - h % 2
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = {"crf": "18", "preset": "veryfast"}
        crop = np.ascontiguousarray(img[: self._stream.height, : self._stream.width])
        self._container.mux(self._stream.encode(av.VideoFrame.from_ndarray(crop, format="rgb24")))
        self.count += 1

    def finish(self, path: Path) -> Path:
        """Flush and close the MP4, then rename it to ``path``."""
        if self._container is None:
            raise SessionError("a clip needs at least one frame")
        self._container.mux(self._stream.encode())
        self._container.close()
        self._container = None
        with open(self.part, "rb") as f:
            os.fsync(f.fileno())
        os.replace(self.part, path)
        return path

    def abort(self) -> None:
        """Close and delete the partial file."""
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.close()
            self._container = None
        self.part.unlink(missing_ok=True)


def write_mp4(path: Path, frames: list[np.ndarray], fps: float) -> None:
    """H.264 MP4 of uint8 RGB frames (sizes rounded down to even for yuv420p)."""
    if not frames:
        raise SessionError("a clip needs at least one frame")
    writer = ClipWriter(path.with_suffix(".part.mp4"), fps)
    for img in frames:
        writer.add(img)
    writer.finish(path)


def read_mp4(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


class SessionStore:
    """Reads and writes session folders under ``root``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._lock = threading.Lock()
        self._scene_locks: dict[str, threading.Lock] = {}

    def folder(self, scene_id: str) -> Path:
        return self.root / check_scene_id(scene_id)

    def exists(self, scene_id: str) -> bool:
        return (self.folder(scene_id) / "manifest.json").is_file()

    def _scene_lock(self, scene_id: str) -> threading.Lock:
        with self._lock:
            return self._scene_locks.setdefault(scene_id, threading.Lock())

    # -- create --

    def create(self, scene_id: str, image: np.ndarray, K: np.ndarray, text: SceneText,
               engine: str, median_depth: float, store=None, owner: str = "",
               depth: tuple[str, str] = ("", "")) -> Path:
        """A complete new session (image, cloud, manifest), renamed into place in one step.

        Raises SessionExists if ``scene_id`` is already saved: sessions are never overwritten.
        ``depth`` is the first view's depth source and HUD note, given back on resume.
        """
        folder = self.folder(scene_id)
        self.root.mkdir(parents=True, exist_ok=True)
        if folder.exists():
            raise SessionExists(f"a saved session {scene_id!r} exists: resume it or pick another id")
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=f".new-{scene_id}-"))
        try:
            Image.fromarray(image).save(tmp / "input.png")
            cloud = None
            if store is not None:
                cloud = "cloud-0000.ply"
                store.save(tmp / cloud)
            manifest = {
                "version": MANIFEST_VERSION,
                "scene_id": scene_id,
                "owner": owner,
                "engine": engine,
                "K": np.asarray(K).tolist(),
                "median_depth": float(median_depth),
                "text": {k: getattr(text, k) for k in text.__struct_fields__},
                "pose": np.eye(4).tolist(),
                "depth_source": depth[0],
                "depth_note": depth[1],
                "cloud": cloud,
                "clips": [],
            }
            atomic_write(tmp / "manifest.json", json.dumps(manifest, indent=1).encode())
            with self._lock:
                if folder.exists():
                    raise SessionExists(f"a saved session {scene_id!r} exists: resume it or "
                                        "pick another id")
                os.rename(tmp, folder)
            _fsync_dir(self.root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return folder

    def save_cloud(self, scene_id: str, store) -> None:
        """Write the store as the session's cloud: a new file, then the manifest naming it."""
        with self._scene_lock(scene_id):
            manifest = self.manifest(scene_id)
            manifest["cloud"] = self._write_cloud(scene_id, store)
            self._commit(scene_id, manifest)

    def _write_cloud(self, scene_id: str, store) -> str:
        folder = self.folder(scene_id)
        name = f"cloud-{uuid.uuid4().hex[:12]}.ply"
        part = folder / f".{name}.part"
        store.save(part)
        with open(part, "rb") as f:
            os.fsync(f.fileno())
        os.replace(part, folder / name)
        return name

    def _commit(self, scene_id: str, manifest: dict) -> None:
        """Replace the manifest, then delete the files the old one named and the new one does not."""
        folder = self.folder(scene_id)
        old = self.manifest(scene_id)
        atomic_write(folder / "manifest.json", json.dumps(manifest, indent=1).encode())
        if old.get("cloud") and old["cloud"] != manifest.get("cloud"):
            (folder / old["cloud"]).unlink(missing_ok=True)

    # -- clips --

    def begin_clip(self, scene_id: str, fps: float) -> ClipWriter:
        """A writer streaming a new clip into the session's clips folder."""
        part = self.folder(scene_id) / "clips" / f".{uuid.uuid4().hex[:12]}.part.mp4"
        return ClipWriter(part, fps)

    def commit_clip(self, scene_id: str, kind: str, writer: ClipWriter, poses: np.ndarray,
                    K: np.ndarray, fps: float, end_pose: np.ndarray, store=None,
                    timings: dict | None = None) -> Path:
        """Finish ``writer``'s clip, write the grown cloud, then the manifest naming both."""
        folder = self.folder(scene_id)
        with self._scene_lock(scene_id):
            manifest = self.manifest(scene_id)
            n = len(manifest["clips"]) + 1
            mp4 = writer.finish(folder / "clips" / f"{n:04d}.mp4")
            meta = {"kind": kind, "fps": fps, "K": np.asarray(K).tolist(),
                    "poses": np.asarray(poses).tolist(), "timings": timings or {}}
            atomic_write(mp4.with_suffix(".json"), json.dumps(meta).encode())
            if store is not None:
                manifest["cloud"] = self._write_cloud(scene_id, store)
            manifest["clips"].append({"file": f"clips/{n:04d}.mp4", "kind": kind,
                                      "num_frames": writer.count, "fps": fps})
            manifest["pose"] = np.asarray(end_pose).tolist()
            self._commit(scene_id, manifest)
        return mp4

    def add_clip(self, scene_id: str, kind: str, frames: list[np.ndarray], poses: np.ndarray,
                 K: np.ndarray, fps: float, end_pose: np.ndarray, store=None,
                 timings: dict | None = None) -> Path:
        """Save a clip held in memory (prefer :meth:`begin_clip` to stream one)."""
        writer = self.begin_clip(scene_id, fps)
        try:
            for img in frames:
                writer.add(img)
            return self.commit_clip(scene_id, kind, writer, poses, K, fps, end_pose, store, timings)
        except BaseException:
            writer.abort()
            raise

    # -- read --

    def manifest(self, scene_id: str) -> dict:
        path = self.folder(scene_id) / "manifest.json"
        try:
            manifest = json.loads(path.read_text())
        except FileNotFoundError:
            raise SessionMissing(f"no saved session {scene_id!r} under {self.root}") from None
        except json.JSONDecodeError as exc:
            raise SessionError(f"{path} is not valid JSON: {exc}") from None
        if manifest.get("version") not in (1, MANIFEST_VERSION):
            raise SessionError(f"{path} has manifest version {manifest.get('version')}, "
                               f"this backend reads {MANIFEST_VERSION}")
        manifest.setdefault("cloud", "cloud.ply")  # version 1 layout
        manifest.setdefault("owner", "")
        return manifest

    def check_owner(self, scene_id: str, owner: str) -> dict:
        """The manifest, if ``owner`` may use the session; NotOwner otherwise."""
        manifest = self.manifest(scene_id)
        if manifest["owner"] and manifest["owner"] != owner:
            raise NotOwner(f"session {scene_id!r} belongs to another client")
        return manifest

    def load(self, scene_id: str) -> dict:
        """Manifest plus the input image (``image``) and text as a SceneText (``text``)."""
        manifest = self.manifest(scene_id)
        folder = self.folder(scene_id)
        with Image.open(folder / "input.png") as im:
            manifest["image"] = np.asarray(im.convert("RGB"))
        manifest["text"] = SceneText(**manifest["text"])
        manifest["cloud_path"] = folder / manifest["cloud"]
        return manifest

    def record_undo(self, scene_id: str, job_id: str, store, pose: np.ndarray) -> None:
        """The last transition was undone: mark its clip ``undone`` (the file stays), write
        the truncated cloud under a new name, then the manifest naming it and the pose it
        returned to (the same cloud-then-manifest order as a clip)."""
        with self._scene_lock(scene_id):
            manifest = self.manifest(scene_id)
            for clip in reversed(manifest["clips"]):
                if clip["kind"] == "transition" and not clip.get("undone"):
                    clip["undone"] = True
                    clip["undo_of"] = job_id
                    break
            manifest["cloud"] = self._write_cloud(scene_id, store)
            manifest["pose"] = np.asarray(pose).tolist()
            self._commit(scene_id, manifest)

    # -- recovery --

    def recover(self) -> list[str]:
        """Finish or discard what a crash left; returns what was removed (for the log)."""
        removed: list[str] = []
        if not self.root.is_dir():
            return removed
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith("."):
                _remove(entry)
                removed.append(entry.name)
                continue
            if not entry.is_dir():
                continue
            try:
                manifest = self.manifest(entry.name)
            except SessionError:
                _remove(entry)  # never committed (or unreadable): absent, not half there
                removed.append(entry.name)
                continue
            removed += [f"{entry.name}/{p}" for p in self._prune(entry, manifest)]
        return removed

    def _prune(self, folder: Path, manifest: dict) -> list[str]:
        keep = _referenced(manifest)
        removed = []
        for path in sorted(folder.rglob("*"), reverse=True):
            rel = str(path.relative_to(folder))
            if path.is_dir():
                if rel == "clips":
                    continue
                _remove(path)
            elif rel not in keep and _ours(rel):
                path.unlink(missing_ok=True)
            else:
                continue
            removed.append(rel)
        missing = [k for k in keep if not (folder / k).exists()]
        if missing:  # cannot happen with the write order above; discard rather than half-resume
            _remove(folder)
            removed.append(f"(session discarded: missing {', '.join(sorted(missing))})")
        return removed

    def orphans(self) -> list[Path]:
        """Files under the root that no manifest names (empty after :meth:`recover`)."""
        out = []
        if not self.root.is_dir():
            return out
        for entry in self.root.iterdir():
            if entry.name.startswith(".") or not entry.is_dir():
                out.append(entry)
                continue
            try:
                manifest = self.manifest(entry.name)
            except SessionError:
                out.append(entry)
                continue
            keep = _referenced(manifest)
            out += [p for p in entry.rglob("*") if p.is_file() and _ours(rel := str(p.relative_to(entry)))
                    and rel not in keep]
        return out


def _referenced(manifest: dict) -> set[str]:
    """Paths (relative to the session folder) that ``manifest`` names."""
    keep = {"manifest.json", "input.png"}
    if manifest.get("cloud"):
        keep.add(manifest["cloud"])
    for clip in manifest["clips"]:
        keep |= {clip["file"], str(Path(clip["file"]).with_suffix(".json"))}
    return keep


_OURS = re.compile(r"(.*/)?\..*|clips/.*|cloud(-[0-9A-Za-z]+)?\.ply|manifest\.json|input\.png")


def _ours(rel: str) -> bool:
    """Whether the backend writes files at ``rel`` (hidden files, clouds, clips, the manifest):
    recovery deletes those no manifest names. Other files in a session folder (the
    explorer's copy of the full-size photo, ``original.<ext>``) are not the backend's to delete."""
    return _OURS.fullmatch(rel) is not None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
