"""The scene's point store: append-only, de-duplicated, capped, streamed in chunks.

``PointStore(voxel_size=None, capacity=...)``

- ``append(cloud) -> PointCloud`` adds the points of a freshly lifted view (lift only the
  pixels the existing cloud did not cover: ``unproject(..., mask=~render.mask)``) and
  returns the delta: exactly the points that were added, in the order they now sit at the
  end of the store.
- De-duplication by voxel hashing: a new point is dropped when a point already in the store
  occupies its voxel. With ``voxel_size=None`` (default) voxels adapt to the point's own
  footprint: a point of radius ``r`` is hashed in a cubic grid of edge ``2**floor(log2(
  sqrt(2) r))`` (no coarser than its pixel spacing), and also checked against the next
  coarser grid, so a view lifted again from the same distance adds nothing while a closer
  look adds its finer points. A float ``voxel_size`` uses one fixed grid.
  Points inside one append are not de-duplicated against each other (a view's pixels are
  distinct).
- Capacity policy: the store never holds more than ``capacity`` points and never removes
  points (clients apply deltas append-only). When an append does not fit, its new points are
  thinned evenly (every k-th point) to the room left, so a view is covered sparsely rather
  than cut off; when the store is full, appends add nothing. Both are logged.
- Level of detail: ``append_within_budget(cloud, eye, focal)`` first makes room for the new
  points by merging the far, small stored points into voxels (one averaged point per voxel,
  the voxel edge growing with the distance from ``eye``, so a merged point covers about the
  same on-screen area as the points it replaced), then appends: the world keeps growing at
  the budget, losing detail only where it is far away. Merging keeps the points' order.
- ``chunks(delta, chunk_size)`` splits a delta into pieces for ``PointsDelta`` messages.
- ``set_motion(index, motion)`` gives points a looping motion (4D points,
  ``geometry.motion``); appended points are static; merged points move as their voxel's mean.
- ``save(path)`` / ``PointStore.load(path)`` write and read binary PLY (see ``ply``), motion
  included.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from backend.geometry.cloud import PointCloud
from backend.geometry.motion import any_moving
from backend.geometry.ply import read_ply, write_ply

logger = logging.getLogger(__name__)

_BITS = 19  # per axis; levels take the remaining bits of the int64 key
_HALF = 1 << (_BITS - 1)
_LEVEL_OFFSET = 32  # levels -32..31 fit the 6 bits above the 3 x 19 cell bits


def _merge_sorted(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Union of two sorted key arrays with no key in both (new keys were checked unseen)."""
    out = np.concatenate([a, b])
    out.sort(kind="stable")  # timsort merges the two sorted runs in linear time
    return out


