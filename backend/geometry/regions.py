"""The coherent region a stroke lies in (a water body, the sky, a cloud bank).

``select_region(image, stroke, frozen) -> H x W bool``:

1. superpixels of the photo at ``work_px`` (``popup.superpixels``: a watershed of the colour
   gradient from a seed grid), each with its mean Lab colour, lightness spread (texture) and
   the share of its gradient energy that is vertical (ripples and reflections streak along
   the rows);
2. a graph over adjacent superpixels, each edge weighted by the mean colour step across the
   shared border plus the distance of the two superpixels' features; superpixels under the
   freeze brush are cut out of the graph;
3. Felzenszwalb-Huttenlocher merging over that graph (edges cheapest first; two components
   join when the edge is no heavier than either's internal variation plus ``scale`` over its
   size): the region is every component that holds a superpixel the stroke touches;
4. small holes closed, and back at full size the border follows the photo's edges (a guided
   filter of the mask); frozen pixels are never in it.

``outline(region)`` gives its border as closed polylines (what ``RegionOutline`` carries) and
``fill_outline`` turns them back into a mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from backend.geometry.popup import edge_guided, rgb_to_lab, superpixels


@dataclass(frozen=True)
class RegionConfig:
    work_px: int = 256
    """Longer side of the working copy (pixels)."""
    seed_step: int = 5
    """Superpixel seed spacing at the working size (pixels)."""
    scale: float = 20.0
    """Graph segmentation's scale: larger joins more (Lab units x 100 pixels)."""
    frozen_max: float = 0.3
    """A superpixel more frozen than this share never joins."""


def _lab(image: np.ndarray) -> np.ndarray:
    lab = rgb_to_lab(image)
    lab[..., 0] *= 100.0 / 255.0
    lab[..., 1:] -= 128.0
    return lab


