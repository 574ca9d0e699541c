"""Wire messages to engine requests and engine events to wire messages, in one place.

Everything a request carries is checked here, once: the engines get typed requests
(``TransitionRequest``, ``DynamicsRequest``, ``OpenRequest``) whose arrays are in the
engines' precision and trust them. Poses travel as float32 (``Transition.poses``) or float64
(``Dynamics.pose``, 16 numbers) and are checked and handed on as float64 rigid transforms.
Checks that depend on the scene use what the scene table knows of it without loading it
(its view size and median depth), so a request is checked on the dispatcher, before it
queues, and fails at once with ``bad_request``.

Going out, engine events become ``Progress``, ``Frame`` and ``PointsDelta`` messages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, cast

import numpy as np

from backend.engines.base import (
    DynamicsRequest,
    FrameOut,
    OpenRequest,
    ProgressOut,
    Scene,
    TransitionRequest,
)
from backend.geometry.cloud import PointCloud
from backend.geometry.store import PointStore
from protocol import codec
from protocol.camera import check_pose
from protocol.errors import BadArray, BadValue
from protocol.limits import Limits
from protocol.messages import (
    ArrayRef,
    Arrow,
    Dynamics,
    Frame,
    OpenScene,
    PointsDelta,
    SceneOpened,
    Transition,
)
from protocol.messages import Progress as ProgressMsg

REACH_MEDIAN_DEPTHS = 1e4
"""Transition poses may lie at most this many median depths from the first view."""

JobRequest = TransitionRequest | DynamicsRequest
DepthSource = Literal["model", "given", "prior"]
Blobs = Sequence[memoryview]


@dataclass(frozen=True)
class View:
    """What the checks need of a scene: its view size and depth scale."""

    width: int
    height: int
    median_depth: float


# -- into the engines --


def check_poses(poses: np.ndarray) -> np.ndarray:
    """N x 4 x 4 rigid camera-to-world transforms as float64; BadValue naming the first bad
    pose. Checked for all poses at once (a trajectory may hold a thousand)."""
    p = np.asarray(poses, dtype=np.float64)
    if p.ndim != 3 or p.shape[1:] != (4, 4):
        raise BadArray(f"poses must be N x 4 x 4, got {p.shape}")
    R = p[:, :3, :3]
    with np.errstate(invalid="ignore", over="ignore"):
        ok = np.asarray(np.isfinite(p).all(axis=(1, 2))
                        & np.isclose(p[:, 3], [0, 0, 0, 1], atol=1e-6).all(axis=1)
                        & np.isclose(R @ np.swapaxes(R, 1, 2), np.eye(3), atol=1e-4).all(axis=(1, 2)))
        ok[ok] &= np.linalg.det(R[ok]) >= 0
    for i in np.flatnonzero(~ok)[:1]:
        try:
            check_pose(p[i], f"pose {i}")
        except ValueError as exc:
            raise BadValue(str(exc)) from None
        raise BadValue(f"pose {i} is not a rigid transform")
    return p


def transition_request(msg: Transition, blobs: Blobs, view: View) -> TransitionRequest:
    """The engine request of a Transition: N >= 2 checked float64 poses within
    :data:`REACH_MEDIAN_DEPTHS` of the first view."""
    poses = check_poses(codec.read_array(msg.poses, blobs))
    if len(poses) < 2:
        raise BadArray(f"a transition needs at least 2 poses, got {len(poses)}")
    reach = REACH_MEDIAN_DEPTHS * max(view.median_depth, 1e-3)
    far = np.abs(poses[:, :3, 3]).max(axis=1) > reach
    if far.any():
        raise BadValue(f"pose {int(np.argmax(far))} is more than {reach:g} (10^4 median depths) "
                       "from the first view")
    return TransitionRequest(poses, msg.fps, msg.prompt, msg.seed, msg.preset, msg.dynamics)


def dynamics_request(msg: Dynamics, blobs: Blobs, view: View) -> DynamicsRequest:
    """The engine request of a Dynamics: a checked pose, arrows and frozen mask in the view."""
    pose = checked_pose(msg.pose)
    frozen = check_view_marks(view, msg.arrows, msg.frozen, blobs)
    return DynamicsRequest(pose, msg.num_frames, msg.fps, tuple(msg.arrows), frozen,
                           msg.prompt, msg.seed)


REQUESTS: dict[type, Callable[..., JobRequest]] = {
    Transition: transition_request,
    Dynamics: dynamics_request,
}
"""Message type -> its engine request (a new job message adds its entry here)."""


def job_request(msg: Transition | Dynamics, blobs: Blobs, view: View) -> JobRequest:
    """The engine request of a job message; BadValue / BadArray saying what is wrong."""
    return REQUESTS[type(msg)](msg, blobs, view)


def checked_pose(values: Sequence[float]) -> np.ndarray:
    """A 4 x 4 float64 rigid pose from 16 numbers; BadValue saying what is wrong."""
    try:
        return check_pose(codec.pose_array(values))
    except ValueError as exc:
        raise BadValue(str(exc)) from None


def check_view_marks(view: View, arrows: Sequence[Arrow], frozen_ref: ArrayRef | None,
                     blobs: Blobs) -> np.ndarray | None:
    """The frozen mask (H x W bool or None) after checking it and the arrows against the
    view; BadArray / BadValue saying what is wrong. Arrows are bounded by the view: a start
    inside it, a displacement per frame no longer than its larger side."""
    w, h = view.width, view.height
    frozen = None
    if frozen_ref is not None:
        frozen = np.asarray(codec.read_array(frozen_ref, blobs)) != 0
        if frozen.shape != (h, w):
            raise BadArray(f"frozen mask is {frozen.shape}, views are {(h, w)}")
    for a in arrows:
        if not (0 <= a.start[0] <= w and 0 <= a.start[1] <= h):
            raise BadValue(f"arrow start {a.start} is outside the {w}x{h} view")
        if float(np.hypot(*a.vector)) > max(w, h):
            raise BadValue(f"arrow vector {a.vector} is longer than the {w}x{h} view (pixels "
                           "per frame)")
    return frozen


def check_intrinsics(K: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """K as a pinhole matrix for an image of ``shape``; BadValue saying what is wrong."""
    h, w = shape[:2]
    if not (K[0, 0] > 0 and K[1, 1] > 0):
        raise BadValue(f"K focal lengths must be positive, got fx={K[0, 0]}, fy={K[1, 1]}")
    if not np.allclose(K[2], [0, 0, 1]) or K[1, 0] != 0:
        raise BadValue(f"K must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]], got {K.tolist()}")
    if not (-w <= K[0, 2] <= 2 * w and -h <= K[1, 2] <= 2 * h):
        raise BadValue(f"K principal point ({K[0, 2]}, {K[1, 2]}) is far outside the {w}x{h} image")
    return K


def open_request(msg: OpenScene, blobs: Blobs, limits: Limits,
                 progress: Callable[[ProgressOut], None] | None = None) -> OpenRequest:
    """The engine request of a new scene: the decoded photo, its depth and K checked."""
    if msg.image is None:
        raise BadValue("OpenScene needs an image unless resume is set")
    image = codec.decode_image(msg.image, blobs, limits)
    depth = None
    if msg.depth is not None:
        depth = np.asarray(codec.read_array(msg.depth, blobs), dtype=np.float32)
        if depth.shape != image.shape[:2]:
            raise BadArray(f"depth is {depth.shape}, the image is {image.shape[:2]}")
    K = check_intrinsics(codec.k_array(msg.K), image.shape) if msg.K is not None else None
    return OpenRequest(msg.scene_id, image, K, depth, msg.text, progress=progress)


# -- out of the engines --


def progress_message(job_id: str, p: ProgressOut) -> ProgressMsg:
    return ProgressMsg(job_id=job_id, stage=p.stage, step=p.step, total=p.total, message=p.message)


def frame_message(job_id: str, ev: FrameOut, num_frames: int, K: tuple[float, ...], fps: float,
                  loop: bool, frame_codec: str, quality: int) -> tuple[Frame, list]:
    """One clip frame as the explorer asked it encoded (``frame_codec``)."""
    ref, data = codec.encode_image(ev.image, frame_codec, quality=quality)
    return Frame(job_id=job_id, index=ev.index, num_frames=num_frames,
                 pose=tuple(codec.pose_list(ev.pose)), K=K, image=ref, fps=fps, loop=loop), [data]


def points_messages(scene_id: str, cloud: PointCloud, total: int, job_id: str | None,
                    chunk_points: int) -> Iterator[tuple[PointsDelta, list]]:
    """``cloud`` as PointsDelta chunks; ``total`` is the scene's count once they apply."""
    parts = list(PointStore.chunks(cloud, chunk_points))
    sent = total - len(cloud)  # points the explorer already has before this delta
    for chunk, part in enumerate(parts):
        sent += len(part)
        refs = [codec.array_blob(a, i) for i, a in enumerate((part.xyz, part.rgb, part.radius))]
        yield PointsDelta(scene_id=scene_id, chunk=chunk, last=chunk == len(parts) - 1,
                          xyz=refs[0][0], rgb=refs[1][0], radius=refs[2][0], total_points=sent,
                          job_id=job_id), [r[1] for r in refs]


def scene_opened(request_id: str, scene: Scene, num_points: int, resumed: bool,
                 session: str) -> SceneOpened:
    w, h = scene.size
    depth_source = cast(DepthSource, scene.depth_source)  # "model", "given" or "prior"
    return SceneOpened(
        request_id=request_id, scene_id=scene.scene_id, engine=scene.engine, width=w, height=h,
        K=tuple(codec.k_list(scene.K)), pose=tuple(codec.pose_list(scene.pose)),
        median_depth=scene.median_depth, num_points=num_points, resumed=resumed,
        depth_source=depth_source,
        depth_note=scene.depth_note, points_budget=scene.points_budget, session=session)
