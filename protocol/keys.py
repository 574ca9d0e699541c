"""CurveZMQ key files: making them (secrets readable by their owner only) and finding them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import zmq.auth


@dataclass(frozen=True)
class ServerKeys:
    """CurveZMQ key files for the server: its secret key and a folder of allowed client keys."""

    secret_file: Path
    """``server.key_secret`` made by ``dreamjourney keys``."""
    authorized_dir: Path
    """Folder of client ``*.key`` public key files; only these clients may connect."""

    @classmethod
    def from_folder(cls, folder: str | Path) -> ServerKeys:
        """The keys ``dreamjourney keys FOLDER`` wrote; raises FileNotFoundError naming what is missing."""
        root = Path(folder)
        keys = cls(root / "server.key_secret", root / "authorized_clients")
        _require(root, keys.secret_file, keys.authorized_dir)
        return keys

    def load(self) -> tuple[bytes, bytes]:
        """(public, secret) of the server; ValueError if the file holds no secret."""
        pub, sec = zmq.auth.load_certificate(self.secret_file)
        if sec is None:
            raise ValueError(f"{self.secret_file} holds no secret key")
        return pub, sec


@dataclass(frozen=True)
class ClientKeys:
    """CurveZMQ key files for a client: its own secret key and the server's public key."""

    secret_file: Path
    server_public_file: Path

    @classmethod
    def from_folder(cls, folder: str | Path, client_name: str = "client") -> ClientKeys:
        """The keys ``dreamjourney keys FOLDER`` wrote; raises FileNotFoundError naming what is missing."""
        root = Path(folder)
        keys = cls(root / f"{client_name}.key_secret", root / "server.key")
        _require(root, keys.secret_file, keys.server_public_file)
        return keys

    def load(self) -> tuple[bytes, bytes, bytes]:
        """(client public, client secret, server public)."""
        pub, sec = zmq.auth.load_certificate(self.secret_file)
        server_pub, _ = zmq.auth.load_certificate(self.server_public_file)
        if sec is None:
            raise ValueError(f"{self.secret_file.name} holds no secret key")
        return pub, sec, server_pub


def _require(root: Path, *paths: Path) -> None:
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run `dreamjourney keys {root}` first")


def make_keys(folder: str | Path, client_name: str = "client") -> dict[str, Path]:
    """Create a server and a client key pair under ``folder`` and authorise the client.

    Secret key files are mode 0600 (owner read/write only).
    """
    root = Path(folder)
    (root / "authorized_clients").mkdir(parents=True, exist_ok=True)
    old = os.umask(0o077)  # secrets are never world-readable, not even for an instant
    try:
        server_pub, server_sec = zmq.auth.create_certificates(root, "server")
        client_pub, client_sec = zmq.auth.create_certificates(root, client_name)
    finally:
        os.umask(old)
    for secret in (server_sec, client_sec):
        os.chmod(secret, 0o600)
    for public in (server_pub, client_pub):
        os.chmod(public, 0o644)
    allowed = root / "authorized_clients" / Path(client_pub).name
    allowed.write_bytes(Path(client_pub).read_bytes())
    return {
        "server_public": Path(server_pub),
        "server_secret": Path(server_sec),
        "client_public": Path(client_pub),
        "client_secret": Path(client_sec),
        "authorized_dir": root / "authorized_clients",
    }
