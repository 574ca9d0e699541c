"""A vectorised PatchMatch nearest-neighbour field for hole filling (numpy only).

``nearest_patches(image, hole, source, log_depth) -> Offsets``: for every hole pixel, the
offset to a source pixel whose patch looks like the hole pixel's patch (Barnes et al.,
PatchMatch, 2009; completed by expectation-maximisation as in Wexler et al., 2007), searched
coarse to fine over an image pyramid:

1. coarsest level: the hole is peeled from its border inwards, ring by ring (onion peel):
   each ring's pixels pick the source whose patch best matches what is already filled around
   them (known and earlier rings only), trying their filled neighbours' offsets first, so
   texture continues coherently from the border instead of from a smooth guess;
2. each iteration: patches of the current estimate as descriptors (hole pixels included);
   propagation by jump flooding (every pixel tries its neighbours' offsets at strides 8..1,
   all pixels at once, so no scanline order is needed), then a random search around the
   current source at shrinking radii; a candidate is kept when its cost is lower;
3. the cost of a source is the patch SSD plus a depth term: the log-depth difference from the
   background depth expected at the hole pixel, and a large penalty for a source nearer than
   ``near_ratio`` of it (a disocclusion copies the wall behind, never the object in front);
   with ``labels`` (sky, ground, standing), a source of another label than the hole pixel's
   expected one costs more than any colour difference (sky is filled from sky, ground from
   ground); ``source_cost`` adds a cost of each source's own (the fill makes rare colours
   dear, so a distinct object is not copied into a wallpaper); it is raised by up to
   ``coherence`` (relative) the fewer neighbours share its offset (as
   the smoothness term of a shift map), so the field forms coherent regions, not a mosaic;
4. vote: the hole is re-estimated as the cost-weighted mean of what the overlapping patches
   copy; the offsets are doubled onto the next finer level.

Sources are the caller's ``source`` pixels whose whole patch is a source (so a copied patch
never reads the hole).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Offsets:
    dy: np.ndarray
    """H x W int32: row offset to the source pixel (0 outside the hole)."""
    dx: np.ndarray
    """H x W int32: column offset to the source pixel (0 outside the hole)."""
    cost: np.ndarray
    """H x W float32: the patch cost of that source (0 outside the hole)."""


@dataclass(frozen=True)
class SearchConfig:
    patch_radius: int = 2
    """Patches are (2 r + 1)^2 pixels."""
    coarse_patch_radius: int = 1
    """The coarsest level's (smaller: a wide patch there would erode most sources away)."""
    min_side: int = 24
    """The coarsest level's shorter side (pixels)."""
    iterations_coarse: int = 1
    """EM iterations at the coarsest level; each finer level runs ``iterations_fine``."""
    iterations_fine: int = 1
    depth_weight: float = 0.1
    """Cost of a log-depth difference, relative to a mean squared colour difference (0..1)."""
    near_ratio: float = 0.85
    """Sources nearer than this fraction of the expected background depth are penalised."""
    row_weight: float = 0.5
    """Cost of the source's vertical distance (in image heights, squared): a scene is layered
    by height (sky, hills, houses, ground), so a reveal continues its own rows first."""
    coherence: float = 6.0
    """A source costs up to this much more (relative) the fewer of the pixel's 4 neighbours
    share its offset: coherent copies win over a mosaic of slightly better single blocks."""
    seed: int = 0


_NEAR_PENALTY = 1.0  # per patch dimension: more than any colour difference can cost
_LABEL_PENALTY = 4.0  # per patch dimension: above the near penalty too


