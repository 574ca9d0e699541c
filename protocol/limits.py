"""Hard limits of the protocol and the named errors raised when input breaks them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Bounds every decoder enforces before it allocates anything large."""

    max_message_bytes: int = 64 * 1024 * 1024
    """All frames of one message together."""
    max_blobs: int = 16
    """Blob frames after the header."""
    max_header_bytes: int = 1024 * 1024
    """The msgpack header (frame 0)."""
    max_image_pixels: int = 4096 * 4096
    max_points_per_chunk: int = 1 << 20
    max_trajectory_len: int = 1024
    max_array_elements: int = 64 * 1024 * 1024


DEFAULT_LIMITS = Limits()


class ProtocolError(Exception):
    """A message broke the protocol. ``code`` is the Error code sent back to the peer."""

    code = "bad_message"

    def __init__(self, message: str, request_id: str | None = None):
        super().__init__(message)
        self.request_id = request_id


class BadMessage(ProtocolError):
    code = "bad_message"


class UnknownType(ProtocolError):
    code = "unknown_type"


class TooLarge(ProtocolError):
    code = "too_large"


class BadBlob(ProtocolError):
    code = "bad_blob"


class BadArray(ProtocolError):
    code = "bad_array"


class BadImage(ProtocolError):
    code = "bad_image"


class BadValue(ProtocolError):
    code = "bad_value"


class VersionMismatch(ProtocolError):
    code = "version_mismatch"
