"""A worker as the front door sees it (``Slot``), and what an engine needs of the pool that
hands slots out (``SlotSource``: ``WorkerPool`` is one), so the engine never imports the pool."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from backend.cluster.config import ClusterConfig


@dataclass
class Slot:
    """The front door's view of one EngineWorker."""

    index: int
    name: str
    actor: Any
    """The worker's Ray actor handle (``EngineWorker``; Ray is optional, so untyped here)."""
    state: str = "idle"
    """idle, busy, restarting or lost."""
    info: dict = field(default_factory=dict)
    holds: dict[str, str] = field(default_factory=dict)
    """scene_id -> version token resident in the worker."""
    job: dict | None = None
    overdue: bool = False
    restarts: int = 0
    jobs_done: int = 0
    idle_since: float = field(default_factory=time.monotonic)


class SlotSource(Protocol):
    """Hands out free workers one job at a time (``WorkerPool``)."""

    ray: Any
    """The initialised ``ray`` module."""
    config: ClusterConfig

    def acquire(self, scene_id: str | None = None, token: str | None = None, kind: str = "open",
                scene: object = None) -> Slot: ...

    def release(self, slot: Slot, scene_id: str | None = None, token: str | None = None,
                lost: bool = False, done: bool = False) -> None: ...
