"""Connecting to a backend: a remote address, or a local ``dreamjourney serve`` we start."""

from __future__ import annotations

import logging
import queue
import subprocess
import sys
import threading
from dataclasses import dataclass, field

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


def start_local_backend(extra_args: list[str] = (), timeout: float = 60.0) -> LocalBackend:
    """Start ``dreamjourney serve`` on a free loopback port and wait until it listens."""
    cmd = [sys.executable, "-m", "explorer.cli", "serve", "--bind", "tcp://127.0.0.1:*",
           *extra_args]
    logger.info("starting a local backend: %s", " ".join(cmd))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None, text=True, bufsize=1)
    lines: queue.Queue = queue.Queue()

    def _read() -> None:
        for line in proc.stdout:
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


def connect(address: str, settings, keys_folder: str | None = None):
    """A connected :class:`protocol.transport.Client` (raises HandshakeError on failure)."""
    from protocol.transport import Client, ClientKeys

    keys = ClientKeys.from_folder(keys_folder) if keys_folder else None
    net = settings.network
    client = Client(address, credits=net.credits, heartbeat_s=net.heartbeat_s,
                    peer_timeout_s=net.peer_timeout_s, keys=keys)
    try:
        welcome = client.connect(timeout=net.connect_timeout_s)
    except Exception:
        client.close()
        raise
    logger.info("connected to %s (%s; engines: %s)", address, welcome.server,
                ", ".join(welcome.engines))
    return client


class BackendLink:
    """The explorer's connection, kept alive.

    With no address it starts a local ``dreamjourney serve`` (saving sessions under
    ``session_folder``). :meth:`watch`, called every frame, notices a lost backend: it
    restarts a local one that died, or reconnects to the remote address, on a background
    thread with ``network.reconnect_s`` between attempts, then resumes the scene on the new
    connection.
    """

    def __init__(self, settings, address: str | None = None, keys_folder: str | None = None,
                 serve_args: list[str] = ()):
        self.settings = settings
        self.keys_folder = keys_folder
        self.local: LocalBackend | None = None
        if address is None:
            self.local = start_local_backend(list(serve_args))
            address = self.local.address
        self.address = address
        self.client = connect(address, settings, keys_folder)
        self.reconnects = 0
        self._thread: threading.Thread | None = None
        self._fresh = None
        self._closed = threading.Event()

    def watch(self, session) -> None:
        """Once per frame: start reconnecting when the session lost its peer; hand a new
        connection to the session when one is ready."""
        if self._fresh is not None:
            old, self.client, self._fresh = self.client, self._fresh, None
            self._thread = None
            self.reconnects += 1
            threading.Thread(target=old.close, daemon=True).start()
            session.reattach(self.client)
            session.status = "reconnected: resuming the scene..."
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
                self._fresh = connect(self.address, self.settings, self.keys_folder)
                logger.info("reconnected to %s", self.address)
                return
            except Exception as exc:  # noqa: BLE001 - try again until closed
                logger.warning("reconnecting to the backend failed: %s", exc)
                self._closed.wait(self.settings.network.reconnect_s)

    def close(self) -> None:
        self._closed.set()
        self.client.close()
        if self._fresh is not None:
            self._fresh.close()
        if self.local is not None:
            self.local.stop()
