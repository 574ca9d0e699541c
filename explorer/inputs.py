"""What a person hands the explorer, checked before any window or backend starts.

Each check raises :class:`InputError` with one sentence; the command prints it on one line
and exits with code 2. Photos are scaled to the working size here, before they leave the
explorer (the original file is kept in the session folder).
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from explorer.settings import PhotoSettings

_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
"""The shape of an engine or preset name; which names exist, the backend's Welcome says."""
SIZE_RANGE = (64, 8192)
"""Smallest and largest window side in pixels."""
MIN_PHOTO_SIDE = 64
"""A photo's shortest side must have at least this many pixels (less is no place to walk)."""


class InputError(ValueError):
    """A bad input; the message is one sentence a person can act on."""


@dataclass
class Photo:
    path: Path
    image: np.ndarray
    """H x W x 3 uint8 RGB at the working size."""
    original_size: tuple[int, int]
    """(width, height) of the file."""

    @property
    def scale(self) -> float:
        """Working size over original size."""
        return self.image.shape[1] / self.original_size[0]


def load_photo(path: str | Path, settings: PhotoSettings) -> Photo:
    """Read a JPEG/PNG/... photo, scaled so its longest side is at most ``working_size``."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path} is a folder, not a photo")
    Image.MAX_IMAGE_PIXELS = None  # we check the size ourselves, before decoding
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > settings.max_pixels:
                raise InputError(f"{path} is {w}x{h}, more than {settings.max_pixels:,} pixels")
            if min(w, h) < MIN_PHOTO_SIDE:
                raise InputError(f"{path} is {w}x{h}: a photo needs at least {MIN_PHOTO_SIDE} "
                                 "pixels a side")
            target = _working_size((w, h), settings.working_size)
            im.draft("RGB", target)  # JPEG: decode at a reduced scale, much faster
            rgb = im.convert("RGB")
            if rgb.size != target:
                rgb = rgb.resize(target, Image.Resampling.LANCZOS)
            image = np.asarray(rgb)
    except UnidentifiedImageError:
        raise InputError(f"{path} is not an image this explorer can read") from None
    except OSError as exc:
        raise InputError(f"{path} cannot be read: {exc}") from None
    return Photo(path, image, (w, h))


def _working_size(size: tuple[int, int], longest: int) -> tuple[int, int]:
    w, h = size
    s = min(1.0, longest / max(w, h))
    return max(1, round(w * s)), max(1, round(h * s))


def load_depth(path: str | Path, photo: Photo) -> np.ndarray:
    """A z-depth map from .npy (float) or a 16-bit PNG in millimetres, the size of the
    original photo; returned at the photo's working size."""
    from PIL import Image

    path = Path(path)
    try:
        if path.suffix == ".npy":
            depth = np.load(path).astype(np.float32)
        else:
            with Image.open(path) as im:
                depth = np.asarray(im).astype(np.float32) / 1000.0
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is not a depth map: {exc}") from None
    if depth.shape != photo.original_size[::-1]:
        raise InputError(f"the depth map is {depth.shape[1]}x{depth.shape[0]}, the photo "
                         f"{photo.original_size[0]}x{photo.original_size[1]}")
    h, w = photo.image.shape[:2]
    if depth.shape != (h, w):
        depth = np.asarray(Image.fromarray(depth, mode="F").resize((w, h), Image.Resampling.NEAREST))
    return depth


def parse_size(text: str | None) -> tuple[int, int] | None:
    """``WIDTHxHEIGHT`` within :data:`SIZE_RANGE`."""
    if not text:
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InputError(f"--size must look like 1280x720, got {text!r}") from None
    lo, hi = SIZE_RANGE
    if not (lo <= w <= hi and lo <= h <= hi):
        raise InputError(f"--size {w}x{h}: each side must be between {lo} and {hi} pixels")
    return w, h


def check_fov(fov: float | None) -> float | None:
    if fov is not None and not 1.0 <= fov <= 170.0:
        raise InputError(f"--fov {fov:g}: the field of view must be between 1 and 170 degrees")
    return fov


def check_name(flag: str, name: str | None) -> str | None:
    """An engine or preset name's shape, before anything starts (whether the backend offers
    it is checked against its Welcome: :func:`explorer.backend_process.check_offered`)."""
    if name is not None and not _NAME.fullmatch(name):
        raise InputError(f"{flag} {name!r} is not a name (lower-case letters, digits, - and _)")
    return name


def window_size(photo_size: tuple[int, int], width: int, max_height: int = 900) -> tuple[int, int]:
    """A window with the photo's aspect, ``width`` wide (narrower if it would be too tall)."""
    pw, ph = photo_size
    s = min(width / pw, max_height / ph)
    return max(SIZE_RANGE[0], round(pw * s)), max(SIZE_RANGE[0], round(ph * s))


@dataclass
class SavedSession:
    """A session folder this explorer can read (its local backend's)."""

    name: str
    photo: np.ndarray
    """The photo as the backend lifted it (``input.png``, H x W x 3 uint8)."""
    original_size: tuple[int, int]
    """(width, height) of the original photo if it was kept, else of ``photo``."""


SESSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_session_name(name: str) -> str:
    """A name ``--resume`` can take (a scene id)."""
    if not SESSION_NAME.fullmatch(name) or ".." in name:
        raise InputError(f"--resume {name!r} is not a session name (see `dreamjourney sessions`)")
    return name


def load_session(name: str, root: Path) -> SavedSession:
    """The saved session ``name`` under ``root``: its photo and the original's size."""
    from PIL import Image

    check_session_name(name)
    found = [s for s in list_sessions(root)[0] if s["name"] == name]
    if not found:
        raise InputError(f"no saved session {name!r} under {root} "
                         "(`dreamjourney sessions` lists them)")
    folder = root / found[0]["folder"]  # the newest, if several clients saved one so named
    try:
        with Image.open(folder / "input.png") as im:
            photo = np.asarray(im.convert("RGB"))
    except OSError as exc:
        raise InputError(f"session {name!r} has no readable photo: {exc}") from None
    size = (photo.shape[1], photo.shape[0])
    for original in folder.glob("original.*"):
        try:
            with Image.open(original) as im:
                size = im.size
        except OSError:
            pass
    return SavedSession(name, photo, size)


def session_name(photo: Path, now: float | None = None) -> str:
    """``<photo stem>-<YYYYmmdd-HHMMSS>``, a valid scene id."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", photo.stem).strip("-._")[:60] or "photo"
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}"


def keep_original(photo: Path, folder: Path) -> Path:
    """Copy the photo, untouched, into the session folder (``original.<ext>``)."""
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / f"original{photo.suffix.lower()}"
    shutil.copyfile(photo, dest)
    return dest


def list_sessions(root: Path) -> tuple[list[dict], int]:
    """Saved sessions under ``root``, newest first (name = the scene id ``--resume`` takes,
    folder, clips, engine, photo, modified time), and how many folders are not readable
    sessions (skipped, never an error). Links are not followed; manifests are decoded with
    the backend's typed structs."""
    from protocol.files.manifest import saved_folders

    out, skipped = [], 0
    for name, manifest, modified in saved_folders(root):
        if manifest is None:
            skipped += 1
            continue
        originals = [p.name for p in (root / name).glob("original.*") if not p.is_symlink()]
        out.append({"name": manifest.scene_id, "folder": name, "engine": manifest.engine,
                    "clips": sum(1 for c in manifest.clips if not c.undone),
                    "modified": modified, "original": originals[0] if originals else None})
    return sorted(out, key=lambda s: -s["modified"]), skipped