def _merge_voxels(cloud: PointCloud, keys: np.ndarray) -> PointCloud:
    """One point per distinct key: mean position and colour, radius covering the voxel's
    points; each merged point takes the place of its voxel's first point (order kept)."""
    uniq, first, inverse, counts = np.unique(keys, return_index=True, return_inverse=True,
                                             return_counts=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    slot = rank[inverse]
    n = len(uniq)
    w = counts[order].astype(np.float64)[:, None]
    xyz = np.stack([np.bincount(slot, cloud.xyz[:, c], n) for c in range(3)], 1) / w
    rgb = np.stack([np.bincount(slot, cloud.rgb[:, c], n) for c in range(3)], 1) / w
    rgb = np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
    spread = np.linalg.norm(cloud.xyz - xyz[slot].astype(np.float32), axis=1) + cloud.radius
    radius = np.zeros(n, np.float32)
    np.maximum.at(radius, slot, spread.astype(np.float32))
    motion = None
    if cloud.motion is not None:  # a merged point moves as its voxel's points on average
        motion = np.stack([np.bincount(slot, cloud.motion[:, c], n) for c in range(4)], 1) / w
    return PointCloud(xyz.astype(np.float32), rgb, radius,
                      None if motion is None else motion.astype(np.float32))


class PointStore:
    """Holds the scene cloud; see the module docstring for the policies."""

    def __init__(self, voxel_size: float | None = None, capacity: int = 8_000_000):
        if voxel_size is not None and voxel_size <= 0:
            raise ValueError(f"voxel_size must be positive or None, got {voxel_size}")
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.voxel_size = voxel_size
        self.capacity = int(capacity)
        self.version = 0
        """Bumped on every change (renderers cache uploads by it)."""
        self._parts: list[PointCloud] = []
        self._cloud: PointCloud | None = PointCloud.empty()
        self._keys = np.zeros(0, np.int64)  # sorted voxel keys of the stored points
        self.merges = 0
        """How many times the budget rewrote the cloud (merge_far): undo cannot cross one."""

    def __len__(self) -> int:
        return sum(len(p) for p in self._parts)

    def cloud(self) -> PointCloud:
        """All stored points (concatenated once per change)."""
        if self._cloud is None:
            self._cloud = PointCloud.concat(self._parts)
            self._parts = [self._cloud]
        return self._cloud

    def _levels(self, radius: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Grid level and edge per point."""
        if self.voxel_size is not None:
            return np.zeros(radius.shape, np.int64), np.full(radius.shape, self.voxel_size)
        spacing = np.sqrt(2.0) * np.maximum(radius.astype(np.float64), 1e-30)
        level = np.clip(np.floor(np.log2(spacing)), -_LEVEL_OFFSET, _LEVEL_OFFSET - 2).astype(np.int64)
        return level, np.exp2(level.astype(np.float64))

    def _voxel_keys(self, xyz: np.ndarray, level: np.ndarray, edge: np.ndarray) -> np.ndarray:
        """int64 keys packing (level, ix, iy, iz); -1 where a coordinate is out of range."""
        cell = np.floor(xyz.astype(np.float64) / edge[:, None]).astype(np.int64) + _HALF
        ok = np.all((cell >= 0) & (cell < (1 << _BITS)), axis=1)
        key = (level + _LEVEL_OFFSET) << (3 * _BITS)
        key |= cell[:, 0] << (2 * _BITS) | cell[:, 1] << _BITS | cell[:, 2]
        return np.where(ok, key, -1)

    def _seen(self, keys: np.ndarray) -> np.ndarray:
        if len(self._keys) == 0:
            return np.zeros(keys.shape, bool)
        pos = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
        return (keys >= 0) & (self._keys[pos] == keys)

    def append(self, cloud: PointCloud) -> PointCloud:
        """Add the points of ``cloud`` that are new; returns the delta that was added."""
        if len(cloud) == 0:
            return PointCloud.empty()
        level, edge = self._levels(cloud.radius)
        own = self._voxel_keys(cloud.xyz, level, edge)
        dup = self._seen(own)
        if self.voxel_size is None:
            dup |= self._seen(self._voxel_keys(cloud.xyz, level + 1, edge * 2.0))
        fresh = np.flatnonzero(~dup)
        room = self.capacity - len(self)
        if len(fresh) > room:
            logger.warning(
                "point store full: keeping %d of %d new points (capacity %d)",
                max(room, 0), len(fresh), self.capacity,
            )
            fresh = fresh[np.linspace(0, len(fresh), max(room, 0), endpoint=False).astype(int)]
        delta = cloud.take(fresh)
        if len(delta):
            self._parts.append(delta)
            self._cloud = None
            new_keys = own[fresh]
            self._keys = _merge_sorted(self._keys, np.unique(new_keys[new_keys >= 0]))
            self.version += 1
        logger.debug("append: %d in, %d duplicate, %d added", len(cloud), int(dup.sum()), len(delta))
        return delta

    def append_within_budget(self, cloud: PointCloud, eye: np.ndarray, focal: float) -> PointCloud:
        """``append`` after merging far, small points to leave room for ``cloud`` (module doc).

        ``eye`` is the world position the new view is seen from, ``focal`` its focal length
        in pixels.
        """
        need = len(self) + len(cloud) - self.capacity
        if need > 0:
            self.merge_far(eye, focal, target=max(self.capacity - len(cloud), self.capacity // 2))
        return self.append(cloud)

    def merge_far(self, eye: np.ndarray, focal: float, target: int, px: float = 1.0) -> int:
        """Merge stored points into voxels of ``px`` * 2**k pixels' footprint at their distance
        from ``eye`` (k = 0, 1, ... until at most ``target`` points remain); returns the count."""
        cloud = self.cloud()
        dist = np.linalg.norm(cloud.xyz.astype(np.float64) - np.asarray(eye, np.float64)[:3], axis=1)
        size = px
        while len(cloud) > target and size < 1024:
            size *= 2.0
            edge = np.maximum(size * dist / max(focal, 1e-6), 1e-9)
            level = np.floor(np.log2(edge)).astype(np.int64)
            small = cloud.radius < 0.5 * np.exp2(level)
            if not small.any():
                continue
            keys = self._voxel_keys(cloud.xyz, level, np.exp2(level.astype(np.float64)))
            keys = np.where(small & (keys >= 0), keys, -1 - np.arange(len(cloud)))  # big: alone
            cloud = _merge_voxels(cloud, keys)
            dist = np.linalg.norm(cloud.xyz.astype(np.float64) - np.asarray(eye, np.float64)[:3], axis=1)
        if len(cloud) != len(self):
            logger.info("point budget: merged %d far points into %d", len(self), len(cloud))
            self._replace(cloud)
            self.merges += 1
        return len(cloud)

    def set_motion(self, index: np.ndarray, motion: np.ndarray) -> np.ndarray:
        """Give the points at ``index`` the looping ``motion`` (M x 4, ``geometry.motion``);
        returns the motion they had (to take it back)."""
        cloud = self.cloud()
        index = np.asarray(index, np.int64)
        if len(index) and (index.min() < 0 or index.max() >= len(cloud)):
            raise IndexError(f"motion indices must be in [0, {len(cloud)})")
        full = cloud.motion_or_static().copy()
        before = full[index].copy()
        full[index] = motion
        self._cloud = cloud.with_motion(full if any_moving(full) else None)
        self._parts = [self._cloud]
        self.version += 1
        return before

    @staticmethod
    def chunks(delta: PointCloud, chunk_size: int = 65536) -> Iterator[PointCloud]:
        """Consecutive pieces of ``delta`` of at most ``chunk_size`` points (one if empty)."""
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        if len(delta) == 0:
            yield delta
            return
        for start in range(0, len(delta), chunk_size):
            yield delta.take(slice(start, start + chunk_size))

    def save(self, path: str | Path) -> None:
        """Write the cloud as binary little-endian PLY (x y z red green blue radius)."""
        write_ply(path, self.cloud())

    @classmethod
    def load(cls, path: str | Path, voxel_size: float | None = None, capacity: int = 8_000_000) -> PointStore:
        """A store holding the points of a PLY file (de-duplication index rebuilt)."""
        store = cls(voxel_size=voxel_size, capacity=capacity)
        cloud = read_ply(path)
        if len(cloud) > capacity:
            raise ValueError(f"{path} has {len(cloud)} points, over the capacity {capacity}")
        store._replace(cloud)
        return store

    def truncate(self, count: int) -> None:
        """Keep only the first ``count`` points (undo of the appends after them); the
        de-duplication index is rebuilt from what is kept."""
        if count >= len(self):
            return
        self._replace(self.cloud().take(slice(0, max(0, int(count)))))

    def _replace(self, cloud: PointCloud) -> None:
        """Hold exactly ``cloud``, with the de-duplication index rebuilt from it."""
        self._parts = [cloud]
        self._cloud = cloud
        level, edge = self._levels(cloud.radius)
        keys = self._voxel_keys(cloud.xyz, level, edge)
        self._keys = np.unique(keys[keys >= 0])
        self.version += 1