def nearest_patches(image: np.ndarray, hole: np.ndarray, source: np.ndarray, log_depth: np.ndarray,
                    config: SearchConfig = SearchConfig(), labels: np.ndarray | None = None,
                    source_cost: np.ndarray | None = None) -> Offsets:
    """Offsets from every ``hole`` pixel to a similar source patch (module doc).

    ``image`` H x W x C float32 (values about 0..1, the hole pre-filled smoothly), ``log_depth`` H x W
    float32: the log-depth of sources and the expected background log-depth in the hole;
    ``labels`` H x W uint8 (optional): each source's region label and each hole pixel's expected one;
    ``source_cost`` H x W float32 (optional): a source's own cost per patch dimension.
    """
    rng = np.random.default_rng(config.seed)
    if labels is None:
        labels = np.zeros(hole.shape, np.uint8)
    if source_cost is None:
        source_cost = np.zeros(hole.shape, np.float32)
    pyramid = _pyramid(image, hole, source, log_depth, labels, source_cost, config)
    offsets = None
    estimate = None
    for i, level in enumerate(reversed(pyramid)):
        if estimate is None:
            estimate = level.image
        else:
            up = cv2.resize(estimate, level.size, interpolation=cv2.INTER_LINEAR).reshape(level.image.shape)
            estimate = np.where(level.hole[..., None], up, level.image)
        search = _LevelSearch(level, config, rng)
        search.start(offsets)
        if offsets is None:
            estimate = search.peel()
        iterations = config.iterations_coarse if i == 0 else config.iterations_fine
        for it in range(iterations):
            finest = i == len(pyramid) - 1
            search.improve(estimate, strides=(8, 4, 2, 1) if i == 0 else (1,) if finest else (2, 1),
                           radii=_radii(level) if i == 0 else (2, 1) if finest else (4, 2, 1))
            if it < iterations - 1 or i < len(pyramid) - 1:
                estimate = search.vote(estimate)
        offsets = search.offsets()
    if offsets is None:
        raise ValueError("an empty pyramid: nothing to search")
    return offsets


@dataclass
class _Level:
    image: np.ndarray
    hole: np.ndarray
    source: np.ndarray
    log_depth: np.ndarray
    labels: np.ndarray
    source_cost: np.ndarray
    radius: int

    @property
    def size(self) -> tuple[int, int]:
        return self.hole.shape[1], self.hole.shape[0]


def _pyramid(image, hole, source, log_depth, labels, source_cost, config: SearchConfig) -> list[_Level]:
    """Finest first; a coarse pixel is hole if any of its 2 x 2 is, source if most of it is.

    Sources stay generous (a small known region must still offer its texture at the coarsest
    level: eroding by the patch there would leave nothing); only the finest level's sources
    are eroded by one pixel, and the caller copies only pixels that are really known.
    """
    r = config.patch_radius
    raw = [source & ~hole]
    levels = [_Level(image, hole, _erode(raw[0], 1), log_depth, labels, source_cost, r)]
    frac = raw[0].astype(np.float32)
    while min(levels[-1].hole.shape) // 2 >= config.min_side:
        prev = levels[-1]
        w2, h2 = prev.size[0] // 2, prev.size[1] // 2
        k = cv2.resize((~prev.hole).astype(np.float32), (w2, h2), interpolation=cv2.INTER_AREA)
        if not (k >= 0.999).any():  # nothing known left at this size: search the finer ones
            break
        img = cv2.resize(prev.image, (w2, h2), interpolation=cv2.INTER_AREA).reshape(h2, w2, -1)
        frac = cv2.resize(frac, (w2, h2), interpolation=cv2.INTER_AREA)
        ld = cv2.resize(prev.log_depth, (w2, h2), interpolation=cv2.INTER_AREA)
        lab = cv2.resize(prev.labels, (w2, h2), interpolation=cv2.INTER_NEAREST)
        sc = cv2.resize(prev.source_cost, (w2, h2), interpolation=cv2.INTER_AREA)
        levels.append(_Level(img.astype(np.float32), k < 0.999, frac >= 0.5, ld, lab, sc, r))
    last = levels[-1]
    levels[-1] = _Level(last.image, last.hole, last.source, last.log_depth, last.labels,
                        last.source_cost, config.coarse_patch_radius)
    return levels


