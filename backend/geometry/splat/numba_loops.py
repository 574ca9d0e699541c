"""The anti-aliased splatting of ``filtered`` as compiled CPU loops (numba), one pose at a time.

The torch path forms every tap of every point as tensors and scatters them: about forty
passes over memory per frame, each a few hundred microseconds on two cores. Here a frame is
a few compiled loops, each one pass over the points or the pixels. The arithmetic is the
module docstring of ``filtered``, step for step:

1. project (float32, relative to the camera's centre), drop points behind ``near`` or too
   far off-screen for any tap; a tent's pixels are noted;
2. footprint: a tent over the 2 x 2 pixel centres around a point smaller than
   ``tent_radius_px``, else a Gaussian over the (2k+1)^2 window around its nearest pixel;
3. depth pre-pass over the pixels each footprint covers (for tents a tight min loop that
   also lists the Gaussians);
4. taps within ``depth_tolerance`` of their pixel's front depth add ``(w, w r, w g, w b)``
   (tents hidden at all four taps are skipped first, in a tight loop);
5. normalise; the index (if asked) is the nearest point's, the smallest index on ties.

The scattered reads and writes are in loops of their own with little arithmetic, where the
CPU overlaps their cache misses; the projection, all arithmetic, writes in order and runs on
vectors. Loops count with unsigned integers and slots are unsigned: numba tests every signed
index for a negative (Python's wrap-around), and that test alone kept the projection from
vectorising (a 2M-point frame took 30 ms instead of 21).
The points are split into contiguous chunks dealt out to the threads in turn; each thread
has its own depth and accumulation buffers (no atomics), merged between the passes. The
loops release the GIL (``nogil``), so the chunks run side by side on a thread pool and
several renders may run at once. Compiled on first use (3-4 s; numba caches the machine
code beside this file, or in the user's cache when that is read-only, so later processes
load it in ~0.3 s); ``SplatRenderer.warm_up`` does it ahead of time.

Over 400 lines on purpose: the compiled kernels share one buffer layout and one set of
conventions (unsigned slots, the dump slot) that only make sense side by side.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from backend.geometry.splat.base import (
    DeviceCloud,
    RenderOutput,
    SplatConfig,
    centred_projections,
    mean_focal,
)

numba: Any
try:
    import numba
except ImportError:  # the torch path renders instead
    numba = None

MIN_POINTS_PER_THREAD = 32_768
"""Fewer threads below this many points each (a thread's hand-off costs ~50 us)."""
COVER_SLACK_PX = 1e-3
"""A Gaussian covers the pixel centres within its radius plus this: positions are stored as
float32, and a lattice magnified to the radius's own spacing puts centres on the circle."""
CHUNKS_PER_THREAD = 8
"""Points are dealt out in this many chunks per thread, so uneven parts balance."""

_pool: ThreadPoolExecutor | None = None
_local = threading.local()  # each rendering thread reuses its buffers: no fresh pages per frame


def available() -> bool:
    """Whether numba is importable (``DREAMJOURNEY_NO_NUMBA=1`` pretends it is not)."""
    return numba is not None and os.environ.get("DREAMJOURNEY_NO_NUMBA", "") in ("", "0")


def _jit(fn):
    return numba.njit(nogil=True, cache=True, fastmath=False, error_model="numpy")(fn) if numba else fn


@_jit
def _gaussian(r, sigma_scale, min_sigma, max_reach):
    """(sigma, reach) of the Gaussian footprint of a point ``r`` pixels in radius."""
    sigma = min(max(sigma_scale * r, min_sigma), max_reach / 2.0)
    k = min(max(math.ceil(2.0 * sigma - 0.5), 1), max_reach)
    return sigma, int(k)


@_jit
def _floor(x, off):
    """floor(x) for x > -off without a libm call (twice as fast in these loops); for other x
    (points dropped anyway) some integer the callers clamp and discard."""
    return int(x + off) - int(off)


@_jit
def _tent_base(cu, cv, width, height, max_reach):
    """Top-left pixel of a tent's 2 x 2 block and the point's position within it (for the
    points kept: at most ``max_reach + 1`` pixels off-screen)."""
    off = max_reach + 3.0
    x0 = min(max(_floor(cu, off), -1), width - 1)
    y0 = min(max(_floor(cv, off), -1), height - 1)
    fx = min(max(cu - x0, 0.0), 1.0)
    fy = min(max(cv - y0, 0.0), 1.0)
    return x0, y0, np.float32(fx), np.float32(fy)


@_jit
def _project(xyz_t, radius, M, centre, f, width, height, near, tent_r, max_reach, lo, hi, dump, uvzr,
             own, base):
    """Step 1 for the points lo..hi, seen by the camera at ``centre`` (float32 world point)
    with ``M`` (float32 3 x 3: ``K R``, so that a point's ``K [R|t] x`` is ``M (x - centre)``):
    (u, v, z, r_px) into ``uvzr`` (z = -1: dropped); a tent's own and top-left pixel slots
    into ``own`` and ``base`` (``dump`` for the rest).
    Arithmetic and sequential writes only, without branches, so that it runs on vectors: the
    scattered reads and writes come in tight loops after, where the CPU overlaps their cache
    misses. A tent's taps and own pixel off-screen land on the border, which is never read."""
    w2 = width + 2
    m = max_reach + 1.0
    p0, p1, p2 = M[0], M[1], M[2]  # rows as locals: the outputs cannot alias them
    c0, c1, c2 = centre[0], centre[1], centre[2]
    f32, one, neg = np.float32(f), np.float32(1.0), np.float32(-1.0)
    for i in range(np.uint64(lo), np.uint64(hi)):  # unsigned: no negative-index wrap to test
        # float32 from the camera's centre: twice the vector width of float64, and no large
        # terms that cancel however far the walk has gone from the world's origin
        x, y, zw = xyz_t[0, i] - c0, xyz_t[1, i] - c1, xyz_t[2, i] - c2
        z = p2[0] * x + p2[1] * y + p2[2] * zw
        inv = one / z
        cu = (p0[0] * x + p0[1] * y + p0[2] * zw) * inv
        cv = (p1[0] * x + p1[1] * y + p1[2] * zw) * inv
        r = radius[i] * f32 * inv
        keep = (z > near) & (cu > -m) & (cu < width - 1 + m) & (cv > -m) & (cv < height - 1 + m)
        tent = keep & (r < tent_r)
        uvzr[0, i], uvzr[1, i], uvzr[2, i], uvzr[3, i] = cu, cv, z if keep else neg, r
        bx, by, _, _ = _tent_base(cu, cv, width, height, max_reach)
        # the nearest of the four: floor(u + 0.5), clamped to the border (-1 .. width); read
        # from fx >= 0.5 instead (as the torch path does), a 2M-point frame took 40% longer
        ox, oy, _, _ = _tent_base(cu + np.float32(0.5), cv + np.float32(0.5), width + 1,
                                  height + 1, max_reach)
        base[i] = (by + 1) * w2 + bx + 1 if tent else dump
        own[i] = (oy + 1) * w2 + ox + 1 if tent else dump


@_jit
def _gauss_window(uvzr, i, sigma_scale, min_sigma, max_reach):
    """A Gaussian's centre, depth, sigma, reach, squared cover radius and nearest pixel."""
    cu, cv, r = uvzr[0, i], uvzr[1, i], uvzr[3, i]
    sigma, k = _gaussian(r, sigma_scale, min_sigma, max_reach)
    cover2 = (max(r, 0.71) + COVER_SLACK_PX) ** 2
    return cu, cv, np.float32(uvzr[2, i]), sigma, k, cover2, int(np.rint(cu)), int(np.rint(cv))


@_jit
def _cover(own, gauss, counts, c, lo, hi, uvzr, width, height, sigma_scale, min_sigma, max_reach,
           dump, zbuf):
    """Step 3 for the chunk: the nearest depth of every pixel its footprints cover, a tent
    its own pixel, a Gaussian the pixels within its radius. The Gaussians' indices go to
    ``gauss[lo:]``, their number to ``counts[c]`` (kept points whose own slot is the dump)."""
    ng = lo
    for i in range(np.uint64(lo), np.uint64(hi)):  # unsigned indices: no wrap to test
        s, z = own[i], np.float32(uvzr[2, i])
        zbuf[s] = min(zbuf[s], z)
        gauss[ng] = i
        ng += (s == dump) & (z >= 0.0)
    counts[c] = ng - lo
    w2 = width + 2
    for j in range(np.uint64(lo), np.uint64(ng)):
        cu, cv, zf, _, k, cover2, cx, cy = _gauss_window(uvzr, gauss[j], sigma_scale, min_sigma,
                                                          max_reach)
        for py in range(max(cy - k, 0), min(cy + k + 1, height)):
            dy2 = (py - cv) ** 2
            for px in range(max(cx - k, 0), min(cx + k + 1, width)):
                s = np.uint64((py + 1) * w2 + px + 1)
                zbuf[s] = min(zbuf[s], zf if dy2 + (px - cu) ** 2 <= cover2 else np.float32(np.inf))


@_jit
def _add(acc, s, w, cr, cg, cb):
    acc[s, 0] += w
    acc[s, 1] += w * cr
    acc[s, 2] += w * cg
    acc[s, 3] += w * cb


@_jit
def _blend(base, gauss, counts, c, lo, hi, uvzr, rgb, width, height, sigma_scale, min_sigma,
           max_reach, limit, block, visible, acc):
    """Step 4 for the chunk: taps at most ``limit`` (the front depth plus the tolerance) deep
    add (w, w r, w g, w b). ``block`` is the largest limit of each 2 x 2 block (-inf at the
    dump slot): the tents not hidden at all four taps are listed first, in a tight loop."""
    one, w2 = np.uint32(1), np.uint32(width + 2)
    nv = lo
    for i in range(np.uint64(lo), np.uint64(hi)):  # branch-free: visibility is too mixed to predict
        visible[nv] = i
        nv += uvzr[2, i] <= block[base[i]]
    for j in range(np.uint64(lo), np.uint64(nv)):
        i = visible[j]
        s = base[i]
        z = uvzr[2, i]
        _, _, fx, fy = _tent_base(uvzr[0, i], uvzr[1, i], width, height, max_reach)
        gx, gy = np.float32(1.0 - fx), np.float32(1.0 - fy)
        cr, cg, cb = np.float32(rgb[i, 0]), np.float32(rgb[i, 1]), np.float32(rgb[i, 2])
        _add(acc, s, gx * gy * (z <= limit[s]), cr, cg, cb)
        _add(acc, s + one, fx * gy * (z <= limit[s + one]), cr, cg, cb)
        _add(acc, s + w2, gx * fy * (z <= limit[s + w2]), cr, cg, cb)
        _add(acc, s + w2 + one, fx * fy * (z <= limit[s + w2 + one]), cr, cg, cb)
    wx = np.empty(2 * max_reach + 1)
    for j in range(np.uint64(lo), np.uint64(lo + counts[c])):
        i = gauss[j]
        cu, cv, z, sigma, k, _, cx, cy = _gauss_window(uvzr, i, sigma_scale, min_sigma, max_reach)
        cr, cg, cb = np.float32(rgb[i, 0]), np.float32(rgb[i, 1]), np.float32(rgb[i, 2])
        inv = -0.5 / (sigma * sigma)
        for q in range(2 * k + 1):
            wx[q] = math.exp((cx - k + q - cu) ** 2 * inv)
        for py in range(max(cy - k, 0), min(cy + k + 1, height)):
            wy = math.exp((py - cv) ** 2 * inv)
            for px in range(max(cx - k, 0), min(cx + k + 1, width)):
                s = np.uint64((py + 1) * w2 + px + 1)
                _add(acc, s, np.float32(wy * wx[px - cx + k]) * (z <= limit[s]), cr, cg, cb)


@_jit
def _front(own, gauss, counts, c, lo, hi, uvzr, width, height, sigma_scale, min_sigma, max_reach,
           zbuf, best):
    """The smallest index of the points at each pixel's front depth (over what they cover)."""
    for i in range(np.uint64(lo), np.uint64(hi)):
        s = own[i]
        if np.float32(uvzr[2, i]) == zbuf[s] and i < best[s]:
            best[s] = i
    w2 = width + 2
    for j in range(np.uint64(lo), np.uint64(lo + counts[c])):
        i = gauss[j]
        cu, cv, z, _, k, cover2, cx, cy = _gauss_window(uvzr, i, sigma_scale, min_sigma, max_reach)
        for py in range(max(cy - k, 0), min(cy + k + 1, height)):
            for px in range(max(cx - k, 0), min(cx + k + 1, width)):
                s = (py + 1) * w2 + px + 1
                if (py - cv) ** 2 + (px - cu) ** 2 <= cover2 and z == zbuf[s] and i < best[s]:
                    best[s] = i


@_jit
def _merge_depth(zbufs, w2, row_lo, row_hi, zbuf):
    """The nearest depth of every worker's pre-pass for the bordered rows row_lo..row_hi,
    leaving the workers' buffers at +inf for the next frame."""
    for s in range(row_lo * w2, row_hi * w2):
        z = zbufs[0, s]
        zbufs[0, s] = np.inf
        for t in range(1, zbufs.shape[0]):
            z = min(z, zbufs[t, s])
            zbufs[t, s] = np.inf
        zbuf[s] = z


@_jit
def _limits(zbuf, grow, width, height, row_lo, row_hi, limit, block):
    """For the bordered rows row_lo..row_hi: the deepest a tap may be (``limit``: the front
    depth plus the tolerance) and the largest limit of each 2 x 2 block starting there
    (``block``; +inf on the last row and column)."""
    w2 = width + 2
    for y in range(row_lo, row_hi):
        for x in range(w2):
            s = y * w2 + x
            limit[s] = zbuf[s] * grow
            if y == height + 1 or x == width + 1:
                block[s] = np.inf
            else:
                block[s] = max(max(zbuf[s], zbuf[s + 1]), max(zbuf[s + w2], zbuf[s + w2 + 1])) * grow


@_jit
def _normalise(zbuf, accs, width, height, row_lo, row_hi, image, mask, depth):
    """Step 5 for the rows row_lo..row_hi: colour = sum(w c) / sum(w) where covered."""
    w2 = width + 2
    for y in range(row_lo, row_hi):
        for x in range(width):
            s = (y + 1) * w2 + x + 1
            w, r, g, b = accs[0, s, 0], accs[0, s, 1], accs[0, s, 2], accs[0, s, 3]
            for t in range(1, accs.shape[0]):
                w += accs[t, s, 0]
                r += accs[t, s, 1]
                g += accs[t, s, 2]
                b += accs[t, s, 3]
            z = zbuf[s]
            mask[y, x] = z != np.inf
            depth[y, x] = z if z != np.inf else 0.0
            scale = np.float32(1.0) / max(w, np.float32(1e-12)) if z != np.inf else np.float32(0.0)
            image[y, x, 0] = min(int(r * scale + np.float32(0.5)), 255)  # sums are >= 0
            image[y, x, 1] = min(int(g * scale + np.float32(0.5)), 255)  # sums are >= 0
            image[y, x, 2] = min(int(b * scale + np.float32(0.5)), 255)  # sums are >= 0


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool
    if _pool is None or _pool._max_workers < workers:
        _pool = ThreadPoolExecutor(workers, thread_name_prefix="splat")
    return _pool


def _run(fn, chunks: list[tuple[int, int]], workers: int, args) -> None:
    """``fn(*args(w, c, lo, hi))`` for every chunk ``c`` on ``workers`` threads (this one and
    the pool's); worker ``w`` takes chunks w, w + workers, ... (interleaved, so uneven parts
    of the cloud spread over all of them, and the same worker sums the same points every
    time: renders are repeatable to the bit). ``w`` picks the worker's own buffers."""

    def work(w: int) -> None:
        for c in range(w, len(chunks), workers):
            fn(*args(w, c, *chunks[c]))

    futures = [_executor(workers - 1).submit(work, w) for w in range(1, workers)]
    work(0)
    for fut in futures:
        fut.result()


def _chunks(n: int, parts: int) -> list[tuple[int, int]]:
    edges = np.linspace(0, n, max(parts, 1) + 1).astype(int)
    return list(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))


