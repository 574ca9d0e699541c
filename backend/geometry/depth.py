"""Depth utilities: robust scale-and-shift alignment, a horizon depth prior, edge cleanup.

- ``align_depth(depth, reference, mask) -> DepthAlignment``: fits ``reference ~ scale * depth
  + shift`` over the pixels in ``mask`` (typically the pixels the existing cloud renders,
  ``RenderOutput.mask``) by iteratively reweighted least squares with Huber weights, and
  reports the fit residual. ``DepthAlignment.apply(depth)`` maps a depth map.
- ``horizon_depth(image, K, ...) -> np.ndarray``: a depth map when no depth model is
  available: a ground plane below the horizon row, a far plane above it, smoothed by a
  guided filter so its edges follow the image's edges.
- ``clean_depth_edges(depth, ...) -> (depth, keep)``: finds "flying pixels" between a near
  and a far surface and drops them (``keep`` False) or pushes them back onto the far side.

All functions take and return numpy arrays (H x W float32 depth, H x W x 3 uint8 images).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DepthAlignment:
    """``aligned = scale * depth + shift``, fitted robustly."""

    scale: float
    shift: float
    residual: float
    """Root mean square of the residuals of the inliers, in reference depth units."""
    inlier_fraction: float
    """Share of the fitted pixels whose residual is within the Huber threshold."""
    iterations: int

    def apply(self, depth: np.ndarray) -> np.ndarray:
        """The aligned depth map (float32)."""
        return (self.scale * np.asarray(depth, np.float64) + self.shift).astype(np.float32)


def align_depth(
    depth: np.ndarray,
    reference: np.ndarray,
    mask: np.ndarray | None = None,
    huber: float = 1.345,
    max_iterations: int = 30,
    tol: float = 1e-7,
) -> DepthAlignment:
    """Robust fit of ``reference ~ scale * depth + shift`` over ``mask``.

    Args:
        depth: the new depth map (any shape; e.g. from a depth model, arbitrary scale).
        reference: the depth rendered from the existing cloud, same shape.
        mask: True where ``reference`` is valid (defaults to finite, > 0 reference pixels).
        huber: Huber threshold in units of the residuals' robust sigma (1.4826 * MAD).
        max_iterations: IRLS iterations at most.
        tol: stop when scale and shift change by less than this (relative).
    """
    d = np.asarray(depth, np.float64).ravel()
    r = np.asarray(reference, np.float64).ravel()
    if d.shape != r.shape:
        raise ValueError(f"depth {np.shape(depth)} and reference {np.shape(reference)} differ")
    keep = np.isfinite(d) & np.isfinite(r) & (r > 0)
    if mask is not None:
        keep &= np.asarray(mask, bool).ravel()
    if keep.sum() < 2 or np.ptp(d[keep]) == 0:
        raise ValueError("need at least two valid pixels with distinct depths to align")
    d, r = d[keep], r[keep]
    A = np.stack([d, np.ones_like(d)], axis=1)
    w = np.ones_like(d)
    params: np.ndarray = np.zeros(2)
    iterations = 0
    for _ in range(max_iterations):
        iterations += 1
        # 1. weighted least squares with the current weights
        sw = np.sqrt(w)
        new, *_ = np.linalg.lstsq(A * sw[:, None], r * sw, rcond=None)
        # 2. Huber weights from the residuals' robust scale
        res = r - A @ new
        sigma = max(1.4826 * np.median(np.abs(res - np.median(res))), 1e-12)
        a = np.abs(res) / (huber * sigma)
        w = np.where(a <= 1, 1.0, 1.0 / np.maximum(a, 1e-12))
        done = np.all(np.abs(new - params) <= tol * (np.abs(new) + tol))
        params = new
        if done:
            break
    res = r - A @ params
    inliers = np.abs(res) <= huber * sigma
    rms = float(np.sqrt(np.mean(res[inliers] ** 2))) if inliers.any() else float("nan")
    return DepthAlignment(float(params[0]), float(params[1]), rms, float(inliers.mean()), iterations)


def estimate_horizon(image: np.ndarray, lo: float = 0.2, hi: float = 0.8) -> int:
    """Row of the horizon: the split between rows ``lo*H`` and ``hi*H`` that best separates
    the mean colours above and below (largest between-class variance of row means)."""
    img = np.asarray(image, np.float64)
    rows = img.mean(axis=1)  # H x 3
    h = rows.shape[0]
    best, best_row = -1.0, h // 2
    csum = np.cumsum(rows, axis=0)
    total = csum[-1]
    for row in range(max(1, int(lo * h)), min(h - 1, int(hi * h)) + 1):
        above = csum[row - 1] / row
        below = (total - csum[row - 1]) / (h - row)
        score = row * (h - row) * float(np.sum((above - below) ** 2))
        if score > best:
            best, best_row = score, row
    return best_row


def box_filter(x: np.ndarray, r: int) -> np.ndarray:
    """Mean over a (2r+1)^2 window with the window clipped at the borders (H x W [x C])."""
    def along(a: np.ndarray, axis: int) -> np.ndarray:
        n = a.shape[axis]
        c = np.cumsum(a, axis=axis)
        c = np.concatenate([np.zeros_like(np.take(c, [0], axis=axis)), c], axis=axis)
        idx = np.arange(n)
        hi = np.minimum(idx + r + 1, n)
        lo = np.maximum(idx - r, 0)
        shape = [1] * a.ndim
        shape[axis] = n
        return (np.take(c, hi, axis=axis) - np.take(c, lo, axis=axis)) / (hi - lo).reshape(shape)

    return along(along(np.asarray(x, np.float64), 0), 1)


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Edge-preserving smoothing of ``src`` (H x W) following the edges of a grey ``guide``."""
    mean_i = box_filter(guide, radius)
    mean_p = box_filter(src, radius)
    var_i = box_filter(guide * guide, radius) - mean_i**2
    cov = box_filter(guide * src, radius) - mean_i * mean_p
    a = cov / (var_i + eps)
    b = mean_p - a * mean_i
    return box_filter(a, radius) * guide + box_filter(b, radius)


