"""Engines for measuring and testing the cluster without a GPU.

- :class:`SleepEngine`: a simulated GPU engine; each frame costs a fixed sleep (the GPU's
  time, not this machine's cores), and each frame carries the wall-clock time it was made,
  written in 8 x 8 pixel blocks that survive JPEG, so a client can measure per-frame latency.
- :class:`PacedEngine`: a real engine (``classic``) slowed to a chosen pace: a wait before
  the first event and before every frame, so a test can act mid-job; and held before its
  first event for as long as a flag file names the job's scene, or before its frame ``k``
  while one names ``<scene>@<k>``, so a test can act before a job starts, or between two of
  its frames, however slow the machine is.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from backend.engines import create_engine
from backend.engines.base import (
    DynamicsRequest,
    Engine,
    Event,
    FrameOut,
    OpenRequest,
    PointsOut,
    Scene,
    TransitionRequest,
)
from backend.geometry.cloud import PointCloud
from backend.geometry.store import PointStore
from protocol.camera import intrinsics

BLOCK = 8
"""Pixels per side of one time-stamp bit."""


def stamp(image: np.ndarray, t: float) -> np.ndarray:
    """``image`` with the float64 ``t`` written in its top-left 64 x 64 pixels (8 x 8 bits)."""
    bits = np.unpackbits(np.frombuffer(struct.pack("<d", t), np.uint8)).reshape(8, 8)
    out = image.copy()
    out[: 8 * BLOCK, : 8 * BLOCK] = np.kron(bits, np.ones((BLOCK, BLOCK), np.uint8))[..., None] * 255
    return out


def read_stamp(image: np.ndarray) -> float:
    """The time written by :func:`stamp` (a JPEG of the frame reads back exactly)."""
    grey = image[: 8 * BLOCK, : 8 * BLOCK].astype(np.float32).mean(axis=2)
    bits = grey.reshape(8, BLOCK, 8, BLOCK)[:, 2:-2, :, 2:-2].mean(axis=(1, 3)) > 127
    return struct.unpack("<d", np.packbits(bits.astype(np.uint8)).tobytes())[0]


class SleepEngine(Engine):
    """Simulated GPU engine: ``frame_s`` of sleep per frame, time-stamped grey frames."""

    name = "classic"  # stands in for the default engine in the scale-out benchmark

    def __init__(self, device: str = "cpu", frame_s: float = 0.05, size: int = 64,
                 points_per_job: int = 256):
        if size < 8 * BLOCK:
            raise ValueError(f"size must be at least {8 * BLOCK} pixels, got {size}")
        self.device = device
        self.frame_s = frame_s
        self.size = size
        self.points_per_job = points_per_job
        self._rng = np.random.default_rng(0)

    def _points(self, n: int) -> PointCloud:
        xyz = self._rng.uniform(-1, 1, (n, 3)).astype(np.float32) + np.array([0, 0, 4], np.float32)
        return PointCloud(xyz, np.full((n, 3), 128, np.uint8), np.full(n, 0.01, np.float32))

    def open_scene(self, request: OpenRequest) -> tuple[Scene, PointCloud]:
        h, w = request.image.shape[:2]
        K = request.K if request.K is not None else intrinsics(w, h, 60.0)
        store = PointStore(voxel_size=1e-4)
        store.append(self._points(self.points_per_job))
        scene = Scene(request.scene_id, request.image, K, store, 4.0, request.text, engine=self.name)
        return scene, store.cloud()

    def resume_scene(self, scene_id: str, sessions) -> tuple[Scene, PointCloud]:
        saved = sessions.load(scene_id)
        store = PointStore.load(saved["cloud_path"])
        scene = Scene(scene_id, saved["image"], np.asarray(saved["K"]), store, float(saved["median_depth"]),
                      saved["text"], pose=np.asarray(saved["pose"]), engine=self.name)
        return scene, store.cloud()

    def _frames(self, poses: np.ndarray) -> Iterator[FrameOut]:
        base = np.full((self.size, self.size, 3), 96, np.uint8)
        for i, pose in enumerate(poses):
            time.sleep(self.frame_s)
            yield FrameOut(i, stamp(base, time.time()), pose)

    def transition(self, scene: Scene, request: TransitionRequest) -> Iterator[Event]:
        yield from self._frames(request.poses)
        scene.pose = np.asarray(request.poses[-1], dtype=np.float64)
        yield PointsOut(scene.cloud.append(self._points(self.points_per_job)))

    def dynamics(self, scene: Scene, request: DynamicsRequest) -> Iterator[Event]:
        yield from self._frames(np.repeat(request.pose[None], request.num_frames, axis=0))


HOLD_MAX_S = 600.0
"""The longest a job waits for its scene's flag file to go."""


class PacedEngine(Engine):
    """A registry engine (``inner``) with a wait before its first event and before each frame.

    With ``hold_dir`` set, a job also waits before its first event while the file
    ``<hold_dir>/<scene id>`` exists, and before its frame ``k`` (from 0) while
    ``<hold_dir>/<scene id>@<k>`` exists (each at most ``HOLD_MAX_S``).
    """

    def __init__(self, device: str = "cpu", inner: str = "classic", start_s: float = 0.0,
                 frame_s: float = 0.0, hold_dir: str | None = None, **options):
        self.engine = create_engine(inner, device=device, **options)
        self.name = self.engine.name
        self.start_s = start_s
        self.frame_s = frame_s
        self.hold_dir = None if hold_dir is None else Path(hold_dir)

    def open_scene(self, request: OpenRequest) -> tuple[Scene, PointCloud]:
        return self.engine.open_scene(request)

    def resume_scene(self, scene_id: str, sessions) -> tuple[Scene, PointCloud]:
        return self.engine.resume_scene(scene_id, sessions)

    def _paced(self, scene_id: str, events: Iterator[Event]) -> Iterator[Event]:
        time.sleep(self.start_s)
        self._wait_released(scene_id)
        frames = 0
        for event in events:
            if isinstance(event, FrameOut):
                time.sleep(self.frame_s)
                self._wait_released(f"{scene_id}@{frames}")
                frames += 1
            yield event

    def transition(self, scene: Scene, request: TransitionRequest) -> Iterator[Event]:
        return self._paced(scene.scene_id, self.engine.transition(scene, request))

    def dynamics(self, scene: Scene, request: DynamicsRequest) -> Iterator[Event]:
        return self._paced(scene.scene_id, self.engine.dynamics(scene, request))

    def _wait_released(self, name: str) -> None:
        if self.hold_dir is None:
            return
        flag = self.hold_dir / name
        deadline = time.monotonic() + HOLD_MAX_S
        while flag.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