class _Buffers:
    """One rendering thread's working memory, kept between frames (no fresh pages per frame),
    all C-contiguous (another memory layout would compile the loops again). Slots run over
    the bordered image, then one dump slot for what has no pixel."""

    def __init__(self, n: int, parts: int, size: int):
        self.capacity, self.parts, self.size = n, parts, size
        self.uvzr = np.empty(4 * n, np.float32)
        self.own, self.base, self.gauss, self.visible = (np.empty(n, np.uint32) for _ in range(4))
        """Slots and indices: unsigned, so the loops index without testing for a negative."""
        self.zbufs = np.full((parts, size + 1), np.inf, np.float32)
        """Each worker's depth pre-pass; a frame leaves it at +inf as it found it."""
        self.accs = np.empty((parts, size, 4), np.float32)
        self.zbuf, self.limit, self.block = (np.empty(size + 1, np.float32) for _ in range(3))
        self.dirty = False
        """Set while a frame runs: one cut short (an exception) leaves the depths unreset."""

    def fits(self, n: int, parts: int, size: int) -> bool:
        return n <= self.capacity and (parts, size) == (self.parts, self.size)


def _buffers(n: int, parts: int, size: int) -> _Buffers:
    held = getattr(_local, "buffers", None)
    if held is None or not held.fits(n, parts, size):
        held = _local.buffers = _Buffers(max(n, 1024), parts, size)
    if held.dirty:
        held.zbufs.fill(np.inf)
    return held


