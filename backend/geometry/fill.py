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

Over 400 lines on purpose: the fill's steps share one working grid (``_Work``) and its
labels; split, each part would need the others' private layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from backend.geometry.layout import ViewLayout, block_ground_depth, block_labels, expected_labels
from backend.geometry.patchmatch import Offsets, SearchConfig, nearest_patches
from backend.geometry.popup import GROUND, SKY, VERTICAL


@dataclass(frozen=True)
class Filled:
    image: np.ndarray
    """H x W x 3 uint8, the input outside the hole."""
    depth: np.ndarray
    """H x W float32 z-depth, the input outside the hole."""


def pull_push(image: np.ndarray, known: np.ndarray, levels: int = 12) -> np.ndarray:
    """Fill the pixels outside ``known`` from normalised coarser averages (any channels).

    ``known`` may also be weights in 0..1: zero-weight pixels are filled, the others kept,
    and a pixel's weight is its share of the averages that fill the rest.
    """
    img = np.asarray(image, np.float32)
    squeeze = img.ndim == 2
    if squeeze:
        img = img[..., None]
    w = known.astype(np.float32)[..., None]
    pyramid: list[tuple[np.ndarray, np.ndarray]] = [(img * w, w)]
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


@dataclass(frozen=True)
class _Work:
    """The photo at the search resolution: blocks of ``f`` x ``f`` full-resolution pixels."""

    f: int
    image: np.ndarray
    """hc x wc x 3 float32 0..1: the known pixels' mean, the hole pre-filled by pull-push."""
    hole: np.ndarray
    """hc x wc bool: a block with any hole pixel."""
    depth: np.ndarray
    """hc x wc float32: the known pixels' mean depth (0 where none)."""
    known: np.ndarray
    """hc x wc float32: the fraction of the block that is known."""
    mean: np.ndarray
    """hc x wc x 3 float32 0..1: the known pixels' mean (0 where none)."""


