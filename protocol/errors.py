"""Every code the protocol can answer with, and the named exceptions that carry them.

``Error.code`` and ``JobFailed.code`` are typed with :data:`ErrorCode` and :data:`JobFailCode`
from here, so a code exists in exactly one place. Anything a peer's bytes can cause is one of
the :class:`ProtocolError` subclasses (answered with an ``Error``); engine failures and our own
bugs are reported under their own codes (``engine_error``, ``internal``), never as bad input.
"""

from __future__ import annotations

import re
from typing import Literal

ErrorCode = Literal[
    "bad_message",         # undecodable header, wrong framing
    "unknown_type",        # a ``type`` tag this protocol does not have
    "too_large",           # a message, blob, image or array over a limit
    "bad_blob",            # a reference to a blob frame that is missing or reused
    "bad_array",           # array dtype/shape/bytes disagree
    "bad_image",           # image undecodable or not the size its reference says
    "bad_value",           # a field out of range (non-finite, wrong length, ...)
    "version_mismatch",    # Hello with another protocol version
    "handshake_required",  # a request before Hello
    "unknown_scene",       # no such open scene / saved session for this client
    "unknown_engine",      # an engine the operator did not configure
    "unknown_job",         # Cancel of a job this client does not have
    "scene_exists",        # OpenScene would overwrite a saved session
    "forbidden",           # the scene belongs to another client
    "busy",                # a per-client or server limit is reached; the message names it
    "internal",            # a bug on the backend; the log has the traceback
]
"""Codes of :class:`protocol.messages.Error`."""

JobFailCode = Literal[
    "cancelled",       # the client's Cancel
    "bad_request",     # the job's inputs are invalid (poses, masks, sizes)
    "engine_error",    # the engine could not make the clip; the message says why
    "peer_gone",       # the client disconnected, so the job stopped
    "internal",        # a bug on the backend
    "busy",            # the scheduler refused the job
    "credit_timeout",  # the client granted no frame credit for too long
    "worker_lost",     # the worker running the job died (remote engines)
    "too_large",       # the job asks more work (pixels x frames) than the backend allows
    "time_limit",      # the job ran past the backend's wall-time limit per job
    "quota",           # the client's (or the backend's) disk quota would be exceeded
]
"""Codes of :class:`protocol.messages.JobFailed`."""


class ProtocolError(Exception):
    """A message broke the protocol. ``code`` is the Error code sent back to the peer."""

    code: ErrorCode = "bad_message"

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


class Busy(ProtocolError):
    """A limit on what one client (or the server) may have at once; the message names it."""

    code = "busy"


_ABSOLUTE_PATH = re.compile(r"(?:(?<=^)|(?<=[\s'\"(=\[]))/[^\s'\"()\[\],;]*")


def public_text(message: str) -> str:
    """``message`` with every absolute path replaced by ``<path>``: texts sent to a client
    never say where the backend keeps its files (the log has the details)."""
    return _ABSOLUTE_PATH.sub("<path>", message)
