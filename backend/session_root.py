"""The sessions root is owned, never assumed: which folder the backend may write in.

A root is refused when it is empty (``""``), the file system root, the home folder, the
current folder, or a folder above one of those; and when it exists, is not empty and has no
marker file (``.dreamjourney-sessions``) saying this backend made it. A new or empty folder
gets the marker. The marker (mode 0600) also holds the key that signs the identity tokens
the backend hands out (see ``protocol.identity``), so tokens stay valid across restarts on
the same root and mean nothing on another.

To adopt a folder made before markers existed, create the marker file (empty) in it.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path

MARKER = ".dreamjourney-sessions"
QUARANTINE = ".quarantine"
"""Sessions that failed to load are moved here (never deleted)."""
_FORMAT = "dreamjourney-sessions"


class RootRefused(ValueError):
    """The sessions root cannot be used; the message says why and what to do."""


def claim_root(path: str | Path) -> tuple[Path, bytes]:
    """The resolved root, made or checked, and its token-signing key."""
    root = check_root(path)
    root.mkdir(parents=True, exist_ok=True)
    return root, _token_key(root / MARKER)


def check_root(path: str | Path) -> Path:
    """The resolved root if the backend may claim it (nothing is changed); RootRefused
    saying why not."""
    if not str(path).strip():
        raise RootRefused("the sessions folder is empty (''): name a folder of its own, e.g. "
                          "./sessions")
    root = Path(path).expanduser().resolve()
    _refuse_shared(root, str(path))
    if not root.exists():
        return root
    if not root.is_dir():
        raise RootRefused(f"sessions folder {root} is not a folder")
    marker = root / MARKER
    if not is_plain_file(marker):
        if marker.is_symlink() or marker.exists():
            raise RootRefused(f"{marker} is not a plain file")
        if any(True for _ in os.scandir(root)):
            raise RootRefused(
                f"sessions folder {root} is not empty and has no {MARKER} file, so it is not "
                f"a folder this backend made; name a new or empty folder (or create {marker} "
                "to adopt it)")
    return root


def _refuse_shared(root: Path, given: str) -> None:
    """Refuse folders that hold other things than sessions by their nature."""
    places = {"the file system root": Path("/"), "the home folder": Path.home().resolve(),
              "the current folder": Path.cwd().resolve()}
    for what, place in places.items():
        if root == place:
            raise RootRefused(f"sessions folder {given!r} is {what}: name a folder of its "
                              "own, e.g. ./sessions")
        if root in place.parents:
            raise RootRefused(f"sessions folder {given!r} holds {what}: name a folder of its "
                              "own, e.g. ./sessions")


def is_plain_file(path: Path) -> bool:
    """A regular file, not a link to one."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _token_key(marker: Path) -> bytes:
    """The key in the marker; an empty (new or adopted) marker gets a new one."""
    text = marker.read_text() if marker.exists() else ""
    if text.strip():
        try:
            data = json.loads(text)
            return bytes.fromhex(data["token_key"])
        except (ValueError, KeyError, TypeError):
            raise RootRefused(f"{marker} is damaged; move it away and recreate it empty "
                              "(identity tokens issued before then stop working)") from None
    key = secrets.token_bytes(32)
    body = json.dumps({"format": _FORMAT, "version": 1, "token_key": key.hex()}) + "\n"
    tmp = marker.with_name(f".{MARKER}.{secrets.token_hex(4)}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, marker)
    return key
