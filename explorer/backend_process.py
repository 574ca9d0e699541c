"""Connecting to a backend: a remote address, or a local ``dreamjourney serve`` we start."""

from __future__ import annotations

import logging
import os
import queue
import re
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol.messages import Error, Welcome

logger = logging.getLogger(__name__)

READY_LINE = "dreamjourney backend listening on "


@dataclass
class LocalBackend:
    """A ``dreamjourney serve`` child process on loopback; ``stop`` ends it."""

    process: subprocess.Popen
    address: str
    args: list[str] = field(default_factory=list)
    """The extra ``serve`` arguments it was started with (a restart reuses them)."""

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_local_backend(extra_args: Sequence[str] = (), timeout: float = 60.0) -> LocalBackend:
    """Start ``dreamjourney serve`` on a free loopback port and wait until it listens."""
    cmd = [sys.executable, "-m", "explorer.cli", "serve", "--bind", "tcp://127.0.0.1:*",
           "--parent-pid", str(os.getpid()), *extra_args]
    logger.info("starting a local backend: %s", " ".join(cmd))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None, text=True, bufsize=1)
    lines: queue.Queue = queue.Queue()
    stdout = proc.stdout
    if stdout is None:  # never: stdout is a pipe
        raise RuntimeError("the backend's stdout is not a pipe")

    def _read() -> None:
        for line in stdout:
            lines.put(line)
            logger.debug("backend: %s", line.rstrip())
        lines.put(None)

    threading.Thread(target=_read, name="dj-backend-stdout", daemon=True).start()
    try:
        while True:
            line = lines.get(timeout=timeout)
            if line is None:
                raise RuntimeError(
                    f"the local backend exited with code {proc.wait()} before listening "
                    "(run `dreamjourney serve` yourself to see why)"
                )
            if line.startswith(READY_LINE):
                return LocalBackend(proc, line[len(READY_LINE):].strip(), list(extra_args))
    except queue.Empty:
        proc.kill()
        raise RuntimeError(f"the local backend did not start within {timeout:.0f} s") from None


@dataclass(frozen=True)
class Wanted:
    """The engine and sampler preset a person asked for, checked against the backend's
    Welcome (the explorer keeps no list of names: the backend says what it offers)."""

    engine: str | None = None
    preset: str | None = None
    preset_from: str = "--preset"
    """Where the preset came from, for the error (the flag, or the settings key)."""


class NotOffered(RuntimeError):
    """The backend does not offer the engine or preset asked for."""


def check_offered(welcome: Welcome, wanted: Wanted) -> None:
    """Raise :class:`NotOffered` naming what the backend offers instead. A preset on a
    backend whose engines take none is only logged: it changes nothing there."""
    if wanted.engine is not None and wanted.engine not in welcome.engines:
        raise NotOffered(f"--engine {wanted.engine!r}: this backend offers "
                         f"{', '.join(welcome.engines)}")
    if wanted.preset is None or wanted.preset in welcome.presets:
        return
    if not welcome.presets:
        logger.warning("%s %r is ignored: the backend's engines (%s) take no sampler preset",
                       wanted.preset_from, wanted.preset, ", ".join(welcome.engines))
        return
    raise NotOffered(f"{wanted.preset_from} {wanted.preset!r}: this backend offers "
                     f"{', '.join(welcome.presets)}")


def connect(address: str, settings, keys_folder: str | None = None, token: str | None = None,
            wanted: Wanted | None = None):
    """A connected :class:`protocol.transport.Client` (raises HandshakeError on failure, and
    :class:`NotOffered` when the backend lacks what ``wanted`` names).

    ``token`` is the loopback identity to present (None asks the backend for a new one)."""
    from protocol.transport import Client, ClientKeys

    keys = ClientKeys.from_folder(keys_folder) if keys_folder else None
    net = settings.network
    client = Client(address, credits=net.credits, heartbeat_s=net.heartbeat_s,
                    peer_timeout_s=net.peer_timeout_s, keys=keys, token=token)
    try:
        welcome = client.connect(timeout=net.connect_timeout_s)
        check_offered(welcome, wanted or Wanted())
    except Exception:
        client.close()
        raise
    logger.info("connected to %s (%s; engines: %s)", address, welcome.server,
                ", ".join(welcome.engines))
    return client


_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,128}")


def identity_path(settings) -> Path:
    """The file keeping the explorer's loopback identity token."""
    if settings.network.identity_file:
        return Path(settings.network.identity_file).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "dreamjourney" / "identity"


def load_token(path: Path) -> str | None:
    """The token saved in ``path``; None when there is none (or it is not a token)."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return text if _TOKEN.fullmatch(text) else None


def save_token(path: Path, token: str) -> None:
    """Keep ``token`` in ``path``, readable by this user only (0600)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        part = path.with_name(f".{path.name}.{os.getpid()}.part")
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        os.replace(part, path)
    except OSError as exc:  # the scene still works; only a later run cannot resume it
        logger.warning("cannot save the identity token to %s: %s", path, exc)


def is_loopback(address: str) -> bool:
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return address.startswith(("ipc://", "inproc://")) or host in ("localhost", "::1") \
        or host.startswith("127.")


