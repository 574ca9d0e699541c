"""Startup recovery of the sessions root: finish what a crash left, keep what is foreign.

Every entry of the (claimed) root is judged without following a symbolic link:

- the marker and the quarantine folder are left alone;
- the backend's own leftovers (``.new-*`` folders of sessions never renamed into place,
  ``.*.part`` files) are deleted;
- a session folder is kept when its manifest decodes (``protocol.files.manifest``), its name
  agrees with the manifest, it holds no symbolic link, and every file the manifest names is
  a plain file; inside it, files the backend writes that no manifest names (``.part``
  files, clouds and clips written after the last manifest) are deleted;
- anything else (a session that fails to load, a symbolic link, a stray file, a name that is
  not valid UTF-8) is moved into ``.quarantine/`` with one log line, never deleted, and the
  backend goes on with the rest.

So every session resumes completely or is out of the way, and nothing outside the root is
ever touched.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from backend.session_root import MARKER, QUARANTINE, is_plain_file
from protocol.files.manifest import Manifest, is_scene_id, read_manifest, referenced

log = logging.getLogger(__name__)

_TEMP_DIR = re.compile(r"\.new-.*")
_TEMP_FILE = re.compile(r"\..*\.part")
_OURS = re.compile(r"(.*/)?\..*|clips/[0-9]{4,9}\.(mp4|json)|cloud(-[0-9A-Za-z]+)?\.ply|"
                   r"manifest\.json|input\.png")
"""Files the backend writes in a session folder; recovery deletes those no manifest names.
Other files (the explorer's copy of the full-size photo, ``original.<ext>``) stay."""


@dataclass
class Verdict:
    """What one entry of the root is."""

    name: str
    kind: Literal["session", "leftover", "skip", "foreign"]
    """``session``, ``leftover`` (ours, to delete), ``skip`` or ``foreign`` (quarantine)."""
    manifest: Manifest | None = None
    """Set for every ``session`` (and for a ``foreign`` folder whose manifest loaded)."""
    problem: str | None = None
    """Why a session folder does not load (then it is quarantined)."""

    def loadable(self) -> Manifest | None:
        """The manifest of a session that loads (no problem found); None for anything else."""
        return self.manifest if self.kind == "session" and self.problem is None else None


@dataclass
class Report:
    sessions: dict[str, Manifest] = field(default_factory=dict)
    """Folder name -> manifest of every session kept."""
    removed: list[str] = field(default_factory=list)
    quarantined: list[tuple[str, str]] = field(default_factory=list)
    """(name as ascii, why) of what was moved to the quarantine folder."""


def scan(root: Path) -> list[Verdict]:
    """A verdict per entry of ``root`` (nothing is changed)."""
    out, seen = [], set()
    for name in sorted(os.listdir(root)):
        verdict = judge(root, name)
        manifest = verdict.loadable()
        if manifest is not None:
            key = (manifest.owner, manifest.scene_id)
            if key in seen:
                verdict.problem = "another folder holds the same owner's scene id"
            seen.add(key)
        out.append(verdict)
    return out


def judge(root: Path, name: str) -> Verdict:
    if name in (MARKER, QUARANTINE):
        return Verdict(name, "skip")
    try:
        mode = os.lstat(root / name).st_mode
    except OSError:
        return Verdict(name, "skip")  # gone meanwhile
    if stat.S_ISDIR(mode) and _TEMP_DIR.fullmatch(name):
        return Verdict(name, "leftover")
    if stat.S_ISREG(mode) and _TEMP_FILE.fullmatch(name):
        return Verdict(name, "leftover")
    if not stat.S_ISDIR(mode):
        kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a session folder"
        return Verdict(name, "foreign", problem=kind)
    return _judge_session(root / name)


def _judge_session(folder: Path) -> Verdict:
    name = folder.name
    if not _utf8(name):
        return Verdict(name, "foreign", problem="its name is not valid UTF-8")
    try:
        manifest = read_manifest(folder)
    except (OSError, ValueError) as exc:
        return Verdict(name, "foreign", problem=str(exc))
    expected = (name.startswith(manifest.scene_id + "-") and is_scene_id(name)
                if manifest.version >= 3 else name == manifest.scene_id)
    if not expected:
        return Verdict(name, "foreign", manifest, "its name does not match its manifest")
    links = _walk(folder)[1]
    if links:
        return Verdict(name, "foreign", manifest, f"it holds a symbolic link ({links[0]})")
    missing = sorted(p for p in referenced(manifest) if not is_plain_file(folder / p))
    if missing:
        return Verdict(name, "foreign", manifest, f"it lacks {', '.join(missing)}")
    return Verdict(name, "session", manifest)


def recover(root: Path) -> Report:
    """Delete the backend's leftovers, prune sessions, quarantine the rest; see the module."""
    report = Report()
    for verdict in scan(root):
        name = verdict.name
        if verdict.kind == "leftover":
            _delete_ours(root / name)
            report.removed.append(ascii(name))
        elif (manifest := verdict.loadable()) is not None:
            report.sessions[name] = manifest
            report.removed += [f"{name}/{p}" for p in _prune(root / name, manifest)]
        elif verdict.kind != "skip":
            where = quarantine(root, name, verdict.problem or "unknown")
            report.quarantined.append((ascii(name), verdict.problem or "unknown"))
            log.warning("sessions: %s does not load (%s): moved to %s", ascii(name),
                        verdict.problem, where)
    return report


def quarantine(root: Path, name: str, why: str) -> str:
    """Move ``root/name`` (a link itself, never its target) into the quarantine folder;
    returns where, relative to the root."""
    box = root / QUARANTINE
    box.mkdir(exist_ok=True)
    if box.is_symlink() or not box.is_dir():
        raise OSError(f"{box} is not a real folder")
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name.encode("utf-8", "surrogateescape")
                  .decode("ascii", "replace")).lstrip(".")[:100] or "entry"
    target = f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    os.rename(root / name, box / target)
    return f"{QUARANTINE}/{target}"


def orphans(root: Path) -> list[Path]:
    """Files the backend wrote that no manifest names, and its leftover folders."""
    out = []
    for verdict in scan(root):
        if verdict.kind == "leftover":
            out.append(root / verdict.name)
        elif (manifest := verdict.loadable()) is not None:
            keep = referenced(manifest)
            out += [root / verdict.name / rel for rel in _walk(root / verdict.name)[0]
                    if _OURS.fullmatch(rel) and rel not in keep]
    return out


def _prune(folder: Path, manifest: Manifest) -> list[str]:
    keep = referenced(manifest)
    removed = []
    for rel in _walk(folder)[0]:
        if _OURS.fullmatch(rel) and rel not in keep:
            (folder / rel).unlink(missing_ok=True)
            removed.append(rel)
    return removed


def _walk(folder: Path, prefix: str = "") -> tuple[list[str], list[str]]:
    """(plain files, symbolic links) under ``folder`` as relative paths, walking real
    folders only."""
    files, links = [], []
    with os.scandir(folder) as entries:
        for entry in entries:
            rel = prefix + entry.name
            if entry.is_symlink():
                links.append(rel)
            elif entry.is_dir(follow_symlinks=False):
                more_files, more_links = _walk(Path(entry.path), rel + "/")
                files += more_files
                links += more_links
            elif entry.is_file(follow_symlinks=False):
                files.append(rel)
    return files, links


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _delete_ours(path: Path) -> None:
    """Delete a leftover of the backend: a real folder (its links unlinked, never followed:
    ``shutil.rmtree``'s fd-based walk) or a plain file."""
    if stat.S_ISDIR(os.lstat(path).st_mode):
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
