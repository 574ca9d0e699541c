"""Connecting to a backend: a remote address, or a local ``dreamjourney serve`` we start."""

from __future__ import annotations

import logging
import queue
import subprocess
import sys
import threading
from dataclasses import dataclass

logger = logging.getLogger(__name__)

READY_LINE = "dreamjourney backend listening on "


@dataclass
class LocalBackend:
    """A ``dreamjourney serve`` child process on loopback; ``stop`` ends it."""

    process: subprocess.Popen
    address: str

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
                return LocalBackend(proc, line[len(READY_LINE):].strip())
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
