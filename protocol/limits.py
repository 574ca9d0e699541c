"""Hard limits of the protocol. The named errors raised when input breaks them live in
:mod:`protocol.errors` (re-exported here)."""

from __future__ import annotations

from dataclasses import dataclass

from protocol.errors import (  # noqa: F401 - re-exported for callers of the old home
    BadArray,
    BadBlob,
    BadImage,
    BadMessage,
    BadValue,
    Busy,
    ProtocolError,
    TooLarge,
    UnknownType,
)


@dataclass(frozen=True)
class Limits:
    """Bounds every decoder enforces before it allocates anything large."""

    max_message_bytes: int = 48 * 1024 * 1024
    """All frames of one message together; also the socket's per-frame MAXMSGSIZE."""
    max_blobs: int = 4
    """Blob frames after the header (no message uses more than 3)."""
    max_header_bytes: int = 64 * 1024
    """The msgpack header (frame 0)."""
    max_image_pixels: int = 2048 * 2048
    """Largest image (width x height) accepted, checked from its header before decoding."""
    max_points_per_chunk: int = 1 << 20
    max_trajectory_len: int = 1024
    max_array_elements: int = 64 * 1024 * 1024


DEFAULT_LIMITS = Limits()
