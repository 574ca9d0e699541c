"""Session folders: everything a scene made, saved so that nothing is lost.

``<root>/<scene_id>/`` holds ``input.png`` (the first view), ``cloud.ply`` (the point store),
``clips/NNNN.mp4`` with ``clips/NNNN.json`` (frame poses, K, fps) for every clip, and
``manifest.json``, rewritten atomically (write to a temporary file, then rename) after each
clip, so a crash leaves either the old manifest or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import av
import numpy as np
from PIL import Image

from protocol.messages import SceneText

MANIFEST_VERSION = 1
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class SessionError(ValueError):
    """A session cannot be saved or loaded; the message says why."""


def check_scene_id(scene_id: str) -> str:
    """Scene ids name folders, so they must be plain names (no slashes, no ``..``)."""
    if not _SAFE_ID.match(scene_id) or ".." in scene_id:
        raise SessionError(
            f"scene id {scene_id!r} must be 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return scene_id


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_mp4(path: Path, frames: list[np.ndarray], fps: float) -> None:
    """H.264 MP4 of uint8 RGB frames (sizes rounded down to even for yuv420p)."""
    if not frames:
        raise SessionError("a clip needs at least one frame")
    h, w = frames[0].shape[:2]
    h2, w2 = h - h % 2, w - w % 2
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), mode="w") as container:
        stream = container.add_stream("libx264", rate=max(1, round(fps)))
        stream.width, stream.height, stream.pix_fmt = w2, h2, "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for img in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img[:h2, :w2]), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    os.replace(tmp, path)


def read_mp4(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


class SessionStore:
    """Reads and writes session folders under ``root``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def folder(self, scene_id: str) -> Path:
        return self.root / check_scene_id(scene_id)

    def exists(self, scene_id: str) -> bool:
        return (self.folder(scene_id) / "manifest.json").is_file()

    def create(self, scene_id: str, image: np.ndarray, K: np.ndarray, text: SceneText,
               engine: str, median_depth: float) -> Path:
        """Start a session folder with the input image and an empty clip list."""
        folder = self.folder(scene_id)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / "input.png")
        manifest = {
            "version": MANIFEST_VERSION,
            "scene_id": scene_id,
            "engine": engine,
            "K": np.asarray(K).tolist(),
            "median_depth": float(median_depth),
            "text": {k: getattr(text, k) for k in text.__struct_fields__},
            "pose": np.eye(4).tolist(),
            "clips": [],
        }
        atomic_write(folder / "manifest.json", json.dumps(manifest, indent=1).encode())
        return folder

    def save_cloud(self, scene_id: str, store) -> None:
        """The point store as binary PLY, written next to and then over the old one."""
        folder = self.folder(scene_id)
        tmp = folder / ".cloud.ply.part"
        store.save(tmp)
        os.replace(tmp, folder / "cloud.ply")

    def add_clip(self, scene_id: str, kind: str, frames: list[np.ndarray], poses: np.ndarray,
                 K: np.ndarray, fps: float, end_pose: np.ndarray, store=None,
                 timings: dict | None = None) -> Path:
        """Save a clip (MP4 + poses JSON), the cloud, then the manifest, in that order."""
        folder = self.folder(scene_id)
        manifest = self.manifest(scene_id)
        n = len(manifest["clips"]) + 1
        mp4 = folder / "clips" / f"{n:04d}.mp4"
        write_mp4(mp4, frames, fps)
        meta = {"kind": kind, "fps": fps, "K": np.asarray(K).tolist(),
                "poses": np.asarray(poses).tolist(), "timings": timings or {}}
        atomic_write(mp4.with_suffix(".json"), json.dumps(meta).encode())
        if store is not None:
            self.save_cloud(scene_id, store)
        manifest["clips"].append({"file": f"clips/{n:04d}.mp4", "kind": kind,
                                  "num_frames": len(frames), "fps": fps})
        manifest["pose"] = np.asarray(end_pose).tolist()
        atomic_write(folder / "manifest.json", json.dumps(manifest, indent=1).encode())
        return mp4

    def manifest(self, scene_id: str) -> dict:
        path = self.folder(scene_id) / "manifest.json"
        try:
            manifest = json.loads(path.read_text())
        except FileNotFoundError:
            raise SessionError(f"no saved session {scene_id!r} under {self.root}") from None
        except json.JSONDecodeError as exc:
            raise SessionError(f"{path} is not valid JSON: {exc}") from None
        if manifest.get("version") != MANIFEST_VERSION:
            raise SessionError(f"{path} has manifest version {manifest.get('version')}, "
                               f"this backend reads {MANIFEST_VERSION}")
        return manifest

    def load(self, scene_id: str) -> dict:
        """Manifest plus the input image (``image``) and text as a SceneText (``text``)."""
        manifest = self.manifest(scene_id)
        folder = self.folder(scene_id)
        with Image.open(folder / "input.png") as im:
            manifest["image"] = np.asarray(im.convert("RGB"))
        manifest["text"] = SceneText(**manifest["text"])
        manifest["cloud_path"] = folder / "cloud.ply"
        return manifest

    def record_undo(self, scene_id: str, job_id: str, store, pose: np.ndarray) -> None:
        """The last transition was undone: mark its clip ``undone`` (the file stays), save
        the truncated cloud and the pose it returned to."""
        folder = self.folder(scene_id)
        manifest = self.manifest(scene_id)
        for clip in reversed(manifest["clips"]):
            if clip["kind"] == "transition" and not clip.get("undone"):
                clip["undone"] = True
                clip["undo_of"] = job_id
                break
        self.save_cloud(scene_id, store)
        manifest["pose"] = np.asarray(pose).tolist()
        atomic_write(folder / "manifest.json", json.dumps(manifest, indent=1).encode())