def horizon_depth(
    image: np.ndarray,
    K: np.ndarray,
    horizon_row: int | None = None,
    camera_height: float = 1.0,
    far: float | None = None,
    smooth_radius: int | None = None,
    eps: float = 1e-3,
) -> np.ndarray:
    """A plausible depth map from the image alone (no depth model).

    Below the horizon the ground plane ``y = camera_height`` (camera looking level) gives
    ``z = camera_height * fy / (v - horizon)``; above it a far plane at ``far`` (default: the
    ground's depth 2 pixels below the horizon). The result is smoothed with a guided filter
    on the grey image, in disparity, so depth edges follow image edges; the filter may only
    bring a pixel nearer than the planes (bright water mirroring the sky stays on the
    ground instead of sinking towards the far plane).

    Args:
        image: H x W x 3 uint8.
        K: 3 x 3 intrinsics.
        horizon_row: row of the horizon; estimated from the image when None.
        camera_height: height of the camera above the ground, in world units.
        far: depth of everything above the horizon.
        smooth_radius: guided filter radius in pixels (default H / 32; 0 disables).
        eps: guided filter regularisation (on a [0, 1] grey guide).
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be H x W x 3, got {img.shape}")
    h, w = img.shape[:2]
    horizon = estimate_horizon(img) if horizon_row is None else int(horizon_row)
    if not 0 <= horizon < h:
        raise ValueError(f"horizon_row must be in [0, {h}), got {horizon}")
    fy = float(K[1][1])
    far = camera_height * fy / 2.0 if far is None else float(far)
    v = np.arange(h) + 0.5 - horizon
    with np.errstate(divide="ignore"):
        ground = np.where(v > 0, camera_height * fy / np.maximum(v, 1e-9), np.inf)
    column = np.minimum(ground, far)
    disparity = np.repeat((1.0 / column)[:, None], w, axis=1)
    radius = max(h // 32, 1) if smooth_radius is None else smooth_radius
    if radius > 0:
        grey = img.astype(np.float64).mean(axis=2) / 255.0
        # the filter may bring things nearer than the planes (a person standing on the
        # ground), never farther: water mirroring the sky would sink below the ground
        disparity = np.maximum(guided_filter(grey, disparity, radius, eps), disparity)
    return (1.0 / disparity).astype(np.float32)


def depth_edges(
    depth: np.ndarray, threshold: float = 0.05
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local 3x3 min and max depth, and where their ratio exceeds ``1 + threshold``."""
    d = np.asarray(depth, np.float64)
    pad = np.pad(d, 1, mode="edge")
    h, w = d.shape
    windows = [pad[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)]
    lo = np.minimum.reduce(windows)
    hi = np.maximum.reduce(windows)
    return lo, hi, hi > lo * (1.0 + threshold)


def clean_depth_edges(
    depth: np.ndarray, threshold: float = 0.05, mode: str = "drop"
) -> tuple[np.ndarray, np.ndarray]:
    """Remove flying pixels at depth discontinuities.

    A pixel is flying when its 3x3 neighbourhood spans a relative depth jump larger than
    ``threshold`` and the pixel is not on the near side of it (its depth is more than
    ``threshold`` behind the local minimum). ``mode="drop"`` marks those pixels in ``keep``
    False; ``mode="push"`` moves them back to the local maximum (the far surface) and keeps
    them.

    Returns (depth float32, keep bool), both H x W.
    """
    if mode not in ("drop", "push"):
        raise ValueError(f"mode must be 'drop' or 'push', got {mode!r}")
    d = np.asarray(depth, np.float64)
    lo, hi, edge = depth_edges(d, threshold)
    flying = edge & (d > lo * (1.0 + threshold)) & (d < hi / (1.0 + 0.5 * threshold))
    keep = np.isfinite(d) & (d > 0)
    out = d.copy()
    if mode == "drop":
        keep &= ~flying
    else:
        out[flying] = hi[flying]
    logger.debug("clean_depth_edges: %d flying pixels (%s)", int(flying.sum()), mode)
    return out.astype(np.float32), keep