def render(cloud: DeviceCloud, poses: np.ndarray, K: np.ndarray, width: int, height: int,
           config: SplatConfig, scratch: threading.local, want_index: bool) -> RenderOutput:
    """Steps 1-5 of ``filtered`` for every pose, one at a time (a non-empty cloud on the CPU;
    the loops keep their own per-thread buffers, so ``scratch`` is unused)."""
    out = RenderOutput.empty(len(poses), height, width, torch.device("cpu"), want_index)
    P = centred_projections(poses, K)
    xyz_t = np.ascontiguousarray(cloud.xyz_t.numpy(), np.float32)
    radius = np.ascontiguousarray(cloud.radius.numpy(), np.float32)
    rgb = cloud.rgba.numpy().view(np.uint8).reshape(-1, 4)
    threads = config.threads or torch.get_num_threads()
    for i, p in enumerate(P):
        views = (out.image[i].numpy(), out.mask[i].numpy(), out.depth[i].numpy(),
                 None if out.index is None else out.index[i].numpy())
        render_filtered(xyz_t, radius, rgb, p, mean_focal(K), width, height, config, threads, views)
    return out


def render_filtered(xyz_t: np.ndarray, radius: np.ndarray, rgb: np.ndarray, P: np.ndarray, f: float,
                    width: int, height: int, cfg: SplatConfig, threads: int,
                    out: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]) -> None:
    """Render one pose into ``out``: (image H x W x 3 uint8, mask H x W bool, depth H x W
    float32, index H x W int64 or None), all C-contiguous.

    ``xyz_t`` is 3 x N float32, ``radius`` N float32, ``rgb`` N x 3 (or more columns) uint8,
    all C-contiguous; ``P`` 3 x 4 float64 ``K [R|t]`` with pixel centres at integer
    coordinates; ``cfg`` a SplatConfig.
    """
    image, mask, depth, index = out
    n = xyz_t.shape[1]
    size = (width + 2) * (height + 2)
    workers = max(1, min(threads, n // MIN_POINTS_PER_THREAD))
    chunks = _chunks(n, CHUNKS_PER_THREAD * workers if workers > 1 else 1)
    gauss_shape = (cfg.sigma_scale, cfg.min_sigma_px, int(cfg.max_reach_px))
    buf = _buffers(n, workers, size)
    uvzr = buf.uvzr[: 4 * n].reshape(4, n)
    counts = np.zeros(len(chunks), np.int64)
    M = np.ascontiguousarray(P[:, :3], np.float32)
    centre = (-np.linalg.solve(P[:, :3], P[:, 3])).astype(np.float32)  # the camera's, in the world
    buf.dirty = True
    _run(_project, chunks, workers, lambda w, c, lo, hi: (
        xyz_t, radius, M, centre, f, width, height, cfg.near, cfg.tent_radius_px, int(cfg.max_reach_px),
        lo, hi, size, uvzr, buf.own, buf.base))
    _run(_cover, chunks, workers, lambda w, c, lo, hi: (
        buf.own, buf.gauss, counts, c, lo, hi, uvzr, width, height, *gauss_shape, size,
        buf.zbufs[w]))
    zbuf = buf.zbuf
    _run(_merge_depth, _chunks(height + 2, workers), workers, lambda w, c, lo, hi: (
        buf.zbufs, width + 2, lo, hi, zbuf))
    zbuf[size] = buf.zbufs[:, size].min()
    buf.zbufs[:, size] = np.inf
    buf.dirty = False
    limit, block = buf.limit, buf.block
    _run(_limits, _chunks(height + 2, workers), workers, lambda w, c, lo, hi: (
        zbuf, np.float32(1.0 + cfg.depth_tolerance), width, height, lo, hi, limit, block))
    block[size] = -np.inf  # the dump slot: nothing there is visible
    buf.accs.fill(0.0)  # here, not after the last frame: the blend then finds the sums in cache
    _run(_blend, chunks, workers, lambda w, c, lo, hi: (
        buf.base, buf.gauss, counts, c, lo, hi, uvzr, rgb, width, height, *gauss_shape, limit,
        block, buf.visible, buf.accs[w]))
    _run(_normalise, _chunks(height, workers), workers, lambda w, c, lo, hi: (
        zbuf, buf.accs, width, height, lo, hi, image, mask, depth))
    if index is not None:
        bests = np.full((workers, size + 1), n, np.int64)
        _run(_front, chunks, workers, lambda w, c, lo, hi: (
            buf.own, buf.gauss, counts, c, lo, hi, uvzr, width, height, *gauss_shape, zbuf,
            bests[w]))
        best = bests.min(0)[:size].reshape(height + 2, width + 2)[1:-1, 1:-1]
        np.copyto(index, np.where(best < n, best, -1))
