"""4D points: each point of the cloud may carry one seamless loop of 3D motion.

The data model (kept parallel to a :class:`~backend.geometry.cloud.PointCloud`'s arrays,
``PointCloud.motion``, and on the wire as ``PointsMotion``):

- ``motion``: ``(N, 4)`` float32. Columns 0-2 are the point's world-space displacement over
  one loop (world units, the poses' units; OpenCV world = the first view's camera frame);
  column 3 is the loop's period in seconds. A static point is all zeros (period 0).

A point moves along a straight chord ``d`` per loop. At phase ``tau = frac(t / period)`` it
is drawn twice, as Make-It-4D's 3D symmetric animation (after 3D Cinemagraphy, Li et al.)
blends a point cloud advected forward and one advected backward:

- the forward copy at ``p + tau d`` with weight ``1 - tau``,
- the backward copy at ``p - (1 - tau) d`` with weight ``tau``.

At ``tau = 0`` the picture is the forward copies at ``p`` (the backward ones weigh 0); as
``tau -> 1`` it is the backward copies arriving at ``p`` (the forward ones fade out): the
same picture, so the loop has no seam, and no hole opens behind a moving point because a
copy coming from behind takes its place. Weights enter a weighted splat blend (the explorer's
accumulation pass, ``sum(w c) / sum(w)``). A renderer without per-point weights uses
:func:`dithered_at`: each moving point shows one of its two copies, chosen by a fixed
per-point threshold against ``tau``, which is the same blend on average over neighbouring
splats and just as seamless.

Public API (also used by the engines' dynamic transitions): :data:`MOTION_COLUMNS`,
:func:`static_motion`, :func:`copies_at`, :func:`dithered_at`, :func:`phase_at`,
:func:`lift_flow`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MOTION_COLUMNS = 4
"""dx, dy, dz (world units over one loop), period (seconds; 0 = static)."""


def static_motion(n: int) -> np.ndarray:
    """``(n, 4)`` float32 zeros: ``n`` points that do not move."""
    return np.zeros((n, MOTION_COLUMNS), np.float32)


def any_moving(motion: np.ndarray | None) -> bool:
    """Whether any point of a cloud's ``motion`` (None: all static) has a loop."""
    return motion is not None and bool((motion[:, 3] > 0).any())


def check_motion(motion: np.ndarray, n: int) -> np.ndarray:
    """``motion`` if it is ``(n, 4)`` float32 with finite values and non-negative periods."""
    if motion.shape != (n, MOTION_COLUMNS) or motion.dtype != np.float32:
        raise ValueError(f"motion must be {n} x {MOTION_COLUMNS} float32, got {motion.shape} "
                         f"{motion.dtype}")
    if not np.isfinite(motion).all() or (motion[:, 3] < 0).any():
        raise ValueError("motion must be finite with periods >= 0")
    return motion


def phase_at(period: np.ndarray, t: float) -> np.ndarray:
    """Each point's phase in [0, 1) at time ``t`` seconds (0 for static points)."""
    period = np.asarray(period, np.float64)
    moving = period > 0
    out = np.zeros(period.shape, np.float64)
    out[moving] = np.mod(t / period[moving], 1.0)
    return out.astype(np.float32)


@dataclass(frozen=True)
class Copies:
    """The two drawn copies of every moving point at one time."""

    index: np.ndarray
    """M int64: which points move (indices into the cloud)."""
    forward: np.ndarray
    """M x 3 float32 positions ``p + tau d``."""
    backward: np.ndarray
    """M x 3 float32 positions ``p - (1 - tau) d``."""
    forward_weight: np.ndarray
    """M float32 ``1 - tau``; the backward copy weighs ``tau``."""


def copies_at(xyz: np.ndarray, motion: np.ndarray, t: float) -> Copies:
    """Where the moving points of ``xyz`` (N x 3) are drawn at time ``t`` seconds, and how
    much each copy weighs (the module docstring)."""
    check_motion(motion, len(xyz))
    index = np.flatnonzero(motion[:, 3] > 0)
    d = motion[index, :3]
    tau = phase_at(motion[index, 3], t)[:, None]
    p = xyz[index]
    return Copies(index, (p + tau * d).astype(np.float32), (p - (1 - tau) * d).astype(np.float32),
                  (1 - tau[:, 0]).astype(np.float32))


def dither_threshold(n: int) -> np.ndarray:
    """A fixed per-point threshold in [0, 1) (a golden-ratio sequence: evenly spread, the
    same for a point whenever it is drawn)."""
    return np.mod(np.arange(n, dtype=np.float64) * 0.6180339887498949, 1.0).astype(np.float32)


def dithered_at(xyz: np.ndarray, motion: np.ndarray, t: float) -> np.ndarray:
    """N x 3 positions at time ``t`` for a renderer without per-point weights: a moving
    point shows its forward copy while its threshold is at least ``tau``, else its backward
    copy (so a share ``1 - tau`` of the points shows forward copies, as the weights say)."""
    c = copies_at(xyz, motion, t)
    out = xyz.copy()
    forward = dither_threshold(len(xyz))[c.index] >= 1 - c.forward_weight
    out[c.index] = np.where(forward[:, None], c.forward, c.backward)
    return out


def lift_flow(xyz: np.ndarray, pose: np.ndarray, K: np.ndarray, end_px: np.ndarray,
              start_px: np.ndarray) -> np.ndarray:
    """World displacements of points ``xyz`` (M x 3) seen from ``pose`` (camera-to-world,
    OpenCV) whose image positions move from ``start_px`` to ``end_px`` (M x 2, x y) over
    one loop, each at its own depth (Make-It-4D lifts its Eulerian flow with the depth it
    has): M x 3 float32."""
    R, t = pose[:3, :3], pose[:3, 3]
    cam = (xyz.astype(np.float64) - t) @ R  # world -> camera: R^T (x - t)
    z = cam[:, 2:3]
    shift = (np.asarray(end_px, np.float64) - np.asarray(start_px, np.float64)) * z
    d_cam = np.zeros_like(cam)
    d_cam[:, 0] = shift[:, 0] / K[0, 0]
    d_cam[:, 1] = shift[:, 1] / K[1, 1]
    return (d_cam @ R.T).astype(np.float32)
