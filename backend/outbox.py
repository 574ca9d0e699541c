"""Where a job's messages go: :class:`Outbox`, one explorer connection seen from a job.

A job only sends (progress, frames under the explorer's credit, points, its outcome), waits
for room for its next frame, and asks whether its explorer is still there. It never sees the
endpoint: :class:`PeerOutbox` binds one endpoint and one connection, and a test can hand a
job any object with these five methods.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from protocol.codec import Blob
from protocol.endpoint import ServerEndpoint
from protocol.endpoint_process import EndpointProcess
from protocol.messages import Message

Endpoint = ServerEndpoint | EndpointProcess
"""The backend's endpoint, in-process or in a process of its own (the same API)."""


class Outbox(Protocol):
    """One explorer connection, as a job sees it."""

    def send(self, msg: Message, blobs: Sequence[Blob] = ()) -> None:
        """Queue ``msg``; Frames wait for the explorer's credit, in order."""
        ...

    def wait_room(self, frames_ahead: int, timeout: float) -> bool:
        """Wait up to ``timeout`` s until fewer than ``frames_ahead`` Frames wait for credit;
        False on timeout or when the explorer is gone."""
        ...

    def has_room(self, frames_ahead: int) -> bool:
        """Whether a Frame would wait behind fewer than ``frames_ahead`` others, now."""
        ...

    def connected(self) -> bool:
        ...

    def discard_frames(self, job_id: str) -> None:
        """Drop ``job_id``'s Frames still waiting for credit."""
        ...


class PeerOutbox:
    """The :class:`Outbox` of connection ``peer`` on ``endpoint``."""

    def __init__(self, endpoint: Endpoint, peer: bytes):
        self.endpoint = endpoint
        self.peer = peer

    def send(self, msg: Message, blobs: Sequence[Blob] = ()) -> None:
        self.endpoint.send(self.peer, msg, blobs)

    def wait_room(self, frames_ahead: int, timeout: float) -> bool:
        return self.endpoint.wait_writable(self.peer, frames_ahead, timeout=timeout)

    def has_room(self, frames_ahead: int) -> bool:
        return self.endpoint.wait_writable(self.peer, frames_ahead, timeout=0)

    def connected(self) -> bool:
        return self.endpoint.is_connected(self.peer)

    def discard_frames(self, job_id: str) -> None:
        self.endpoint.discard_frames(self.peer, job_id)