class PendingClient:
    """Stands in for the connection while a local backend starts: requests wait here, in
    order, and go out on the real connection once it is up (:meth:`BackendLink.watch`)."""

    def __init__(self):
        self.queued: list[tuple[Any, Any]] = []

    def send(self, msg: Any, blobs: Any = ()) -> None:
        self.queued.append((msg, blobs))

    def poll(self, timeout: float | None = 0.0) -> None:
        return None

    def credit(self, frames: int) -> None:
        pass  # no frame can have come before the connection

    def close(self) -> None:
        self.queued.clear()


class BackendLink:
    """The explorer's connection, kept alive.

    With no address it starts a local ``dreamjourney serve`` (saving sessions under
    ``session_folder``); with ``wait=False`` that happens on a background thread, so the
    window opens at once, ``client`` is a :class:`PendingClient` meanwhile, and
    :meth:`watch` hands over the real connection when it is up (or says in
    :attr:`failed` why there is none). :meth:`watch`, called every frame, also notices a lost
    backend: it restarts a local one that died, or reconnects to the remote address, on a
    background thread with ``network.reconnect_s`` between attempts, then resumes the scene
    on the new connection.

    On loopback a scene belongs to the identity token the backend's Welcome handed out: the
    link presents it again on every reconnection, and keeps it in :func:`identity_path`
    (0600) so that a later ``explore --resume`` owns the same sessions. Under CURVE the key
    is the identity and no token is kept.
    """

    def __init__(self, settings, address: str | None = None, keys_folder: str | None = None,
                 serve_args: Sequence[str] = (), wait: bool = True, wanted: Wanted | None = None):
        self.settings = settings
        self.wanted = wanted or Wanted()
        self.keys_folder = keys_folder
        self.local: LocalBackend | None = None
        self.serve_args = list(serve_args)
        self.address = address
        self._identity = None
        self.token = None
        self.reconnects = 0
        self.failed: str | None = None
        """Why the first connection could not be made (``wait=False`` only)."""
        self._thread: threading.Thread | None = None
        self._fresh = None
        self._closed = threading.Event()
        if wait or address is not None:
            self.client = self._first_connection()
        else:
            self.client = PendingClient()
            self._thread = threading.Thread(target=self._connect_aside, name="dj-connect",
                                            daemon=True)
            self._thread.start()

    def _first_connection(self):
        if self.address is None:
            self.local = start_local_backend(self.serve_args)
            self.address = self.local.address
        if is_loopback(self.address) and not self.keys_folder:
            self._identity = identity_path(self.settings)
            self.token = load_token(self._identity)
        client = connect(self.address, self.settings, self.keys_folder, self.token, self.wanted)
        self._keep_token(client)
        return client

    def _connect_aside(self) -> None:
        try:
            self._fresh = self._first_connection()
        except Exception as exc:  # noqa: BLE001 - said in the window and on exit
            self.failed = str(exc)
            logger.error("no backend: %s", exc)

    def watch(self, session) -> None:
        """Once per frame: start reconnecting when the session lost its peer; hand a new
        connection to the session when one is ready."""
        if self._fresh is not None and isinstance(self.client, PendingClient):
            pending, self.client, self._fresh = self.client, self._fresh, None
            self._thread = None
            for msg, blobs in pending.queued:  # what the app asked for while it started
                self.client.send(msg, blobs)
            session.client = self.client
            return
        if self._fresh is not None:
            old, self.client, self._fresh = self.client, self._fresh, None
            self._thread = None
            self.reconnects += 1
            threading.Thread(target=old.close, daemon=True).start()
            session.reattach(self.client)
            session.status = "reconnected: resuming the scene..."
            return
        if isinstance(self.client, PendingClient):
            if self.failed is None:
                session.status = "starting the local backend..."
            elif session.open_error is None:
                session.status = f"no backend: {self.failed}"
                session.open_error = Error(code="internal", message=self.failed)
            return
        if session.peer_gone and self._thread is None:
            session.status = "backend lost: " + ("restarting it..." if self.local else "reconnecting...")
            self._thread = threading.Thread(target=self._reconnect, name="dj-reconnect", daemon=True)
            self._thread.start()

    def _reconnect(self) -> None:
        while not self._closed.is_set():
            try:
                if self.local is not None and not self.local.alive:
                    logger.warning("the local backend died (code %s): restarting it",
                                   self.local.process.returncode)
                    self.local = start_local_backend(self.local.args)
                    self.address = self.local.address
                if self.address is None:
                    raise RuntimeError("reconnecting before the first connection")
                fresh = connect(self.address, self.settings, self.keys_folder, self.token,
                                self.wanted)
                self._keep_token(fresh)
                self._fresh = fresh
                logger.info("reconnected to %s", self.address)
                return
            except Exception as exc:  # noqa: BLE001 - try again until closed
                logger.warning("reconnecting to the backend failed: %s", exc)
                self._closed.wait(self.settings.network.reconnect_s)

    def _keep_token(self, client) -> None:
        """Remember the identity ``client`` was welcomed with (and save it when it is new)."""
        token = client.token
        if not token or token == self.token:
            return
        self.token = token
        if self._identity is not None:
            save_token(self._identity, token)

    def close(self) -> None:
        self._closed.set()
        if self._thread is not None and isinstance(self.client, PendingClient):
            self._thread.join()  # a backend starting now is stopped, not left behind
        self.client.close()
        if self._fresh is not None:
            self._fresh.close()
            self._fresh = None
        if self.local is not None:
            self.local.stop()
