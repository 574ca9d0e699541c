"""A scene's layout (its ground plane and sky) and what it says about any view's pixels.

``SceneLayout`` is what the pop-up prior found in the first view: a level ground plane
``ground_height`` below the first camera (world y = ``ground_height``, OpenCV y down) and a
sky at ``sky_depth``. ``view_layout(depth, known, K, pose, layout) -> ViewLayout`` labels a
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
    ground_height: float
    """World y of the ground plane (the first camera is level, y down)."""
    sky_depth: float
    """Depth of the sky plane from the first camera (world units)."""


@dataclass(frozen=True)
class ViewLayout:
    labels: np.ndarray
    """H x W uint8: SKY, GROUND or VERTICAL for the known pixels (VERTICAL elsewhere)."""
    ground_depth: np.ndarray
    """H x W float32: z-depth where the pixel's ray meets the ground plane, inf if never."""
    sky_depth: float
    """z-depth given to sky pixels (world units)."""


def fit_layout(depth: np.ndarray, labels: np.ndarray, K: np.ndarray, min_share: float = 0.02,
               max_spread: float = 0.25) -> SceneLayout | None:
    """The layout of a first view with a depth of its own (a model's, the explorer's): the
    ground height is the median world y of the pixels labelled GROUND (None when too few, or
    when their heights spread more than ``max_spread`` of it: no level ground plane there);
    the sky's depth the median depth of the SKY pixels, else 1.5 x the farthest depth."""
    h, w = depth.shape
    ground = labels == GROUND
    if ground.mean() < min_share:
        return None
    v = np.arange(h, dtype=np.float64)[:, None] + 0.5
    y = ((v - K[1, 2]) / K[1, 1] * depth)[ground]
    y = y[y > 0]
    if y.size < min_share * h * w:
        return None
    height = float(np.median(y))
    if 1.4826 * float(np.median(np.abs(y - height))) > max_spread * height:
        return None
    sky = labels == SKY
    sky_depth = float(np.median(depth[sky])) if sky.any() else 1.5 * float(depth.max())
    return SceneLayout(height, max(sky_depth, float(np.percentile(depth, 99))))


def view_layout(depth: np.ndarray, known: np.ndarray, K: np.ndarray, pose: np.ndarray,
                layout: SceneLayout, ground_tol: float = 0.015, sky_ratio: float = 0.7,
                flat_rows: int = 3) -> ViewLayout:
    """Labels of the known pixels of a view at ``pose`` and its rays' ground depth.

    A known point is GROUND within ``ground_tol`` x its depth of the plane when the points of
    the ``flat_rows`` pixels above it are too (the plane lies flat; a post's foot does not),
    SKY at or beyond ``sky_ratio`` x the sky's depth, VERTICAL otherwise.
    """
    h, w = depth.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    R, c = pose[:3, :3].astype(np.float32), pose[:3, 3].astype(np.float32)
    world_dir_y = rays @ R[1]  # world y of each ray (z-depth 1)
    world_y = c[1] + depth * world_dir_y
    labels = np.full((h, w), VERTICAL, np.uint8)
    on_plane = known & (np.abs(world_y - layout.ground_height) <= ground_tol * depth)
    # and lying flat: the foot of a post is on the plane too, but not the pixels above it
    flat = on_plane.copy()
    for k in range(1, flat_rows + 1):
        flat[k:] &= on_plane[:-k] | ~known[:-k]
    labels[flat] = GROUND
    labels[known & (depth >= sky_ratio * layout.sky_depth)] = SKY
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (layout.ground_height - c[1]) / world_dir_y
    ground_depth = np.where((world_dir_y > 1e-6) & (t > 0), t, np.inf).astype(np.float32)
    return ViewLayout(labels, ground_depth, float(layout.sky_depth))


def expected_labels(view_labels: np.ndarray, ground_depth: np.ndarray, expected_depth: np.ndarray,
                    hole: np.ndarray, anchors: np.ndarray, pull_push) -> np.ndarray:
    """Labels for the hole: GROUND where the ray meets the ground nearer than the background
    the hole continues, else SKY where the nearby background is mostly sky, else VERTICAL.

    All arrays at one resolution; ``anchors`` are the background pixels the hole continues,
    ``pull_push(values, weights)`` spreads their sky share into the hole.
    """
    out = view_labels.copy()
    ground = hole & np.isfinite(ground_depth) & (ground_depth <= 1.05 * expected_depth)
    sky_share = pull_push((view_labels == SKY).astype(np.float32), anchors.astype(np.float32))
    sky = hole & ~ground & (sky_share > 0.5)
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
    disp = cv2.copyMakeBorder(disp, 0, hc * f - h, 0, wc * f - w, cv2.BORDER_REPLICATE)
    small = cv2.resize(disp, (wc, hc), interpolation=cv2.INTER_AREA)
    with np.errstate(divide="ignore"):
        return np.where(small > 0, 1.0 / small, np.inf).astype(np.float32)
