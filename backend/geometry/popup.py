"""A pop-up depth prior for a photo with no depth model (in the spirit of Hoiem et al.,
Automatic Photo Pop-up, 2005): sky, ground and standing ("vertical") regions from cues a CPU
reads cheaply, the standing regions stood upright where they meet the ground.

``popup_depth(image, K) -> PopUp``:

1. superpixels: a watershed of the photo's colour gradient flooded from a grid of seeds, at
   ``work_px`` on the longer side, so region borders follow the photo's edges;
2. cues per pixel: colour (Lab: bright, blue or white for sky; green for ground), texture
   (local gradient energy: sky is smooth), edge orientation (standing things have vertical
   edges), position (rows above the horizon cannot be ground, rows below cannot be sky);
3. labels: each column is read top to bottom as sky, then standing, then ground, then
   possibly standing and ground again (a Viterbi path over those five states, so a stone in
   the foreground stands in front of the ground behind it); the column labels are then
   snapped to superpixels by majority;
4. the horizon: just above the highest ground in the picture (robustly), kept within a band
   around the principal point (photos are mostly taken level);
5. depth: ground is the plane ``camera_height`` below a level camera,
   ``z = camera_height * fy / (v - horizon)``; each standing object (adjacent standing
   superpixels of similar colour) stands upright on the line where it meets the ground
   (a robust straight-line fit of its contact rows across its columns): every pixel of a
   column of the object takes the ground's depth at that column's contact row. An object
   with no ground contact stands on what is below it or, cut by the frame's bottom, at the
   frame's bottom; sky is a far plane.

The cues are hand-set, not learnt (no weights): they are right for the common outdoor photo
(sky above, ground below, things standing between) and fail gracefully elsewhere (an indoor
ceiling reads as a standing wall, never as sky).

Over 400 lines on purpose: the prior's cues, labelling and lifting are one pipeline over
the same superpixels; each step reads the previous one's arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SKY, GROUND, VERTICAL = 0, 1, 2
"""Region labels."""


@dataclass(frozen=True)
class PopUp:
    depth: np.ndarray
    """H x W float32 z-depth (world units: the camera is ``camera_height`` above the ground)."""
    labels: np.ndarray
    """H x W uint8: SKY, GROUND or VERTICAL."""
    horizon: float
    """Row of the horizon (pixels, may lie outside the image)."""
    camera_height: float
    """Height of the camera above the ground plane (world units)."""
    sky_depth: float
    """Depth of the sky plane (world units)."""


@dataclass(frozen=True)
class PopUpConfig:
    work_px: int = 192
    """Longer side of the working copy (pixels)."""
    seed_step: int = 7
    """Superpixel seed spacing at the working size (pixels)."""
    switch_cost: float = 0.25
    """Cost of a label change along a column (in units of one row's cue cost x 10)."""
    merge_lab: float = 14.0
    """Adjacent standing superpixels closer than this in mean Lab colour are one object."""
    horizon_band: tuple[float, float] = (-0.25, 0.06)
    """The horizon stays within these fractions of the height around the principal point."""
    far_fraction: float = 0.02
    """A contact row closer than this fraction of the height to the horizon is treated as
    that far (a standing object beyond the ground's depth resolution)."""


def superpixels(image: np.ndarray, step: int) -> np.ndarray:
    """H x W int32 superpixel ids: a watershed of the colour gradient from a seed grid."""
    h, w = image.shape[:2]
    markers = np.zeros((h, w), np.int32)
    ys = np.arange(step // 2, h, step)
    xs = np.arange(step // 2, w, step)
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    markers[gy, gx] = np.arange(1, gy.size + 1).reshape(gy.shape)
    bgr = cv2.GaussianBlur(np.ascontiguousarray(image[..., ::-1]), (3, 3), 0)
    cv2.watershed(bgr, markers)
    # the watershed's ridge pixels (-1, also the frame's border) join their nearest region
    ridge = markers <= 0
    if ridge.any():
        _, nearest = cv2.distanceTransformWithLabels(ridge.astype(np.uint8), cv2.DIST_L2, 3,
                                                     labelType=cv2.DIST_LABEL_PIXEL)
        lookup = np.zeros(nearest.max() + 1, np.int32)
        lookup[nearest[~ridge]] = markers[~ridge]
        markers = lookup[nearest]
    return markers - 1


def _box(a: np.ndarray, r: int) -> np.ndarray:
    return cv2.blur(a, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_REFLECT)


@dataclass(frozen=True)
class Cues:
    """What a photo shows of itself, before the horizon is known (all H x W float32)."""

    lab: np.ndarray
    """H x W x 3 Lab as OpenCV stores it for uint8 (L, a, b each 0..255)."""
    vertical_edges: np.ndarray
    """Share of the local gradient energy across columns (vertical edges), 0..1."""
    skyish: np.ndarray
    """Sky-like colour (blue, white, overcast grey near the top, a warm glow) on a smooth
    texture, 0..1."""
    green: np.ndarray
    """Vegetation green, 0..1."""


def rgb_to_lab(image: np.ndarray) -> np.ndarray:
    """H x W x 3 float32 CIE Lab (D65) of an sRGB uint8 image, scaled as OpenCV scales 8-bit
    Lab (L x 255/100, a + 128, b + 128). Computed here: OpenCV's own conversion builds its
    tables on first use, a tenth of a second that would land on the first scene's opening."""
    c = np.asarray(image, np.float32) * np.float32(1 / 255)
    c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = c @ np.array([[0.412453, 0.212671, 0.019334], [0.357580, 0.715160, 0.119193],
                        [0.180423, 0.072169, 0.950227]], np.float32)
    xyz /= np.array([0.950456, 1.0, 1.088754], np.float32)
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    lab = np.empty_like(xyz)
    lab[..., 0] = (116 * f[..., 1] - 16) * (255 / 100)
    lab[..., 1] = 500 * (f[..., 0] - f[..., 1]) + 128
    lab[..., 2] = 200 * (f[..., 1] - f[..., 2]) + 128
    return lab


def cues(image: np.ndarray) -> Cues:
    """The horizon-independent cues of an H x W x 3 uint8 RGB image."""
    h, w = image.shape[:2]
    lab = rgb_to_lab(image)
    L = lab[..., 0] * np.float32(100 / 255)
    a = lab[..., 1] - 128
    b = lab[..., 2] - 128
    grey = L / 100
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    r = max(2, h // 48)
    ex, ey = _box(gx * gx, r), _box(gy * gy, r)
    energy = np.sqrt(np.maximum(ex + ey, 0))
    texture = energy / max(float(np.percentile(energy, 75)), 1e-4)
    vertical_edges = ex / np.maximum(ex + ey, 1e-8)  # vertical edges have horizontal gradients
    chroma = np.hypot(a, b)
    bright = np.clip((L - 45) / 35, 0, 1)
    blue = np.clip((-b - 3) / 18, 0, 1) * np.clip((L - 25) / 30, 0, 1)
    white = bright * np.clip(1 - chroma / 22, 0, 1)
    warm_glow = np.clip((L - 60) / 25, 0, 1) * np.clip((b - 10) / 30, 0, 1) * np.clip(1 - texture, 0, 1)
    smooth = np.clip(1.2 - texture, 0, 1)
    depth_in = (np.arange(h, dtype=np.float32)[:, None] + 0.5) / (0.4 * h)
    top = np.broadcast_to(np.clip(1 - depth_in, 0, 1), (h, w))
    overcast = top * np.clip((L - 12) / 12, 0, 1) * np.clip(1 - chroma / 22, 0, 1) * smooth
    skyish = np.maximum.reduce([blue, white, warm_glow, overcast]) * smooth
    green = np.clip((-a - 4) / 14, 0, 1)
    return Cues(lab, vertical_edges.astype(np.float32), skyish.astype(np.float32),
                green.astype(np.float32))


def cue_costs(c: Cues, horizon: float) -> np.ndarray:
    """3 x H x W float32 costs (lower is likelier) of SKY, GROUND, VERTICAL per pixel, with
    the horizon at row ``horizon``."""
    h, w = c.skyish.shape
    rows = (np.arange(h, dtype=np.float32)[:, None] + 0.5 - horizon) / h  # > 0 below the horizon
    rows = np.broadcast_to(rows, (h, w))
    above = np.clip(-rows * 6, 0, 1)
    below = np.clip(rows * 6, 0, 1)
    skyish, ve = c.skyish, c.vertical_edges
    sky = 1.0 - skyish + 2.5 * below
    standing_colour = _colour_log_ratio(c.lab, above > 0.5, (rows > 0.25) & (skyish < 0.5), skyish)
    rare = _rarity(c.lab, rows > 0.03)
    ground = (0.75 + 2.5 * above - 0.25 * np.clip(rows * 3, 0, 1) - 0.2 * c.green * below
              + 0.45 * ve - 0.15 * skyish * below
              + below * (0.5 * standing_colour + 1.0 * rare))
    vertical = 0.55 + 0.25 * (1 - ve) + 0.35 * skyish * above
    return np.stack([sky, ground, vertical]).astype(np.float32)


def _colour_log_ratio(lab: np.ndarray, above: np.ndarray, low: np.ndarray, skyish: np.ndarray,
                      bins: int = 8) -> np.ndarray:
    """H x W in [-1, 1]: how much likelier a pixel's colour is among the standing things
    above the horizon than among the rows well below it (the photo's own colour models:
    what rises above the horizon stands, what lies low is mostly ground)."""
    q = np.clip((lab / 256 * bins).astype(np.int32), 0, bins - 1)
    code = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]
    stand = above & (skyish < 0.3)
    if stand.sum() < 50 or low.sum() < 50:
        return np.zeros(lab.shape[:2], np.float32)
    n = bins ** 3
    hs = np.bincount(code[stand], minlength=n).astype(np.float32)
    hg = np.bincount(code[low], minlength=n).astype(np.float32)
    ps = (hs + 1) / (hs.sum() + n)
    pg = (hg + 1) / (hg.sum() + n)
    ratio = np.log(ps / pg)
    return np.clip(ratio[code] / 2.0, -1, 1).astype(np.float32)


def _rarity(lab: np.ndarray, where: np.ndarray, bins: int = 6) -> np.ndarray:
    """H x W in [0, 1]: how much rarer a pixel's colour is than the typical colour of the
    ``where`` pixels (below the horizon the ground is the common colour; a red box or a
    tractor standing on it is rare there)."""
    q = np.clip((lab / 256 * bins).astype(np.int32), 0, bins - 1)
    code = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]
    if where.sum() < 50:
        return np.zeros(lab.shape[:2], np.float32)
    hist = cv2.GaussianBlur(np.bincount(code[where], minlength=bins**3).astype(np.float32)
                            .reshape(bins, bins * bins), (3, 3), 0.6).ravel() + 1.0
    p = hist / hist.sum()
    typical = float(np.median(np.log(p[code[where]])))
    return np.clip((typical - np.log(p[code])) / 2.5, 0, 1).astype(np.float32)


_STATE_LABEL = np.array([SKY, VERTICAL, GROUND, VERTICAL, GROUND], np.uint8)


def column_labels(costs: np.ndarray, switch_cost: float, smooth_px: int = 4) -> np.ndarray:
    """H x W labels: each column the cheapest path sky -> standing -> ground -> standing ->
    ground (any state may be skipped), a change costing ``switch_cost``."""
    k = 2 * smooth_px + 1
    c = np.stack([cv2.blur(ci, (k, 1)) for ci in costs])
    per_state = c[_STATE_LABEL] * 0.1  # 5 x H x W
    n, h, w = per_state.shape
    total = per_state[:, 0].copy()
    back = np.zeros((h, n, w), np.int8)
    start_penalty = np.array([0, 0, 0, 1, 1], np.float32)[:, None] * switch_cost
    total += start_penalty
    states = np.arange(n, dtype=np.int8)[:, None]
    for v in range(1, h):
        # the cheapest earlier state (and which) for every state at once: a running minimum
        prefix = np.minimum.accumulate(total, axis=0)
        which = np.zeros((n, w), np.int8)
        for s in range(1, n):
            which[s] = np.where(total[s] < prefix[s - 1], s, which[s - 1])
        switch = np.vstack([np.full((1, w), np.inf, np.float32), prefix[:-1] + switch_cost])
        came = np.vstack([which[:1], which[:-1]])
        move = switch < total
        back[v] = np.where(move, came, states)
        total = np.where(move, switch, total) + per_state[:, v]
    state = np.argmin(total, axis=0).astype(np.int8)
    out = np.empty((h, w), np.uint8)
    cols = np.arange(w)
    for v in range(h - 1, -1, -1):
        out[v] = _STATE_LABEL[state]
        state = back[v, state, cols]
    return out


def _majority(labels: np.ndarray, segments: np.ndarray, n_labels: int = 3) -> np.ndarray:
    n = int(segments.max()) + 1
    counts = np.zeros((n, n_labels), np.int64)
    np.add.at(counts, (segments.ravel(), labels.ravel()), 1)
    return counts.argmax(1).astype(np.uint8)[segments]


def _estimate_horizon(labels: np.ndarray, cy: float, band: tuple[float, float]) -> float:
    """Just above the highest ground (its 10th percentile over the columns that have ground)."""
    h, w = labels.shape
    ground = labels == GROUND
    has = ground.any(0)
    lo, hi = cy + band[0] * h, cy + band[1] * h
    if has.sum() < 0.1 * w:
        return float(np.clip(cy, lo, hi))
    top = np.argmax(ground, axis=0)[has].astype(np.float32)
    return float(np.clip(np.percentile(top, 10) - 0.02 * h, lo, hi))


def _objects(labels: np.ndarray, segments: np.ndarray, lab: np.ndarray, merge: float) -> np.ndarray:
    """H x W int32 object ids (-1 off standing regions): adjacent standing superpixels of
    similar mean colour joined (union-find over the superpixel adjacency)."""
    n = int(segments.max()) + 1
    count = np.bincount(segments.ravel(), minlength=n).astype(np.float64)
    sums = np.stack([np.bincount(segments.ravel(), lab[..., i].ravel(), n) for i in range(3)], 1)
    mean = sums / np.maximum(count, 1)[:, None]
    standing = np.zeros(n, bool)
    standing[segments[labels == VERTICAL]] = True
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    pairs = np.concatenate([np.stack([segments[:, :-1].ravel(), segments[:, 1:].ravel()], 1),
                            np.stack([segments[:-1].ravel(), segments[1:].ravel()], 1)])
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    pairs = np.unique(np.sort(pairs, 1), axis=0)
    keep = standing[pairs[:, 0]] & standing[pairs[:, 1]]
    pairs = pairs[keep]
    close = np.linalg.norm(mean[pairs[:, 0]] - mean[pairs[:, 1]], axis=1) < merge
    for i, j in pairs[close]:
        ri, rj = find(int(i)), find(int(j))
        if ri != rj:
            parent[rj] = ri
    roots = np.array([find(i) for i in range(n)])
    ids = np.where(labels == VERTICAL, roots[segments], -1)
    return ids.astype(np.int32)


def _ground_depth(rows: np.ndarray, horizon: float, fy: float, height: float, far: float) -> np.ndarray:
    d = rows - horizon
    with np.errstate(divide="ignore"):
        return np.where(d > 0, np.minimum(height * fy / np.maximum(d, 1e-6), far), far)


def _standing_depth(labels: np.ndarray, objects: np.ndarray, horizon: float, fy: float,
                    height: float, far_standing: float, near_rows: float) -> np.ndarray:
    """H x W depth of the standing pixels (0 elsewhere): each object upright on its contact."""
    h, w = labels.shape
    depth = np.zeros((h, w), np.float32)
    ids = np.unique(objects[objects >= 0])
    if ids.size == 0:
        return depth
    # each object's pixels (one sort of all of them), objects nearest the bottom first
    below = np.vstack([labels[1:], np.full((1, w), 255, np.uint8)])
    flat = np.flatnonzero(objects >= 0)
    flat = flat[np.argsort(objects.ravel()[flat], kind="stable")]
    starts = np.searchsorted(objects.ravel()[flat], ids)
    order = []
    for a, b in zip(starts, np.append(starts[1:], flat.size), strict=True):
        ys, xs = np.divmod(flat[a:b], w)
        order.append((ys.max(), ys, xs))
    order.sort(key=lambda t: -t[0])
    for _, ys, xs in order:
        cols = np.unique(xs)
        bottom = np.full(w, -1)
        np.maximum.at(bottom, xs, ys)
        contact_cols = cols[(bottom[cols] < h - 1) & (below[bottom[cols], cols] == GROUND)]
        if contact_cols.size >= max(2, 0.15 * cols.size):
            rows = bottom[contact_cols] + 1.0
            fit = np.polyfit(contact_cols, rows, 1) if np.ptp(contact_cols) > 0 else (0.0, rows.mean())
            resid = np.abs(np.polyval(fit, contact_cols) - rows)
            inl = resid <= max(np.median(resid) * 2.5, 1.0)
            if inl.sum() >= 2 and np.ptp(contact_cols[inl]) > 0:
                fit = np.polyfit(contact_cols[inl], rows[inl], 1)
            lo, hi = rows.min(), rows.max()
            contact = np.clip(np.polyval(fit, cols), lo, hi)
            col_depth = np.where(contact - horizon < near_rows, far_standing,
                                 _ground_depth(contact, horizon, fy, height, far_standing))
        elif bottom[cols].max() >= h - 1:
            col_depth = np.full(cols.size, _ground_depth(np.array([float(h)]), horizon, fy, height,
                                                         far_standing)[0])
        else:
            # standing on what is below it (a roof on its wall), else far
            under = np.clip(bottom[cols] + 1, 0, h - 1)
            support = depth[under, cols]
            good = support > 0
            value = float(np.median(support[good])) if good.any() else far_standing
            col_depth = np.full(cols.size, value)
        per_col = np.zeros(w, np.float32)
        per_col[cols] = col_depth
        depth[ys, xs] = per_col[xs]
    return depth


def popup_depth(image: np.ndarray, K: np.ndarray, camera_height: float = 1.0,
                config: PopUpConfig = PopUpConfig()) -> PopUp:
    """The pop-up prior of ``image`` (H x W x 3 uint8) seen through ``K`` (module doc)."""
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be H x W x 3, got {img.shape}")
    H, W = img.shape[:2]
    s = min(1.0, config.work_px / max(H, W))
    w, h = max(16, round(W * s)), max(16, round(H * s))
    sy = h / H
    small = cv2.resize(np.ascontiguousarray(img), (w, h), interpolation=cv2.INTER_AREA)
    fy, cy = float(K[1][1]) * sy, float(K[1][2]) * sy
    # 1. superpixels; 2.-3. labels, twice: the second with the horizon the first one implies
    segments = superpixels(small, config.seed_step)
    seen = cues(small)
    horizon = cy
    for _ in range(2):
        labels = _majority(column_labels(cue_costs(seen, horizon), config.switch_cost), segments)
        # 4. the horizon
        horizon = _estimate_horizon(labels, cy, config.horizon_band)
    # 5. depth at the working size
    sky_depth = camera_height * fy / 2.0
    far_standing = 0.5 * sky_depth
    objects = _objects(labels, segments, seen.lab, config.merge_lab)
    standing = _standing_depth(labels, objects, horizon, fy, camera_height, far_standing,
                               config.far_fraction * h)
    # to full size: labels smoothed along the photo's edges, depth per label
    labels_full = _upsample_labels(labels, img)
    rows = (np.arange(H, dtype=np.float64)[:, None] + 0.5) * sy
    ground = _ground_depth(np.broadcast_to(rows, (H, W)), horizon, fy, camera_height,
                           far_standing).astype(np.float32)
    standing_full = _spread_nearest(standing, standing > 0, (W, H))
    depth = np.where(labels_full == SKY, sky_depth,
                     np.where(labels_full == GROUND, ground, standing_full))
    depth = np.where(depth > 0, depth, far_standing).astype(np.float32)
    return PopUp(depth, labels_full, horizon / sy, camera_height, float(sky_depth))


def _upsample_labels(labels: np.ndarray, image: np.ndarray, radius: int = 3) -> np.ndarray:
    """Labels at the image's size: one-hot maps upsampled, then each guided by the grey image."""
    H, W = image.shape[:2]
    grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
    scores = []
    for k in (SKY, GROUND, VERTICAL):
        p = cv2.resize((labels == k).astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR)
        scores.append(edge_guided(grey, p, radius, 1e-3))
    return np.argmax(np.stack(scores), axis=0).astype(np.uint8)


def edge_guided(guide: np.ndarray, src: np.ndarray, r: int, eps: float) -> np.ndarray:
    """Guided filter (He et al.) of ``src`` by a grey ``guide`` (both H x W float32, OpenCV box
    filters): smooths ``src`` while keeping the guide's edges."""
    k = (2 * r + 1, 2 * r + 1)
    mi, mp = cv2.blur(guide, k), cv2.blur(src, k)
    var = cv2.blur(guide * guide, k) - mi * mi
    cov = cv2.blur(guide * src, k) - mi * mp
    a = cov / (var + eps)
    b = mp - a * mi
    return cv2.blur(a, k) * guide + cv2.blur(b, k)


def _spread_nearest(values: np.ndarray, known: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``values`` carried to the nearest known pixel's value everywhere, then resized (nearest)."""
    if not known.any():
        return np.zeros(size[::-1], np.float32)
    _, idx = cv2.distanceTransformWithLabels((~known).astype(np.uint8), cv2.DIST_L2, 3,
                                             labelType=cv2.DIST_LABEL_PIXEL)
    lookup = np.zeros(idx.max() + 1, np.float32)
    lookup[idx[known]] = values[known]
    filled = lookup[idx]
    return cv2.resize(filled, size, interpolation=cv2.INTER_NEAREST)
