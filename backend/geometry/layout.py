"""A scene's layout (its ground plane and sky) and what it says about any view's pixels.

``SceneLayout`` is what the first view shows of the world's layout: a ground plane
(``normal . X = offset`` in world coordinates, the normal pointing down, OpenCV y down; the
pop-up prior's, whose horizon need not be at the principal point, so the camera may look
slightly up or down at it, or one fitted to a depth map's ground) and a sky at ``sky_depth``.
``view_layout(depth, known, K, pose, layout) -> ViewLayout`` labels a
rendered view's known pixels (SKY, GROUND, VERTICAL) from where their points lie, and gives
for every pixel the z-depth at which its ray meets the ground plane (inf where it does not),
so a fill can continue sky from sky and ground from ground, with the ground's depth in its
own perspective (``expected_labels``).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from backend.geometry.popup import GROUND, SKY, VERTICAL


@dataclass(frozen=True)
class SceneLayout:
    normal: tuple[float, float, float]
    """Unit normal of the ground plane in world coordinates, pointing down (y > 0)."""
    offset: float
    """``normal . X`` of every ground point X (world units): the first camera's height."""
    sky_depth: float
    """Depth of the sky plane from the first camera (world units)."""

    @classmethod
    def from_horizon(cls, horizon_row: float, K: np.ndarray, camera_height: float,
                     sky_depth: float) -> SceneLayout:
        """The ground of a view whose horizon is row ``horizon_row``, ``camera_height`` below
        the camera: the points with ``z = camera_height * fy / (v - horizon_row)``."""
        t = (horizon_row - float(K[1][2])) / float(K[1][1])
        n = np.array([0.0, 1.0, -t]) / np.hypot(1.0, t)
        return cls((float(n[0]), float(n[1]), float(n[2])), camera_height / float(np.hypot(1.0, t)),
                   float(sky_depth))


@dataclass(frozen=True)
class ViewLayout:
    labels: np.ndarray
    """H x W uint8: SKY, GROUND or VERTICAL for the known pixels (VERTICAL elsewhere)."""
    ground_depth: np.ndarray
    """H x W float32: z-depth where the pixel's ray meets the ground plane, inf if never."""
    sky_depth: float
    """z-depth given to sky pixels (world units)."""


def fit_layout(depth: np.ndarray, labels: np.ndarray, K: np.ndarray, min_share: float = 0.02,
               spreads: tuple[float, ...] = (0.05, 0.02, 0.01)) -> SceneLayout | None:
    """The layout of a first view with a depth of its own (a model's, the explorer's): a plane
    fitted to the points of the pixels labelled GROUND (least squares, refitted on the points
    within each of ``spreads`` x their depth of it in turn), None when too few pixels are
    ground, the plane does not face up or too few points lie on it; the sky's depth the median
    depth of the SKY pixels, else 1.5 x the farthest depth."""
    h, w = depth.shape
    ground = labels == GROUND
    if ground.mean() < min_share:
        return None
    v, u = np.nonzero(ground)
    z = depth[v, u].astype(np.float64)
    pts = np.column_stack([(u + 0.5 - K[0, 2]) / K[0, 0] * z, (v + 0.5 - K[1, 2]) / K[1, 1] * z, z])
    use = np.ones(len(pts), bool)
    for spread in spreads:
        centre = pts[use].mean(0)
        normal = np.linalg.svd(pts[use] - centre, full_matrices=False)[2][-1]
        normal = normal if normal[1] > 0 else -normal
        use = np.abs((pts - centre) @ normal) <= spread * z
        if use.sum() < min_share * h * w:
            return None
    offset = float(centre @ normal)
    if normal[1] < 0.8 or offset <= 0:  # not a floor below the camera
        return None
    sky = labels == SKY
    sky_depth = float(np.median(depth[sky])) if sky.any() else 1.5 * float(depth.max())
    return SceneLayout((float(normal[0]), float(normal[1]), float(normal[2])), offset,
                       max(sky_depth, float(np.percentile(depth, 99))))