def select_region(image: np.ndarray, stroke: np.ndarray, frozen: np.ndarray | None = None,
                  config: RegionConfig = RegionConfig()) -> np.ndarray:
    """H x W bool: the coherent region ``stroke`` (H x W bool) lies in (module doc)."""
    img = np.ascontiguousarray(image)
    H, W = img.shape[:2]
    if stroke.shape != (H, W):
        raise ValueError(f"stroke {stroke.shape} and image {img.shape[:2]} sizes differ")
    if not stroke.any():
        return np.zeros((H, W), bool)
    s = min(1.0, config.work_px / max(H, W))
    w, h = max(16, round(W * s)), max(16, round(H * s))
    small = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    lab = _lab(cv2.GaussianBlur(small, (3, 3), 0))
    # 1. superpixels and their features
    segments = superpixels(small, config.seed_step)
    n = int(segments.max()) + 1
    features, count = _features(segments, lab, n)
    frozen_seg = np.zeros(n, bool)
    if frozen is not None:
        fz = cv2.resize(frozen.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).ravel()
        share = np.bincount(segments.ravel(), fz.astype(np.float64), n) / count
        frozen_seg = share > config.frozen_max
    # 2. the superpixels the stroke touches
    stroke_small = cv2.resize(stroke.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
    if not stroke_small.any():
        stroke_small = cv2.resize(stroke.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA) > 0
    seeds = np.unique(segments[stroke_small])
    seeds = seeds[~frozen_seg[seeds]]
    if seeds.size == 0:
        return np.zeros((H, W), bool)
    # 3. graph segmentation of the superpixels; the region is what holds the seeds
    pairs, weights = _edges(segments, lab, features, n)
    keep = ~frozen_seg[pairs[:, 0]] & ~frozen_seg[pairs[:, 1]]
    root = _merge(pairs[keep], weights[keep], count, config.scale)
    inside = np.isin(root, root[seeds])
    region = inside[segments].astype(np.uint8)
    # 4. holes closed, full size along the photo's edges, frozen pixels out
    region = cv2.morphologyEx(region, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    up = cv2.resize(region.astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR)
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
    full = edge_guided(grey, up, max(2, round(1.5 / s)), 1e-3) > 0.5
    full |= stroke
    if frozen is not None:
        full &= ~frozen.astype(bool)
    return full


def _features(segments: np.ndarray, lab: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per superpixel: mean L a b, lightness spread, and the share of gradient energy that is
    vertical (ripples and horizontal streaks), scaled to comparable units; and pixel counts."""
    flat = segments.ravel()
    count = np.maximum(np.bincount(flat, minlength=n), 1).astype(np.float64)
    mean = np.stack([np.bincount(flat, lab[..., k].ravel(), n) for k in range(3)], 1) / count[:, None]
    sq = np.bincount(flat, lab[..., 0].ravel() ** 2, n) / count
    spread = np.sqrt(np.maximum(sq - mean[:, 0] ** 2, 0))
    gx = cv2.Sobel(lab[..., 0], cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(lab[..., 0], cv2.CV_32F, 0, 1, ksize=3)
    ex = np.bincount(flat, (gx * gx).ravel(), n)
    ey = np.bincount(flat, (gy * gy).ravel(), n)
    streaks = ey / np.maximum(ex + ey, 1e-6)
    return np.column_stack([mean, spread, 20.0 * streaks]), count


def _edges(segments: np.ndarray, lab: np.ndarray, features: np.ndarray, n: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """Adjacent superpixel pairs and their dissimilarity: the mean colour step across their
    shared border plus the distance of their features."""
    pairs, steps = [], []
    for a, b, la, lb in ((segments[:, :-1], segments[:, 1:], lab[:, :-1], lab[:, 1:]),
                         (segments[:-1], segments[1:], lab[:-1], lab[1:])):
        cross = a != b
        pairs.append(np.sort(np.stack([a[cross], b[cross]], 1), 1))
        steps.append(np.linalg.norm(la[cross] - lb[cross], axis=1))
    pairs_all, step_all = np.concatenate(pairs), np.concatenate(steps)
    code = pairs_all[:, 0].astype(np.int64) * n + pairs_all[:, 1]
    uniq, inv = np.unique(code, return_inverse=True)
    border = np.bincount(inv, step_all) / np.bincount(inv)
    i, j = np.divmod(uniq, n)
    weight = border + np.linalg.norm(features[i] - features[j], axis=1)
    return np.stack([i, j], 1), weight


def _merge(pairs: np.ndarray, weights: np.ndarray, count: np.ndarray, scale: float) -> np.ndarray:
    """Felzenszwalb-Huttenlocher merging over the superpixel graph: edges cheapest first, two
    components join when the edge is no heavier than either's internal variation plus
    ``scale`` over its size (in pixels / 100). Returns each superpixel's component root."""
    n = count.size
    parent = np.arange(n)
    internal = np.zeros(n)
    size = count / 100.0

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for e in np.argsort(weights, kind="stable"):
        a, b = find(int(pairs[e, 0])), find(int(pairs[e, 1]))
        if a == b:
            continue
        wgt = weights[e]
        if wgt <= min(internal[a] + scale / size[a], internal[b] + scale / size[b]):
            parent[b] = a
            size[a] += size[b]
            internal[a] = max(internal[a], internal[b], wgt)
    return np.array([find(i) for i in range(n)])


def outline(region: np.ndarray, max_points: int = 2000, epsilon_px: float = 1.0) -> list[np.ndarray]:
    """The region's border as closed polylines (each K x 2 float32, x y in pixels), the
    largest first, simplified to ``epsilon_px`` and at most ``max_points`` points in all."""
    contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    contours = sorted(contours, key=cv2.contourArea, reverse=True)
    out, total = [], 0
    for c in contours:
        c = cv2.approxPolyDP(c, epsilon_px, True).reshape(-1, 2).astype(np.float32)
        if len(c) < 3 or total + len(c) > max_points:
            continue
        out.append(c + 0.5)  # pixel centres
        total += len(c)
    return out


def fill_outline(polylines: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """H x W bool from closed polylines (as ``outline`` gives them): a pixel is inside when
    an odd number of them enclose it (so a hole's border cuts the hole out)."""
    count = np.zeros(shape, np.uint8)
    for line in polylines:
        one = np.zeros(shape, np.uint8)
        cv2.fillPoly(one, [np.round(np.asarray(line) - 0.5).astype(np.int32)], 1)
        count += one
    return count % 2 == 1
