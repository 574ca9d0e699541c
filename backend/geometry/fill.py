"""Texture-preserving fills for what a view has never seen, and pull-push for pinholes.

``mirror_fill(image, depth, hole) -> Filled``: every hole pixel copies the pixel mirrored
through its nearest *background* anchor (point reflection ``2 a - p``; beyond ``band_px``
from the edge the reflection folds back and forth inside that band), with the mirror
offsets smoothed so that whole patches of texture are copied coherently (a shift map with a
smooth shift field). A straight hole edge becomes an exact mirror: texture, not the radial
streaks of diffusion-based inpainting (Telea). Anchors are known pixels that are not the
near side of a depth edge, so a disocclusion continues the surface behind the object, and
depth is copied with the colour (leaning to the background). A few rounds reach pixels whose
first mirror landed in the hole; the last stragglers take a pull-push fill.

``pull_push(image, known) -> image``: fills pixels from a pyramid of normalised averages
(Gortler et al., the Lumigraph): cheap, smooth and without streaks, for small gaps only.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Filled:
    image: np.ndarray
    """H x W x 3 uint8, the input outside the hole."""
    depth: np.ndarray
    """H x W float32 z-depth, the input outside the hole."""


def pull_push(image: np.ndarray, known: np.ndarray, levels: int = 12) -> np.ndarray:
    """Fill the pixels outside ``known`` from normalised coarser averages (any channels)."""
    img = np.asarray(image, np.float32)
    squeeze = img.ndim == 2
    if squeeze:
        img = img[..., None]
    w = known.astype(np.float32)[..., None]
    pyramid = [(img * w, w)]
    for _ in range(levels):
        c, a = pyramid[-1]
        if min(a.shape[:2]) <= 1:
            break
        h2, w2 = (a.shape[0] + 1) // 2, (a.shape[1] + 1) // 2
        c = cv2.resize(c, (w2, h2), interpolation=cv2.INTER_AREA).reshape(h2, w2, -1)
        a = cv2.resize(a, (w2, h2), interpolation=cv2.INTER_AREA).reshape(h2, w2, 1)
        pyramid.append((c, a))
    c, a = pyramid[-1]
    col = c / np.maximum(a, 1e-8)
    for c, a in reversed(pyramid[:-1]):
        up = cv2.resize(col, (a.shape[1], a.shape[0]), interpolation=cv2.INTER_LINEAR)
        up = up.reshape(a.shape[0], a.shape[1], -1)
        alpha = np.clip(a, 0, 1)
        col = (c / np.maximum(a, 1e-8)) * alpha + up * (1 - alpha)
    out = np.where(known[..., None], img, col)
    out = out[..., 0] if squeeze else out
    return out.astype(image.dtype) if image.dtype != np.uint8 else np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _anchors(depth: np.ndarray, known: np.ndarray, window: int, near_ratio: float) -> np.ndarray:
    """Known pixels that are not the near side of a depth edge (good mirror anchors)."""
    far = cv2.dilate(np.where(known, depth, 0).astype(np.float32), np.ones((window, window), np.uint8))
    return known & (depth >= near_ratio * far)


def mirror_fill(image: np.ndarray, depth: np.ndarray, hole: np.ndarray, rounds: int = 3,
                smooth_px: float = 6.0, edge_window: int = 15, near_ratio: float = 0.85,
                band_px: float = 32.0) -> Filled:
    """Fill ``hole`` by smoothed point reflection through background anchors (module doc)."""
    hole = np.asarray(hole, bool)
    img = np.ascontiguousarray(image).copy()
    dep = np.asarray(depth, np.float32).copy()
    known = ~hole & (dep > 0)
    if not known.any():
        raise ValueError("nothing to fill from: every pixel is in the hole")
    h, w = hole.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(rounds):
        todo = ~known
        if not todo.any():
            break
        anchors = _anchors(dep, known, edge_window, near_ratio)
        if not anchors.any():
            anchors = known
        # nearest anchor of every pixel (labels index the anchor pixels)
        _, labels = cv2.distanceTransformWithLabels((~anchors).astype(np.uint8), cv2.DIST_L2, 5,
                                                    labelType=cv2.DIST_LABEL_PIXEL)
        ax = np.zeros(labels.max() + 1, np.float32)
        ay = np.zeros_like(ax)
        ax[labels[anchors]], ay[labels[anchors]] = xs[anchors], ys[anchors]
        # reflect inside a band: a pixel d from its anchor copies the one tri(d) past it, so a
        # wide hole repeats the texture next to its edge instead of mirroring far content
        ox, oy = ax[labels] - xs, ay[labels] - ys
        d = np.hypot(ox, oy)
        s = np.mod(d, 2 * band_px)
        s = np.where(s > band_px, 2 * band_px - s, s)
        scale = np.where(d > 0, (d + s) / np.maximum(d, 1e-6), 0.0)
        dx, dy = ox * scale, oy * scale
        # smooth the shifts so neighbouring pixels copy neighbouring pixels (coherent patches)
        dx = cv2.GaussianBlur(dx, (0, 0), smooth_px)
        dy = cv2.GaussianBlur(dy, (0, 0), smooth_px)
        sx, sy = xs + dx, ys + dy
        sxi = np.clip(np.rint(sx), 0, w - 1).astype(np.int64)
        syi = np.clip(np.rint(sy), 0, h - 1).astype(np.int64)
        ok = todo & known[syi, sxi] & (sx >= 0) & (sx <= w - 1) & (sy >= 0) & (sy <= h - 1)
        if not ok.any():
            break
        colour = cv2.remap(img, sx, sy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        img[ok] = colour[ok]
        dep[ok] = dep[syi[ok], sxi[ok]]
        known |= ok
    if not known.all():
        img = pull_push(img, known)
        dep = pull_push(dep, known)
    # a soft seam: blend a thin band just inside the hole with a blurred copy
    band = hole & (cv2.dilate((~hole).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
    if band.any():
        blurred = cv2.GaussianBlur(img, (5, 5), 0)
        img[band] = blurred[band]
    return Filled(img, dep)
