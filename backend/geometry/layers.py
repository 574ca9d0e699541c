"""Layered depth images (Make-It-4D, sec. 3.3): split a view into depth layers.

``split_layers(image, depth, n_layers) -> LayeredDepth``. The depth range is cut into
``n_layers`` intervals by agglomerative clustering of the pixels' disparities (1 / depth):
a fine histogram's bins start as clusters and the two adjacent clusters whose merge least
increases the within-cluster variance (Ward) are merged until ``n_layers`` remain. Layer 0
is the nearest. Each :class:`DepthLayer` holds the layer's own pixels and the region hidden
behind nearer layers that an inpainter must fill (``occluded``), with a first guess of the
depth there (the layer's depth carried in by pull-push, clamped to the layer's interval).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backend.geometry.fill import pull_push


@dataclass(frozen=True)
class DepthLayer:
    """One depth layer of a view (all arrays H x W [x 3])."""

    color: np.ndarray
    """uint8 RGB of the layer's own pixels, 0 elsewhere."""
    depth: np.ndarray
    """float32 depth: the layer's pixels, and a guess inside ``occluded``; 0 elsewhere."""
    mask: np.ndarray
    """bool, the pixels that belong to this layer."""
    occluded: np.ndarray
    """bool, pixels of nearer layers behind which this layer continues (to inpaint)."""
    near: float
    """Smallest depth of the layer's interval."""
    far: float
    """Largest depth of the layer's interval."""


@dataclass(frozen=True)
class LayeredDepth:
    layers: list[DepthLayer]
    """Nearest first."""
    bounds: np.ndarray
    """n_layers + 1 increasing depth boundaries between layers."""


def cluster_bounds(depth: np.ndarray, n_layers: int, bins: int = 128) -> np.ndarray:
    """Depth boundaries of ``n_layers`` clusters of disparity (agglomerative, Ward, 1-D)."""
    d = np.asarray(depth, np.float64)
    d = d[np.isfinite(d) & (d > 0)]
    if d.size == 0:
        raise ValueError("depth has no valid pixels")
    disp = 1.0 / d
    lo, hi = disp.min(), disp.max()
    if hi <= lo:
        return np.array([d.min(), d.max()])
    counts, edges = np.histogram(disp, bins=bins, range=(lo, hi))
    sums, _ = np.histogram(disp, bins=bins, range=(lo, hi), weights=disp)
    sq, _ = np.histogram(disp, bins=bins, range=(lo, hi), weights=disp * disp)
    occupied = counts > 0
    clusters = [
        [float(c), float(s), float(q), float(edges[i]), float(edges[i + 1])]
        for i, (c, s, q) in enumerate(zip(counts, sums, sq, strict=True))
        if occupied[i]
    ]

    def sse(c: list[float]) -> float:
        return c[2] - c[1] * c[1] / c[0]

    while len(clusters) > n_layers:
        costs = [
            sse([a[0] + b[0], a[1] + b[1], a[2] + b[2]]) - sse(a) - sse(b)
            for a, b in zip(clusters[:-1], clusters[1:], strict=True)
        ]
        i = int(np.argmin(costs))
        a, b = clusters[i], clusters[i + 1]
        clusters[i : i + 2] = [[a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3], b[4]]]
    # disparity cuts halfway between neighbouring clusters, back to depth, near to far
    cuts = [0.5 * (a[4] + b[3]) for a, b in zip(clusters[:-1], clusters[1:], strict=True)]
    disp_bounds = [hi, *sorted(cuts, reverse=True), lo]
    return 1.0 / np.array(disp_bounds)


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(r):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out


def _spread(depth: np.ndarray, known: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``depth`` of the ``known`` pixels carried into ``target`` (pull-push: normalised
    averages over a pyramid, so a pixel takes the depth of the known ones around it, the
    nearest weighing most); 0 elsewhere."""
    if not known.any():
        return np.zeros(depth.shape)
    filled = pull_push(np.where(known, depth, 0.0).astype(np.float32), known)
    return np.where(known | target, filled, 0.0)


def split_layers(
    image: np.ndarray, depth: np.ndarray, n_layers: int = 3, fill_margin: int | None = 32
) -> LayeredDepth:
    """Split ``image`` (H x W x 3 uint8) with ``depth`` (H x W) into depth layers.

    Args:
        n_layers: layers wanted (fewer come back when the depth has fewer distinct values).
        fill_margin: a layer's occluded region is the nearer layers' pixels within this many
            pixels of the layer; None means all nearer pixels (a complete layer).
    """
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers}")
    img = np.asarray(image)
    d = np.asarray(depth, np.float64)
    if img.shape[:2] != d.shape:
        raise ValueError(f"image {img.shape} and depth {d.shape} sizes differ")
    valid = np.isfinite(d) & (d > 0)
    bounds = cluster_bounds(d, n_layers)
    index = np.clip(np.searchsorted(bounds, d, side="right") - 1, 0, len(bounds) - 2)
    index[~valid] = -1
    layers, nearer = [], np.zeros(d.shape, bool)
    for i in range(len(bounds) - 1):
        own = index == i
        grown = np.ones_like(own) if fill_margin is None else _dilate(own, fill_margin)
        occluded = nearer & grown
        guess = _spread(d, own, occluded)
        guess = np.clip(guess, bounds[i], bounds[i + 1])
        layer_depth = np.where(own, d, np.where(occluded, guess, 0.0)).astype(np.float32)
        color = np.where(own[..., None], img, 0).astype(np.uint8)
        layers.append(
            DepthLayer(color, layer_depth, own, occluded, float(bounds[i]), float(bounds[i + 1]))
        )
        nearer |= own
    return LayeredDepth(layers, bounds.astype(np.float32))
