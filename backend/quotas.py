"""What one client identity, and everyone together, may keep on disk.

Counts come from the session store's index (``SessionStore.usage``: sessions and bytes per
owner, kept current after every commit). Each check raises :class:`QuotaExceeded` with one
sentence naming the limit and its key (``quotas.*``); the caller answers ``busy`` (an
OpenScene) or fails the job with ``quota``. A job is checked before it starts and again
while it writes, against what it has written so far and the cloud it is about to write, so
an identity's sessions stay within its quota: a clip that would pass it is not kept.
"""

from __future__ import annotations

import shutil

from backend.config import QuotasConfig
from backend.session import SessionStore
from protocol.errors import Busy

MB = 1 << 20
PLY_BYTES_PER_POINT = 19
"""x y z radius float32 and r g b uint8 per point (``backend.geometry.ply``)."""


class QuotaExceeded(Busy):
    """A quota or the free-disk floor would be passed; the message names the key."""


def cloud_bytes(points: int) -> int:
    """Bytes of a cloud of ``points`` points on disk (header included)."""
    return points * PLY_BYTES_PER_POINT + 1024


def _mb(n: float) -> str:
    return f"{n / MB:.1f} MB"


class Quotas:
    """Checks against ``config`` for the sessions in ``sessions``."""

    def __init__(self, config: QuotasConfig, sessions: SessionStore):
        self.config = config
        self.sessions = sessions

    def check_new_scene(self, owner: str, extra_bytes: int = 0) -> None:
        """Room for one more saved session of ``extra_bytes`` for ``owner``."""
        c = self.config
        mine, _ = self.sessions.usage(owner)
        if mine >= c.scenes_per_client:
            raise QuotaExceeded(f"you have {mine} saved scenes; the limit per client is "
                                f"{c.scenes_per_client} (quotas.scenes_per_client)")
        total, _ = self.sessions.usage()
        if total >= c.scenes_total:
            raise QuotaExceeded(f"the backend holds {total} saved scenes, its limit "
                                "(quotas.scenes_total)")
        self.check_bytes(owner, extra_bytes)

    def check_bytes(self, owner: str, extra_bytes: int = 0) -> None:
        """Room on disk for ``extra_bytes`` more of ``owner``'s sessions."""
        c = self.config
        _, mine = self.sessions.usage(owner)
        if mine + extra_bytes > c.disk_mb_per_client * MB:
            raise QuotaExceeded(f"your sessions would use {_mb(mine + extra_bytes)} on disk; the "
                                f"limit per client is {c.disk_mb_per_client:g} MB "
                                "(quotas.disk_mb_per_client)")
        _, total = self.sessions.usage()
        if total + extra_bytes > c.disk_mb_total * MB:
            raise QuotaExceeded(f"the backend's sessions would use {_mb(total + extra_bytes)}, "
                                f"over its limit of {c.disk_mb_total:g} MB (quotas.disk_mb_total)")
        free = shutil.disk_usage(self.sessions.root).free
        if free - extra_bytes < c.min_free_disk_mb * MB:
            raise QuotaExceeded(f"the backend's disk has {_mb(free)} free, under its floor of "
                                f"{c.min_free_disk_mb:g} MB (quotas.min_free_disk_mb)")