def _work(image: np.ndarray, depth: np.ndarray, hole: np.ndarray, known: np.ndarray, work_px: int,
          block_px: int = 4) -> _Work:
    """Blocks of f x f pixels: the longest side at most ``work_px`` blocks, and blocks of at
    least ``block_px`` where the shorter side keeps 64 of them (a 256 px view costs no more
    to search than it must)."""
    h, w = hole.shape
    f = max(min(block_px, max(1, min(h, w) // 64)), -(-max(h, w) // work_px))
    hc, wc = -(-h // f), -(-w // f)
    def block_mean(a: np.ndarray) -> np.ndarray:
        if hc * f != h or wc * f != w:
            a = cv2.copyMakeBorder(a, 0, hc * f - h, 0, wc * f - w, cv2.BORDER_CONSTANT, value=0)
        return cv2.resize(a, (wc, hc), interpolation=cv2.INTER_AREA).reshape(hc, wc, -1)

    known_u8 = known.view(np.uint8)
    colour = block_mean((image * known_u8[..., None]).astype(np.float32)) * np.float32(1 / 255)
    masks = np.dstack([block_mean(np.where(known, depth, 0).astype(np.float32)),
                       block_mean(known_u8.astype(np.float32)),
                       block_mean(hole.view(np.uint8).astype(np.float32))])
    frac = masks[..., 1]
    per_known = np.maximum(frac, 1e-6)
    mean = np.where(frac[..., None] > 0, colour / per_known[..., None], 0).astype(np.float32)
    dep = np.where(frac > 0, masks[..., 0] / per_known, 0).astype(np.float32)
    est = _layout_guess(mean, frac < 1.0)
    return _Work(f, est.astype(np.float32), masks[..., 2] > 0, dep, frac, mean)


def _layout_guess(image: np.ndarray, hole: np.ndarray, side: int = 32) -> np.ndarray:
    """The hole's colour layout at about ``side`` pixels, continued from its border (Telea).

    Only the search's starting point: patches then replace it with texture. Continuing the
    border (water beside water, sky beside sky) keeps the search from settling on one
    average-looking texture everywhere, which a flat pull-push guess invites.
    """
    h, w = hole.shape
    s = max(1, max(h, w) // side)
    small = cv2.resize(image, (max(1, w // s), max(1, h // s)), interpolation=cv2.INTER_AREA)
    small_hole = cv2.resize(hole.astype(np.float32), small.shape[1::-1], interpolation=cv2.INTER_AREA) > 0
    u8 = np.clip(small * 255 + 0.5, 0, 255).astype(np.uint8)
    guess = cv2.inpaint(u8, small_hole.astype(np.uint8), 3, cv2.INPAINT_TELEA).astype(np.float32) / 255
    up = cv2.resize(guess, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.where(hole[..., None], up, image).astype(np.float32)


def _background_depth(work: _Work, window: int, edge_ratio: float, near_ratio: float,
                      reach_px: float = 64.0) -> tuple[np.ndarray, np.ndarray]:
    """(expected depth everywhere, background anchors) at the search resolution.

    A depth edge is a known block whose 3 x 3 neighbourhood holds depth beyond
    ``1 / edge_ratio`` times its own, where a hole block counts as the farthest known depth
    within ``window`` (so the edge is seen across a narrow disocclusion). The near side of an
    edge is everything within ``window`` of it nearer than ``near_ratio`` of that far depth.
    The expected depth is pull-pushed from the other known blocks (the anchors): a hole
    continues the surface behind, never the object in front.
    """
    known = work.known > 0
    d = np.where(known, work.depth, 0).astype(np.float32)
    box = np.ones((window, window), np.uint8)
    across = cv2.dilate(d, box)
    seen = cv2.dilate(np.where(known, d, np.where(work.hole, across, 0)).astype(np.float32),
                      np.ones((3, 3), np.uint8))
    edge = known & (d < edge_ratio * seen)
    near = known & (cv2.dilate(edge.astype(np.uint8), box) > 0) & (d < near_ratio * np.maximum(across, seen))
    anchors = known & ~near
    if not anchors.any():
        anchors = known
    far = np.maximum(pull_push(d, np.where(anchors, work.known, 0).astype(np.float32)), 1e-6)
    # far from every anchor (a magnified ground of near strips and gaps, say) the hole
    # continues what is around it instead: the anchors' lean fades out between reach_px
    # and twice that (full-resolution pixels)
    around = np.maximum(pull_push(d, work.known), 1e-6)
    dist = cv2.distanceTransform((~anchors).astype(np.uint8), cv2.DIST_L2, 3) * work.f
    t = np.clip(dist / reach_px - 1.0, 0.0, 1.0)
    expected = np.exp((1 - t) * np.log(far) + t * np.log(around))
    return expected.astype(np.float32), anchors & (work.known >= 1.0)


def _copy_full(image: np.ndarray, depth: np.ndarray, known: np.ndarray, hole: np.ndarray, offsets: Offsets,
               blocks: np.ndarray, f: int, labels: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Hole pixels' colour and depth copied at full resolution through their block's offset:
    (rows, cols, N x 4 values, whether a known pixel was reached, the source's label when
    ``labels`` is given).

    A pixel whose own block's source pixel is unknown tries the offsets of the neighbouring
    blocks. Flat indices run over copies padded by ``f`` unknown pixels, so an offset that
    leaves the frame by up to a block lands on an unknown pixel instead of wrapping.
    """
    h, w = hole.shape
    hc, wc = offsets.dy.shape
    wp = w + 2 * f
    img = cv2.copyMakeBorder(image, f, f, f, f, cv2.BORDER_CONSTANT, value=0).reshape(-1, 3)
    dep = np.pad(depth, f).ravel()
    kflat = np.pad(known, f).ravel()
    shift = (f * offsets.dy * wp + f * offsets.dx).astype(np.int32)
    shift = np.where(blocks, shift, np.int32(-f * wp - f)).ravel()  # not a hole block: no copy
    ys, xs = np.nonzero(hole)
    at = ((ys + f) * wp + (xs + f)).astype(np.int32)
    by, bx = (ys // f).astype(np.int32), (xs // f).astype(np.int32)
    src = at + shift[by * wc + bx]
    good = kflat[src]
    for ey, ex in ((0, 1), (1, 0), (0, -1), (-1, 0)):
        if good.all():
            break
        miss = np.flatnonzero(~good)
        ny = np.clip(by[miss] + ey, 0, hc - 1)
        nx = np.clip(bx[miss] + ex, 0, wc - 1)
        cand = at[miss] + shift[ny * wc + nx]
        hit = kflat[cand]
        src[miss[hit]] = cand[hit]
        good[miss[hit]] = True
    values = np.empty((ys.size, 4), np.float32)
    values[:, :3] = img[src]
    values[:, 3] = dep[src]
    src_labels = None if labels is None else np.pad(labels, f, mode="edge").ravel()[src]
    return ys, xs, values, good, src_labels


def _colour_correction(work: _Work, offsets: Offsets, min_known: float = 0.25) -> np.ndarray:
    """hc x wc x 3 (0..1): what to add to the copies so that they meet their border's colour.

    A hole block that is partly known tells how far its copy's colour is from what is
    around it (its known pixels' mean minus its source block's mean); pull-push spreads those
    differences over the hole, smooth (a cheap stand-in for Poisson blending), so a copy from
    a darker or bluer place is shifted to its surroundings and the texture is kept.
    """
    hc, wc = offsets.dy.shape
    partial = work.hole & (work.known >= min_known)
    if not partial.any():
        return np.zeros((hc, wc, 3), np.float32)
    ys, xs = np.mgrid[0:hc, 0:wc]
    src = work.image[np.clip(ys + offsets.dy, 0, hc - 1), np.clip(xs + offsets.dx, 0, wc - 1)]
    diff = np.where(partial[..., None], work.mean - src, 0).astype(np.float32)
    return pull_push(diff, partial)


def texture_fill(image: np.ndarray, depth: np.ndarray, hole: np.ndarray, work_px: int = 128,
                 edge_ratio: float = 0.5, near_ratio: float = 0.85, edge_window: int = 5,
                 thin_px: int = 12, porous_known: float = 0.6,
                 config: SearchConfig | None = None, layout: ViewLayout | None = None,
                 rarity_weight: float = 1.0) -> Filled:
    """Fill ``hole`` with texture copied from the background side (PatchMatch at reduced size).

    1. the photo is reduced to blocks of ``f`` pixels (longest side ``work_px``);
    2. the hole's expected depth leans to the background (``_background_depth``);
    3. a nearest-patch field from hole blocks to background blocks (``patchmatch``), coarse to
       fine, colour and depth in the cost;
    4. each full-resolution hole pixel copies a full-resolution pixel through its block's
       offset, so texture keeps its detail;
    5. colour differences at the border are spread over the hole (``_colour_correction``);
    6. depth is copied with the colour; parts of the hole narrower than ``2 thin_px + 1`` (gaps
       between magnified splats) are interpolated instead (pull-push of colour, the expected
       depth), and so are holes in a sieve (more than ``porous_known`` of the 5 x 5 blocks
       around known): a copied texture there is a mosaic; soft seams (a 3 x 3 blur) at the
       hole's border and between blocks copied from different places.

    With a ``layout`` (the view's sky, ground and standing labels and its rays' ground depth)
    the hole is labelled too (``layout.expected_labels``: ground where the ray meets the ground
    before the background, else sky or standing as the background around it): sources are
    searched among their own label only, a copy whose source pixel has another label is
    replaced by a smooth fill from that label's pixels (no object lands in the sky or on the
    ground), and ground and sky take the plane's and the sky's depth; a source's colour costs
    ``rarity_weight`` x its rarity among the known blocks (a red tractor is rare, foliage
    is not), so a wide reveal continues the common texture instead of repeating an object.
    """
    hole = np.asarray(hole, bool)
    img = np.ascontiguousarray(image)
    dep = np.asarray(depth, np.float32)
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[:2] != hole.shape or dep.shape != hole.shape:
        raise ValueError(f"texture_fill needs an H x W x 3 image and H x W depth and hole, got "
                         f"{img.shape}, {dep.shape}, {hole.shape}")
    known = ~hole & (dep > 0)
    if not known.any():
        raise ValueError("nothing to fill from: every pixel is in the hole or has no depth")
    out_img, out_dep = img.copy(), dep.copy()
    if not hole.any():
        return Filled(out_img, out_dep)
    # 1.-2. the search resolution and the background depth
    work = _work(img, dep, hole, known, work_px)
    expected, anchors = _background_depth(work, edge_window, edge_ratio, near_ratio)
    hc, wc = work.hole.shape
    labels = own = rarity = None
    if layout is not None:
        own = block_labels(layout.labels, known, work.f, hc, wc)
        ground_depth = block_ground_depth(layout.ground_depth, work.f, hc, wc)
        labels = expected_labels(own, ground_depth, expected, work.hole, anchors, pull_push)
        rarity = rarity_weight * colour_rarity(work.mean, work.known >= 1.0)
        expected = np.where(work.hole & (labels == GROUND), ground_depth,
                            np.where(work.hole & (labels == SKY), layout.sky_depth, expected))
        expected = expected.astype(np.float32)
    log_depth = np.log(np.where(work.hole | ~(work.known > 0), expected, np.maximum(work.depth, 1e-6)))
    # 3. the nearest-patch field (a sieve with no whole known block is all interpolated)
    if (work.known >= 1.0).any():
        offsets = nearest_patches(work.image, work.hole, anchors, log_depth.astype(np.float32),
                                  config or SearchConfig(near_ratio=near_ratio), labels, rarity)
    else:
        zero = np.zeros(work.hole.shape, np.int32)
        offsets = Offsets(zero, zero, zero.astype(np.float32))
    # 4. full-resolution copy
    ys, xs, values, good, src_labels = _copy_full(img, dep, known, hole, offsets, work.hole, work.f,
                                                  None if layout is None else layout.labels)
    h, w = hole.shape
    flat = ys * w + xs
    # 5. colour matched to the border, smoothly
    hc, wc = offsets.dy.shape
    size = (wc * work.f, hc * work.f)
    shift = cv2.resize(_colour_correction(work, offsets), size, interpolation=cv2.INTER_LINEAR)
    values[:, :3] += 255.0 * shift[:h, :w].reshape(-1, 3)[flat]
    # 6. thin gaps and pixels no block reached: interpolated
    k = 2 * thin_px + 1
    wide = cv2.morphologyEx(hole.astype(np.uint8), cv2.MORPH_OPEN, np.ones((k, k), np.uint8)) > 0
    porous = cv2.blur(work.known, (5, 5)) >= porous_known  # gaps in a sieve of magnified splats
    smooth = ~good | ~wide.ravel()[flat] | porous[ys // work.f, xs // work.f]
    if layout is not None and labels is not None and own is not None:  # set together above
        want = _pixel_labels(labels, layout, expected, ys, xs, work.f, size)
        smooth |= src_labels != want
        _label_smooth(values, smooth, want, work, own, expected, ys, xs, size)
        plane = want == GROUND
        values[plane, 3] = layout.ground_depth[ys[plane], xs[plane]]
        values[want == SKY, 3] = layout.sky_depth
    elif smooth.any():
        colour = pull_push(work.mean, work.known) * 255.0
        up = cv2.resize(np.dstack([colour, expected]), size, interpolation=cv2.INTER_LINEAR)
        values[smooth] = up[:h, :w].reshape(-1, 4)[flat[smooth]]
    out_img.reshape(-1, 3)[flat] = np.clip(values[:, :3] + 0.5, 0, 255).astype(np.uint8)
    out_dep.reshape(-1)[flat] = values[:, 3]
    # soft seams: at the hole's border and where neighbouring blocks copied from different places
    seams = hole & ((cv2.dilate((~hole).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
                    | _offset_seams(offsets, work.f, hole.shape))
    if seams.any():
        blurred = cv2.GaussianBlur(out_img, (3, 3), 0)
        out_img[seams] = blurred[seams]
    return Filled(out_img, out_dep)


def colour_rarity(colour: np.ndarray, where: np.ndarray, bins: int = 6) -> np.ndarray:
    """H x W float32 in [0, 1]: how much rarer each pixel's colour (0..1 RGB) is than the
    typical colour of the ``where`` pixels (1: ten times rarer or more)."""
    q = np.clip((colour * bins).astype(np.int32), 0, bins - 1)
    code = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]
    if not where.any():
        return np.zeros(where.shape, np.float32)
    p = np.bincount(code[where], minlength=bins**3).astype(np.float32) + 0.5
    p /= p.sum()
    typical = float(np.median(np.log(p[code[where]])))
    return np.clip((typical - np.log(p[code])) / np.log(10.0), 0, 1).astype(np.float32)


def _pixel_labels(labels: np.ndarray, layout: ViewLayout, expected: np.ndarray, ys: np.ndarray,
                  xs: np.ndarray, f: int, size: tuple[int, int]) -> np.ndarray:
    """Each hole pixel's expected label at full resolution: GROUND where its own ray meets the
    ground before the (upsampled) expected background, else its block's label if not GROUND."""
    up = cv2.resize(expected, size, interpolation=cv2.INTER_LINEAR)[ys, xs]
    block = labels[ys // f, xs // f]
    ground = layout.ground_depth[ys, xs] <= 1.05 * up
    return np.where(ground, GROUND, np.where(block == GROUND, VERTICAL, block)).astype(np.uint8)


def _label_smooth(values: np.ndarray, smooth: np.ndarray, want: np.ndarray, work: _Work,
                  own: np.ndarray, expected: np.ndarray, ys: np.ndarray, xs: np.ndarray,
                  size: tuple[int, int]) -> None:
    """``values`` of the ``smooth`` pixels: colour spread from the known blocks of the pixel's
    own label only (pull-push), depth the expected background's."""
    depth_up = cv2.resize(expected, size, interpolation=cv2.INTER_LINEAR)
    for label in np.unique(want[smooth]):
        sel = smooth & (want == label)
        weight = (work.known * (own == label)).astype(np.float32)
        if not (weight > 0).any():
            weight = work.known
        colour = cv2.resize(pull_push(work.mean, weight) * 255.0, size, interpolation=cv2.INTER_LINEAR)
        values[sel, :3] = colour[ys[sel], xs[sel]]
        values[sel, 3] = depth_up[ys[sel], xs[sel]]


def _offset_seams(offsets: Offsets, f: int, shape: tuple[int, int]) -> np.ndarray:
    """Full-resolution pixels on either side of a block border whose two blocks' offsets differ."""
    code = ((offsets.dy + 2048) * 4096 + (offsets.dx + 2048)).astype(np.float32)
    hc, wc = code.shape
    full = cv2.resize(code, (wc * f, hc * f), interpolation=cv2.INTER_NEAREST)[: shape[0], : shape[1]]
    seam = np.zeros(shape, bool)
    dx = full[:, 1:] != full[:, :-1]
    dy = full[1:] != full[:-1]
    seam[:, 1:] |= dx
    seam[:, :-1] |= dx
    seam[1:] |= dy
    seam[:-1] |= dy
    return seam