def _erode(mask: np.ndarray, r: int) -> np.ndarray:
    if r <= 0:
        return mask
    out = cv2.erode(mask.astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8),
                    borderType=cv2.BORDER_REPLICATE) > 0
    return out if out.any() else mask


def _radii(level: _Level) -> tuple[int, ...]:
    radii, r = [], max(level.hole.shape)
    while r >= 1:
        radii.append(r)
        r //= 2
    return tuple(radii)


def _descriptors(image: np.ndarray, r: int) -> np.ndarray:
    """(H W) x ((2r+1)^2 C) patches, edge-padded, one row per pixel (taps row-major, then C)."""
    h, w, c = image.shape
    pad = cv2.copyMakeBorder(image, r, r, r, r, cv2.BORDER_REPLICATE).reshape(h + 2 * r, w + 2 * r, c)
    windows = np.lib.stride_tricks.sliding_window_view(pad, (2 * r + 1, 2 * r + 1), axis=(0, 1))
    return np.ascontiguousarray(windows.transpose(0, 1, 3, 4, 2)).reshape(h * w, -1)


class _LevelSearch:
    """The nearest-neighbour field of one pyramid level, as flat pixel indices."""

    def __init__(self, level: _Level, config: SearchConfig, rng: np.random.Generator):
        self.level, self.config, self.rng = level, config, rng
        h, w = level.hole.shape
        self.h, self.w = h, w
        self.target = np.flatnonzero(level.hole)
        self.ty, self.tx = np.divmod(self.target, w)
        self.target_map = np.full(h * w, -1, np.int64)
        self.target_map[self.target] = np.arange(self.target.size)
        src = level.source
        if not src.any():
            src = ~level.hole
        self.valid = src.ravel()
        self.sources = np.flatnonzero(self.valid)
        ld = level.log_depth.ravel().astype(np.float32)
        self.ld = ld
        self.lt = ld[self.target]
        self.lab = level.labels.ravel()
        self.own_cost = level.source_cost.ravel().astype(np.float32)
        self.lab_t = self.lab[self.target]
        self.near = np.float32(np.log(config.near_ratio))
        self.src = np.zeros(self.target.size, np.int64)
        self.cost = np.full(self.target.size, np.inf, np.float32)
        self.neighbours = []  # per direction: the neighbour's target index, or -1
        for ey, ex in ((0, 1), (0, -1), (1, 0), (-1, 0)):
            ny, nx = self.ty + ey, self.tx + ex
            inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
            nb = self.target_map[np.where(inside, ny * w + nx, 0)]
            self.neighbours.append(np.where(inside, nb, -1))
        count = sum((nb >= 0).astype(np.float32) for nb in self.neighbours)
        self.share = np.float32(config.coherence) / np.maximum(count, 1)

    def start(self, coarser: Offsets | None) -> None:
        """Random sources, or the coarser level's offsets doubled where they land on a source."""
        cand = self.sources[self.rng.integers(0, self.sources.size, self.target.size)]
        if coarser is not None:
            ch, cw = coarser.dy.shape
            cy = np.minimum(self.ty // 2, ch - 1)
            cx = np.minimum(self.tx // 2, cw - 1)
            up = self._flat(self.ty + 2 * coarser.dy[cy, cx], self.tx + 2 * coarser.dx[cy, cx])
            cand = np.where(up >= 0, up, cand)
        self.src = cand

    def _flat(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Flat index of (y, x), or -1 where it is off the image or not a source."""
        inside = (y >= 0) & (y < self.h) & (x >= 0) & (x < self.w)
        flat = np.where(inside, y * self.w + x, 0)
        return np.where(inside & self.valid[flat], flat, -1)

    def peel(self) -> np.ndarray:
        """Onion-peel start (module doc, step 1): the sources and the filled estimate."""
        r = self.level.radius
        img = self.level.image
        c = img.shape[2]
        src_desc = _descriptors(img, r)
        ring = cv2.distanceTransform(self.level.hole.astype(np.uint8), cv2.DIST_C, 3).ravel()[self.target]
        est = img.reshape(-1, c).copy()
        filled = ~self.level.hole.ravel()
        taps = [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]
        for k in np.unique(ring):
            sel = np.flatnonzero(ring == k)
            ty, tx = self.ty[sel], self.tx[sel]
            py = np.clip(ty[:, None] + np.array([t[0] for t in taps]), 0, self.h - 1)
            px = np.clip(tx[:, None] + np.array([t[1] for t in taps]), 0, self.w - 1)
            pf = py * self.w + px
            mask = filled[pf].astype(np.float32)
            mask /= np.maximum(mask.sum(1, keepdims=True), 1.0) / len(taps)
            mask = np.repeat(mask, c, axis=1)
            tdesc = est[pf].reshape(sel.size, -1)
            lt, lab = self.lt[sel], self.lab_t[sel]

            def cost(cand, tdesc=tdesc, mask=mask, lt=lt, ty=ty, lab=lab):
                diff = src_desc[cand] - tdesc
                return (np.einsum("ij,ij->i", diff * mask, diff)
                        + self._priors(cand, lt, ty, lab, tdesc.shape[1]))

            best = self.src[sel]
            best_cost = cost(best)

            def consider(cand, best=best, best_cost=best_cost, cost=cost):
                cand = np.where(cand >= 0, cand, best)
                cc = cost(cand)
                better = cc < best_cost
                best[better] = cand[better]
                best_cost[better] = cc[better]

            for _ in range(4):  # anywhere
                consider(self.sources[self.rng.integers(0, self.sources.size, sel.size)])
            for _ in range(1):  # the offsets of filled and same-ring neighbours
                for ey, ex in ((0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (1, -1), (-1, 1), (-1, -1)):
                    ny, nx = np.clip(ty + ey, 0, self.h - 1), np.clip(tx + ex, 0, self.w - 1)
                    nb = self.target_map[ny * self.w + nx]
                    self.src[sel] = best
                    sy, sx = np.divmod(self.src[np.maximum(nb, 0)], self.w)
                    ok = (nb >= 0) & (filled[ny * self.w + nx] | (ring[np.maximum(nb, 0)] == k))
                    consider(np.where(ok, self._flat(sy - ey, sx - ex), -1))
            for rad in _radii(self.level):  # around the best so far
                sy, sx = np.divmod(best, self.w)
                consider(self._flat(sy + self.rng.integers(-rad, rad + 1, sel.size),
                                    sx + self.rng.integers(-rad, rad + 1, sel.size)))
            self.src[sel] = best
            est[self.target[sel]] = est[best]
            filled[self.target[sel]] = True
        return est.reshape(img.shape)

    def _costs(self, desc: np.ndarray, target_desc: np.ndarray, cand: np.ndarray) -> np.ndarray:
        diff = desc[cand] - target_desc
        return np.einsum("ij,ij->i", diff, diff) + self._priors(cand, self.lt, self.ty, self.lab_t,
                                                                target_desc.shape[1])

    def _priors(self, cand: np.ndarray, lt: np.ndarray, ty: np.ndarray, lab: np.ndarray,
                dims: int) -> np.ndarray:
        """The cost beyond colour of sources ``cand`` for targets of log depth ``lt`` in rows
        ``ty`` expecting label ``lab``: the depth term, the near penalty, the row prior and
        the label penalty and the source's own cost (per patch dimension)."""
        dl = self.ld[cand] - lt
        dy = (cand // self.w - ty).astype(np.float32) / self.h
        return dims * (self.config.depth_weight * dl * dl + _NEAR_PENALTY * (dl < self.near)
                       + self.config.row_weight * dy * dy + _LABEL_PENALTY * (self.lab[cand] != lab)
                       + self.own_cost[cand])

    def _incoherence(self, cand: np.ndarray) -> np.ndarray:
        """1 + coherence x the share of target neighbours whose offset differs from cand's."""
        off = cand - self.target
        out = np.ones(cand.size, np.float32)
        for nb in self.neighbours:
            k = np.maximum(nb, 0)
            out += self.share * ((nb >= 0) & (self.src[k] - self.target[k] != off))
        return out

    def _try(self, desc, target_desc, cand: np.ndarray) -> None:
        cand = np.where(cand >= 0, cand, self.src)
        cost = self._costs(desc, target_desc, cand) * self._incoherence(cand)
        better = cost < self.cost
        self.src = np.where(better, cand, self.src)
        self.cost = np.where(better, cost, self.cost)

    def improve(self, estimate: np.ndarray, strides: tuple[int, ...], radii: tuple[int, ...]) -> None:
        desc = _descriptors(estimate, self.level.radius)
        target_desc = desc[self.target]
        self.cost = self._costs(desc, target_desc, self.src) * self._incoherence(self.src)
        for k in strides:  # 2. propagation (jump flooding)
            for ey, ex in ((0, k), (0, -k), (k, 0), (-k, 0)):
                ny, nx = self.ty + ey, self.tx + ex
                inside = (ny >= 0) & (ny < self.h) & (nx >= 0) & (nx < self.w)
                nb = self.target_map[np.where(inside, ny * self.w + nx, 0)]
                nb = np.where(inside, nb, -1)
                sy, sx = np.divmod(self.src[np.maximum(nb, 0)], self.w)
                cand = self._flat(sy - ey, sx - ex)
                self._try(desc, target_desc, np.where(nb >= 0, cand, -1))
        sy, sx = np.divmod(self.src, self.w)
        for r in radii:  # random search around the current source
            dy = self.rng.integers(-r, r + 1, self.src.size)
            dx = self.rng.integers(-r, r + 1, self.src.size)
            self._try(desc, target_desc, self._flat(sy + dy, sx + dx))
            sy, sx = np.divmod(self.src, self.w)

    def vote(self, estimate: np.ndarray) -> np.ndarray:
        """The hole re-estimated from the patches that cover it, weighted by their cost."""
        r = self.level.radius
        c = estimate.shape[2]
        flat = estimate.reshape(-1, c)
        sigma = max(float(np.median(self.cost)), 1e-6)
        weight = np.exp(-self.cost / sigma).astype(np.float32)
        oy, ox = np.divmod(self.src, self.w)
        oy, ox = oy - self.ty, ox - self.tx
        acc = np.zeros((self.target.size, c), np.float32)
        wsum = np.zeros(self.target.size, np.float32)
        for ey in range(-r, r + 1):
            for ex in range(-r, r + 1):
                ny, nx = self.ty + ey, self.tx + ex
                inside = (ny >= 0) & (ny < self.h) & (nx >= 0) & (nx < self.w)
                nb = self.target_map[np.where(inside, ny * self.w + nx, 0)]
                ok = inside & (nb >= 0)
                nb = np.maximum(nb, 0)
                sy = np.clip(self.ty + oy[nb], 0, self.h - 1)
                sx = np.clip(self.tx + ox[nb], 0, self.w - 1)
                wk = np.where(ok, weight[nb], 0)
                acc += wk[:, None] * flat[sy * self.w + sx]
                wsum += wk
        out = flat.copy()
        out[self.target] = acc / np.maximum(wsum, 1e-12)[:, None]
        return out.reshape(estimate.shape)

    def offsets(self) -> Offsets:
        dy = np.zeros(self.h * self.w, np.int32)
        dx = np.zeros(self.h * self.w, np.int32)
        cost = np.zeros(self.h * self.w, np.float32)
        sy, sx = np.divmod(self.src, self.w)
        dy[self.target], dx[self.target] = sy - self.ty, sx - self.tx
        cost[self.target] = self.cost
        shape = (self.h, self.w)
        return Offsets(dy.reshape(shape), dx.reshape(shape), cost.reshape(shape))
