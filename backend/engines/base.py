"""The one interface every engine implements, and the events its runs yield.

An engine opens scenes and runs jobs. A run is a generator of events (:class:`ProgressOut`,
:class:`FrameOut`, :class:`PointsOut`); the server streams each event as it is yielded and
stops a cancelled run between two events by closing the generator, so an engine only has to
yield often (at least once per frame or sampling step) to be cancellable.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from backend.geometry.cloud import PointCloud
from protocol.messages import Arrow, DepthSource, SceneText, TransitionDynamics

if TYPE_CHECKING:
    from backend.geometry.layout import SceneLayout
    from backend.geometry.seen import SeenViews
    from backend.geometry.store import PointStore


@dataclass
class Scene:
    """A scene held by the backend. Arrays follow DESIGN.md's conventions."""

    scene_id: str
    image: np.ndarray
    """First view, H x W x 3 uint8 RGB."""
    K: np.ndarray
    """3 x 3 intrinsics in pixels, shared by every view of the scene."""
    cloud: PointStore
    """The scene's point store."""
    median_depth: float
    """Median z-depth of the first view; trajectory speeds scale with it."""
    text: SceneText = field(default_factory=SceneText)
    pose: np.ndarray = field(default_factory=lambda: np.eye(4))
    """Camera-to-world pose of the last view reached (OpenCV)."""
    engine: str = "classic"
    clips: list[dict] = field(default_factory=list)
    """Manifest entries of the clips made so far."""
    depth_source: DepthSource = "prior"
    """Where the first view's depth came from: "model", "given" or "prior"."""
    depth_note: str = ""
    """One line for the HUD about the depth in use."""
    points_budget: int = 0
    """Most points the scene's store keeps (0 = unbounded)."""
    seen: SeenViews | None = None
    """The views later fills must leave as they are (the classic engine); None: not tracked."""
    moving_regions: list[str] = field(default_factory=list)
    """Names of the regions whose points move (4D points), oldest first."""
    layout: SceneLayout | None = None
    """The first view's ground plane and sky; None when the view shows no level ground."""

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return int(self.image.shape[1]), int(self.image.shape[0])


@dataclass(frozen=True)
class OpenRequest:
    scene_id: str
    image: np.ndarray
    K: np.ndarray | None = None
    depth: np.ndarray | None = None
    """H x W float32 z-depth sent by the client, used when the engine has no depth model."""
    text: SceneText = SceneText()
    progress: Callable[[ProgressOut], None] | None = None
    """Called with ProgressOut events while opening (e.g. a model's first download)."""


@dataclass(frozen=True)
class TransitionRequest:
    poses: np.ndarray
    """N >= 2 float64 4 x 4 rigid camera-to-world transforms, the first at the scene's current
    view (checked by ``backend.wire``; engines trust them)."""
    fps: float = 24.0
    prompt: str | None = None
    seed: int | None = None
    preset: str | None = None
    """Sampler preset (``paper``, ``interactive``: a configs/models name); None: the default."""
    dynamics: TransitionDynamics | None = None
    """Set: a dynamic transition (the scene moves while the camera flies; see the message)."""


@dataclass(frozen=True)
class DynamicsRequest:
    pose: np.ndarray
    """float64 4 x 4 rigid camera-to-world transform (checked by ``backend.wire``)."""
    num_frames: int = 48
    fps: float = 24.0
    arrows: tuple[Arrow, ...] = ()
    frozen: np.ndarray | None = None
    """H x W bool, True where pixels must stay still."""
    prompt: str | None = None
    seed: int | None = None


@dataclass(frozen=True)
class ProgressOut:
    """How far a run (or an open) is; the server sends it as ``protocol.messages.Progress``."""

    stage: str
    """One of ``download``, ``load``, ``render``, ``prompt``, ``inpaint``, ``sample``,
    ``view``, ``grow``, ``keep``."""
    step: int
    total: int
    message: str = ""


@dataclass(frozen=True)
class FrameOut:
    index: int
    image: np.ndarray
    """H x W x 3 uint8 RGB."""
    pose: np.ndarray
    """4 x 4 camera-to-world of this frame."""


@dataclass(frozen=True)
class PointsOut:
    """Points the run added to the scene's cloud."""

    cloud: PointCloud


@dataclass(frozen=True)
class MotionOut:
    """A dynamics run left its region moving in the world: the points at ``index`` now carry
    ``motion`` (M x 4, ``geometry.motion``); the engine has set it in the scene's store and
    ``before`` is what they had (undo gives it back)."""

    index: np.ndarray
    """M int64 point indices into the scene's cloud."""
    motion: np.ndarray
    """M x 4 float32: world displacement over one loop, period in seconds."""
    before: np.ndarray
    """M x 4 float32: their motion before."""
    region: str
    """A short name of the region for the HUD (e.g. ``water``)."""


Event = ProgressOut | FrameOut | PointsOut | MotionOut


class EngineError(RuntimeError):
    """A run failed for a reason the person can act on; the message says which."""


class WorkerLost(EngineError):
    """The worker running a job died (an engine running on remote workers raises it); the
    job fails with code ``worker_lost``."""


class Engine(ABC):
    """Opens scenes and runs transitions and dynamics on them.

    These four methods are everything the server calls. The server runs them on its job
    slots (backend.scheduler), so an engine whose generators run on remote workers only has to
    implement this interface.
    """

    name: str = "engine"

    @abstractmethod
    def open_scene(self, request: OpenRequest) -> tuple[Scene, PointCloud]:
        """Lift the first view into a scene; returns the scene and its initial cloud."""

    @abstractmethod
    def resume_scene(self, scene_id: str, sessions) -> tuple[Scene, PointCloud]:
        """Reload a saved session (``sessions`` is a backend.session.SessionStore); returns
        the scene at its last pose and its whole cloud."""

    @abstractmethod
    def transition(self, scene: Scene, request: TransitionRequest) -> Iterator[Event]:
        """Frames along ``request.poses``; grows ``scene.cloud`` and moves ``scene.pose``."""

    @abstractmethod
    def dynamics(self, scene: Scene, request: DynamicsRequest) -> Iterator[Event]:
        """A looping clip of the view at ``request.pose``; leaves the cloud as it is."""

    def select_region(self, scene: Scene, pose: np.ndarray, arrows: tuple[Arrow, ...],
                      frozen: np.ndarray | None) -> np.ndarray:
        """H x W bool: the region a dynamics request with these marks would animate at ``pose``
        (shown to the person before they start it). Engines that animate regions override it."""
        raise EngineError(f"the {self.name} engine does not outline regions")