def view_layout(depth: np.ndarray, known: np.ndarray, K: np.ndarray, pose: np.ndarray,
                layout: SceneLayout, ground_tol: float = 0.015, sky_ratio: float = 0.7,
                flat_rows: int = 3) -> ViewLayout:
    """Labels of the known pixels of a view at ``pose`` and its rays' ground depth.

    A known point is GROUND within ``ground_tol`` x its depth of the plane when the points of
    the ``flat_rows`` pixels above it are too (the plane lies flat; a post's foot does not),
    SKY at or beyond ``sky_ratio`` x the sky's depth, VERTICAL otherwise.
    """
    h, w = depth.shape
    R, c = pose[:3, :3].astype(np.float64), pose[:3, 3].astype(np.float64)
    n = np.asarray(layout.normal, np.float64)
    nc = R.T @ n  # the normal in camera axes
    # normal . world direction of each pixel's ray (z-depth 1), as a row term plus a column term
    col = (nc[0] * ((np.arange(w) + 0.5 - K[0, 2]) / K[0, 0])).astype(np.float32)
    row = (nc[1] * ((np.arange(h) + 0.5 - K[1, 2]) / K[1, 1]) + nc[2]).astype(np.float32)
    along = row[:, None] + col[None, :]
    height = float(n @ c) - layout.offset  # the camera's signed distance to the plane (< 0 above)
    labels = np.full((h, w), VERTICAL, np.uint8)
    on_plane = known & (np.abs(height + depth * along) <= ground_tol * depth)
    # and lying flat: the foot of a post is on the plane too, but not the pixels above it
    flat = on_plane.copy()
    for k in range(1, flat_rows + 1):
        flat[k:] &= on_plane[:-k] | ~known[:-k]
    labels[flat] = GROUND
    labels[known & (depth >= sky_ratio * layout.sky_depth)] = SKY
    with np.errstate(divide="ignore", invalid="ignore"):
        t = -height / along
    ground_depth = np.where((along > 1e-6) & (t > 0), t, np.inf).astype(np.float32)
    return ViewLayout(labels, ground_depth, float(layout.sky_depth))


def expected_labels(view_labels: np.ndarray, ground_depth: np.ndarray, expected_depth: np.ndarray,
                    hole: np.ndarray, anchors: np.ndarray, pull_push) -> np.ndarray:
    """Labels for the hole: GROUND where the ray meets the ground nearer than the background
    the hole continues, else SKY where the nearby background, or the background in the same
    row, is mostly sky, else VERTICAL.

    All arrays at one resolution; ``anchors`` are the background pixels the hole continues,
    ``pull_push(values, weights)`` spreads their sky share into the hole.
    """
    out = view_labels.copy()
    ground = hole & np.isfinite(ground_depth) & (ground_depth <= 1.05 * expected_depth)
    sky_share = pull_push((view_labels == SKY).astype(np.float32), anchors.astype(np.float32))
    # rows are heights above the horizon: a row mostly sky among the anchors is sky in the
    # hole too (a wide reveal far from any sky anchor, after turning)
    counted = anchors.sum(1)
    row_sky = ((view_labels == SKY) & anchors).sum(1) / np.maximum(counted, 1)
    row_sky = np.where(counted >= 3, row_sky, 0.0)[:, None]
    sky = hole & ~ground & ((sky_share > 0.5) | (row_sky > 0.6))
    out[hole] = VERTICAL
    out[ground] = GROUND
    out[sky] = SKY
    return out


def block_labels(labels: np.ndarray, known: np.ndarray, f: int, hc: int, wc: int) -> np.ndarray:
    """hc x wc labels of blocks of f x f pixels: each block's centre pixel's label, an unknown
    pixel taking its nearest known pixel's label."""
    if known.any() and not known.all():
        _, idx = cv2.distanceTransformWithLabels((~known).astype(np.uint8), cv2.DIST_L2, 3,
                                                 labelType=cv2.DIST_LABEL_PIXEL)
        lookup = np.zeros(idx.max() + 1, np.uint8)
        lookup[idx[known]] = labels[known]
        labels = lookup[idx]
    h, w = labels.shape
    padded = cv2.copyMakeBorder(labels, 0, hc * f - h, 0, wc * f - w, cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(padded[f // 2 :: f, f // 2 :: f][:hc, :wc])


def block_ground_depth(ground_depth: np.ndarray, f: int, hc: int, wc: int) -> np.ndarray:
    """hc x wc ground depth of blocks (through the mean disparity, inf where none)."""
    h, w = ground_depth.shape
    disp = np.where(np.isfinite(ground_depth), 1.0 / np.maximum(ground_depth, 1e-9), 0).astype(np.float32)
    padded = cv2.copyMakeBorder(disp, 0, hc * f - h, 0, wc * f - w, cv2.BORDER_REPLICATE)
    small = cv2.resize(padded, (wc, hc), interpolation=cv2.INTER_AREA)
    with np.errstate(divide="ignore"):
        return np.where(small > 0, 1.0 / small, np.inf).astype(np.float32)
