"""Camera trajectories (numpy only): stock paths, resampled user paths, keyframe splines.

Every function returns an ``(N, 4, 4)`` float64 array of camera-to-world poses (OpenCV:
x right, y down, z forward). Distances are given in units of the scene's median depth
(``median_depth``), so one stock path works for a scene of any scale.

Stock paths (DreamJourney sec. V-B, after WonderJourney; "preset" elsewhere means a
sampler preset only): a backward move with a small random
sine perturbation of the intermediate cameras' height; rotations of 0.45 rad left or right
combined with a small translation (backward, 1/5 of the backward path's distance, the
paper's 0.0001 : 0.0005 ratio); and a forward move. ``stock_path("backward", n_frames=49,
median_depth=d)``; ``STOCK_PATHS`` lists the names. The first pose is ``start`` (identity by
default) and the path is relative to it.

``resample_path(poses, n)`` turns a path flown by a person (irregular, jittery samples) into
``n`` poses evenly spaced by arc length (translation plus ``rotation_weight`` times the
rotation angle), then smooths it (positions by averaging, rotations by slerp toward the
neighbours' midpoint), keeping both ends. ``keyframe_spline(keyframes, n)`` passes a
Catmull-Rom curve through keyframe positions with slerped rotations; ``keyframe_spline_at``
evaluates it at given parameters (the explorer's path editor spaces its frames by length).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from protocol.camera import (
    interpolate_pose,
    matrix_from_quat,
    quat_from_matrix,
    rotation_about,
    slerp,
)

STOCK_PATHS = ("backward", "forward", "rotate_left", "rotate_right")
"""Names accepted by :func:`stock_path`."""

ROTATION_ANGLE = 0.45
"""Radians turned by the rotation paths (paper sec. V-B)."""
BACKWARD_DISTANCE = 0.5
"""Median depths travelled by the backward and forward paths."""
ROTATION_TRANSLATION = 0.1
"""Median depths travelled backward by the rotation paths (1/5 of BACKWARD_DISTANCE)."""
HEIGHT_PERTURBATION = 0.03
"""Largest height offset of the backward path's sine, in median depths."""


def _pose(R: np.ndarray, t: ArrayLike) -> np.ndarray:
    p = np.eye(4)
    p[:3, :3], p[:3, 3] = R, t
    return p


def stock_path(
    name: str,
    n_frames: int = 49,
    median_depth: float = 1.0,
    start: np.ndarray | None = None,
    seed: int | None = 0,
    distance: float | None = None,
    angle: float = ROTATION_ANGLE,
) -> np.ndarray:
    """Poses of the named stock path, ``n_frames`` of them, starting at ``start``.

    Args:
        name: one of ``STOCK_PATHS``.
        median_depth: the scene's median depth (world units per distance unit).
        seed: seeds the backward path's sine amplitude and sign (None: random).
        distance: travel in median depths (defaults: BACKWARD_DISTANCE for backward/forward,
            ROTATION_TRANSLATION for rotations).
        angle: rotation of the rotate paths in radians.
    """
    if name not in STOCK_PATHS:
        raise ValueError(f"unknown stock path {name!r}; choose from {', '.join(STOCK_PATHS)}")
    if n_frames < 2:
        raise ValueError(f"n_frames must be >= 2, got {n_frames}")
    if not median_depth > 0:
        raise ValueError(f"median_depth must be positive, got {median_depth}")
    s = np.linspace(0.0, 1.0, n_frames)
    rel = np.repeat(np.eye(4)[None], n_frames, axis=0)
    if name in ("backward", "forward"):
        dist = (BACKWARD_DISTANCE if distance is None else distance) * median_depth
        rel[:, 2, 3] = (-1.0 if name == "backward" else 1.0) * dist * s
        if name == "backward":
            rng = np.random.default_rng(seed)
            amp = HEIGHT_PERTURBATION * median_depth * rng.uniform(0.5, 1.0) * rng.choice([-1, 1])
            rel[:, 1, 3] = amp * np.sin(np.pi * s)
    else:
        dist = (ROTATION_TRANSLATION if distance is None else distance) * median_depth
        sign = -1.0 if name == "rotate_left" else 1.0  # +angle about +y (down) turns right
        for i, si in enumerate(s):
            rel[i] = _pose(rotation_about([0.0, 1.0, 0.0], sign * angle * si), [0, 0, -dist * si])
    base = np.eye(4) if start is None else np.asarray(start, np.float64)
    return base @ rel


def pose_steps(poses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Translation distance and rotation angle (radians) between consecutive poses."""
    p = np.asarray(poses, np.float64)
    dt = np.linalg.norm(np.diff(p[:, :3, 3], axis=0), axis=1)
    rel = np.einsum("nji,njk->nik", p[:-1, :3, :3], p[1:, :3, :3])
    cos = np.clip((np.trace(rel, axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0)
    return dt, np.arccos(cos)


def _check_path(poses: np.ndarray) -> np.ndarray:
    p = np.asarray(poses, np.float64)
    if p.ndim != 3 or p.shape[1:] != (4, 4) or len(p) < 1:
        raise ValueError(f"poses must be N x 4 x 4 with N >= 1, got {p.shape}")
    return p


def _smooth(poses: np.ndarray, iterations: int, strength: float) -> np.ndarray:
    """Laplacian smoothing: each inner pose moves toward its neighbours' midpoint."""
    p = poses.copy()
    for _ in range(iterations):
        prev = p.copy()
        for i in range(1, len(p) - 1):
            mid = interpolate_pose(prev[i - 1], prev[i + 1], 0.5)
            p[i] = interpolate_pose(prev[i], mid, strength)
    return p


def resample_path(
    poses: np.ndarray,
    n_frames: int,
    rotation_weight: float = 1.0,
    smooth_iterations: int = 3,
    smooth_strength: float = 0.5,
) -> np.ndarray:
    """``n_frames`` poses evenly spaced by arc length along ``poses``, then smoothed.

    Args:
        poses: N x 4 x 4 recorded camera-to-world poses.
        rotation_weight: world units counted per radian of rotation in the arc length (so a
            turn on the spot still spreads its frames out).
        smooth_iterations: Laplacian smoothing passes (0 disables); ends stay fixed.
        smooth_strength: fraction of the way to the neighbours' midpoint per pass.
    """
    p = _check_path(poses)
    if n_frames < 2:
        raise ValueError(f"n_frames must be >= 2, got {n_frames}")
    if len(p) == 1:
        return np.repeat(p, n_frames, axis=0)
    dt, da = pose_steps(p)
    arc = np.concatenate([[0.0], np.cumsum(dt + rotation_weight * da)])
    if arc[-1] <= 0:
        return np.repeat(p[:1], n_frames, axis=0)
    targets = np.linspace(0.0, arc[-1], n_frames)
    out = np.empty((n_frames, 4, 4))
    for j, s in enumerate(targets):
        i = min(int(np.searchsorted(arc, s, side="right")) - 1, len(p) - 2)
        span = arc[i + 1] - arc[i]
        t = 0.0 if span <= 0 else (s - arc[i]) / span
        out[j] = interpolate_pose(p[i], p[i + 1], float(np.clip(t, 0.0, 1.0)))
    return _smooth(out, smooth_iterations, smooth_strength)


def _catmull_rom(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, p3: np.ndarray,
                 t: float) -> np.ndarray:
    t2, t3 = t * t, t * t * t
    return 0.5 * (
        2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2 + (3 * p1 - p0 - 3 * p2 + p3) * t3
    )


def keyframe_spline(keyframes: np.ndarray, n_frames: int) -> np.ndarray:
    """``n_frames`` poses through ``keyframes`` (K x 4 x 4): Catmull-Rom positions, slerped
    rotations, keyframes at evenly spaced parameters; the first and last pose are exact."""
    k = _check_path(keyframes)
    if n_frames < 2:
        raise ValueError(f"n_frames must be >= 2, got {n_frames}")
    return keyframe_spline_at(k, np.linspace(0.0, len(k) - 1, n_frames))


def keyframe_spline_at(keyframes: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Poses of the keyframe spline at spline parameters ``params`` (0 .. K - 1; keyframe i
    sits at parameter i, and a whole-number parameter gives that keyframe exactly)."""
    k = _check_path(keyframes)
    params = np.asarray(params, np.float64)
    if params.ndim != 1 or len(params) == 0 or params.min() < 0 or params.max() > len(k) - 1:
        raise ValueError(f"params must be a non-empty list in [0, {len(k) - 1}]")
    if len(k) == 1:
        return np.repeat(k, len(params), axis=0)
    pos = k[:, :3, 3]
    padded = np.concatenate([2 * pos[:1] - pos[1:2], pos, 2 * pos[-1:] - pos[-2:-1]])
    quats = [quat_from_matrix(m[:3, :3]) for m in k]
    out = np.empty((len(params), 4, 4))
    for j, s in enumerate(params):
        i = min(int(s), len(k) - 2)
        t = s - i
        R = matrix_from_quat(slerp(quats[i], quats[i + 1], t))
        p0, p1, p2, p3 = padded[i : i + 4]
        out[j] = _pose(R, _catmull_rom(p0, p1, p2, p3, t))
    return out
