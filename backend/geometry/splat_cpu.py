"""The anti-aliased splatting of ``render.py`` as compiled CPU loops (numba), one pose at a time.

The torch path forms every tap of every point as tensors and scatters them: about forty
passes over memory per frame, each a few hundred microseconds on two cores. Here each point
is visited twice in one compiled loop (depth pre-pass, then blending), so a frame costs a few
bare scatters. The arithmetic is the module docstring of ``render.py``, step for step:

1. project (float64), drop points behind ``near`` or too far off-screen for any tap;
2. footprint: a tent over the 2 x 2 pixel centres around a point smaller than
   ``tent_radius_px``, else a Gaussian over the (2k+1)^2 window around its nearest pixel;
3. depth pre-pass over the pixels each footprint covers;
4. taps within ``depth_tolerance`` of their pixel's front depth add ``(w, w r, w g, w b)``;
5. normalise; the index (if asked) is the nearest point's, the smallest index on ties.

The points are split into contiguous chunks dealt out to the threads in turn; each thread
has its own depth and accumulation buffers (no atomics), merged between the passes. The
loops release the GIL (``nogil``), so the chunks run side by side on a thread pool and
several renders may run at once. Compiled on first use (3-4 s; numba caches the machine
code beside this file, or in the user's cache when that is read-only, so later processes
load it in ~0.3 s); ``SplatRenderer.warm_up`` does it ahead of time.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

try:
    import numba
except ImportError:  # the torch path renders instead
    numba = None

MIN_POINTS_PER_THREAD = 32_768
"""Fewer threads below this many points each (a thread's hand-off costs ~50 us)."""
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
def _footprint(r, tent_r, sigma_scale, min_sigma, max_reach):
    """(sigma, reach) of a Gaussian footprint; reach 0 marks a tent."""
    if r < tent_r:
        return 0.0, 0
    sigma = min(max(sigma_scale * r, min_sigma), max_reach / 2.0)
    k = min(max(math.ceil(2.0 * sigma - 0.5), 1), max_reach)
    return sigma, int(k)


@_jit
def _tent_base(cu, cv, width, height):
    """Top-left pixel of a tent's 2 x 2 block and the point's position within it."""
    x0 = min(max(math.floor(cu), -1.0), width - 1.0)
    y0 = min(max(math.floor(cv), -1.0), height - 1.0)
    fx = min(max(cu - x0, 0.0), 1.0)
    fy = min(max(cv - y0, 0.0), 1.0)
    return int(x0), int(y0), np.float32(fx), np.float32(fy)


@_jit
def _project_and_cover(xyz_t, radius, P, f, width, height, near, tent_r, sigma_scale, min_sigma,
                       max_reach, lo, hi, uvzr, zbuf):
    """Steps 1-3 for the points lo..hi: their (u, v, z, r_px) into ``uvzr`` (z = -1: dropped)
    and the nearest depth of every pixel their footprints cover into ``zbuf``."""
    w2 = width + 2
    m = max_reach + 1.0
    for i in range(lo, hi):
        x, y, zw = xyz_t[0, i], xyz_t[1, i], xyz_t[2, i]
        z = P[2, 0] * x + P[2, 1] * y + P[2, 2] * zw + P[2, 3]
        uvzr[2, i] = -1.0
        if not z > near:
            continue
        inv = 1.0 / z
        cu = (P[0, 0] * x + P[0, 1] * y + P[0, 2] * zw + P[0, 3]) * inv
        cv = (P[1, 0] * x + P[1, 1] * y + P[1, 2] * zw + P[1, 3]) * inv
        if not (-m < cu < width - 1 + m and -m < cv < height - 1 + m):
            continue
        r = radius[i] * f * inv
        uvzr[0, i], uvzr[1, i], uvzr[2, i], uvzr[3, i] = cu, cv, z, r
        zf = np.float32(z)
        sigma, k = _footprint(r, tent_r, sigma_scale, min_sigma, max_reach)
        if k == 0:  # a tent covers the pixel it falls in
            x0, y0, fx, fy = _tent_base(cu, cv, width, height)
            # its own pixel (off-screen: the border, never read); min, not a branch that
            # mispredicts half the time
            s = (y0 + (fy >= 0.5) + 1) * w2 + x0 + (fx >= 0.5) + 1
            zbuf[s] = min(zbuf[s], zf)
            continue
        cover2 = max(r, 0.71) ** 2
        cx, cy = int(np.rint(cu)), int(np.rint(cv))
        for py in range(max(cy - k, 0), min(cy + k + 1, height)):
            dy2 = (py - cv) ** 2
            for px in range(max(cx - k, 0), min(cx + k + 1, width)):
                s = (py + 1) * w2 + px + 1
                zbuf[s] = min(zbuf[s], zf if dy2 + (px - cu) ** 2 <= cover2 else np.float32(np.inf))


@_jit
def _add(acc, s, w, cr, cg, cb):
    acc[s, 0] += w
    acc[s, 1] += w * cr
    acc[s, 2] += w * cg
    acc[s, 3] += w * cb


@_jit
def _blend(uvzr, rgb, width, height, tent_r, sigma_scale, min_sigma, max_reach, lo, hi, limit, block,
           acc):
    """Step 4 for the points lo..hi: taps at most ``limit`` (the front depth plus the
    tolerance) deep add (w, w r, w g, w b). A tent's taps off-screen land on the border;
    ``block`` is the largest limit of each 2 x 2 block, so hidden tents are skipped at once."""
    w2 = width + 2
    wx = np.empty(2 * max_reach + 1)
    for i in range(lo, hi):
        z = uvzr[2, i]
        if z < 0:
            continue
        cu, cv, r = uvzr[0, i], uvzr[1, i], uvzr[3, i]
        cr, cg, cb = np.float32(rgb[i, 0]), np.float32(rgb[i, 1]), np.float32(rgb[i, 2])
        sigma, k = _footprint(r, tent_r, sigma_scale, min_sigma, max_reach)
        if k == 0:
            x0, y0, fx, fy = _tent_base(cu, cv, width, height)
            s = (y0 + 1) * w2 + x0 + 1
            if z > block[s]:  # hidden at all four taps
                continue
            gx, gy = np.float32(1.0 - fx), np.float32(1.0 - fy)
            # branch-free (a hidden tap adds zero): visibility is too mixed to predict
            _add(acc, s, gx * gy * (z <= limit[s]), cr, cg, cb)
            _add(acc, s + 1, fx * gy * (z <= limit[s + 1]), cr, cg, cb)
            _add(acc, s + w2, gx * fy * (z <= limit[s + w2]), cr, cg, cb)
            _add(acc, s + w2 + 1, fx * fy * (z <= limit[s + w2 + 1]), cr, cg, cb)
            continue
        inv = -0.5 / (sigma * sigma)
        cx, cy = int(np.rint(cu)), int(np.rint(cv))
        for j in range(2 * k + 1):
            wx[j] = math.exp((cx - k + j - cu) ** 2 * inv)
        for py in range(max(cy - k, 0), min(cy + k + 1, height)):
            wy = math.exp((py - cv) ** 2 * inv)
            for px in range(max(cx - k, 0), min(cx + k + 1, width)):
                s = (py + 1) * w2 + px + 1
                _add(acc, s, np.float32(wy * wx[px - cx + k]) * (z <= limit[s]), cr, cg, cb)


@_jit
def _front(uvzr, width, height, tent_r, sigma_scale, min_sigma, max_reach, lo, hi, zbuf, best):
    """The smallest index of the points at each pixel's front depth (over what they cover)."""
    w2 = width + 2
    for i in range(lo, hi):
        z = np.float32(uvzr[2, i])
        if z < 0:
            continue
        cu, cv, r = uvzr[0, i], uvzr[1, i], uvzr[3, i]
        _, k = _footprint(r, tent_r, sigma_scale, min_sigma, max_reach)
        if k == 0:
            x0, y0, fx, fy = _tent_base(cu, cv, width, height)
            px, py = x0 + (fx >= 0.5), y0 + (fy >= 0.5)
            s = (py + 1) * w2 + px + 1
            if 0 <= px < width and 0 <= py < height and z == zbuf[s] and i < best[s]:
                best[s] = i
            continue
        cover2 = max(r, 0.71) ** 2
        cx, cy = int(np.rint(cu)), int(np.rint(cv))
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
            image[y, x, 0] = min(max(math.floor(r * scale + 0.5), 0.0), 255.0)
            image[y, x, 1] = min(max(math.floor(g * scale + 0.5), 0.0), 255.0)
            image[y, x, 2] = min(max(math.floor(b * scale + 0.5), 0.0), 255.0)


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool
    if _pool is None or _pool._max_workers < workers:
        _pool = ThreadPoolExecutor(workers, thread_name_prefix="splat")
    return _pool


def _run(fn, chunks: list[tuple[int, int]], workers: int, args) -> None:
    """``fn(*args(w, lo, hi))`` for every chunk on ``workers`` threads (this one and the pool's);
    worker ``w`` takes chunks w, w + workers, ... (interleaved, so uneven parts of the cloud
    spread over all of them, and the same worker sums the same points every time: renders
    are repeatable to the bit). ``w`` picks the worker's own buffers."""

    def work(w: int) -> None:
        for lo, hi in chunks[w::workers]:
            fn(*args(w, lo, hi))

    futures = [_executor(workers - 1).submit(work, w) for w in range(1, workers)]
    work(0)
    for fut in futures:
        fut.result()


def _block_max(limit: np.ndarray, w2: int) -> np.ndarray:
    """The largest of each slot's, its right, lower and lower-right neighbours' values (the
    last row and column: +inf)."""
    grid = limit.reshape(-1, w2)
    out = np.full_like(grid, np.inf)
    np.maximum(grid[:-1, :-1], grid[:-1, 1:], out=out[:-1, :-1])
    np.maximum(out[:-1, :-1], np.maximum(grid[1:, :-1], grid[1:, 1:]), out=out[:-1, :-1])
    return out.reshape(-1)


def _chunks(n: int, parts: int) -> list[tuple[int, int]]:
    edges = np.linspace(0, n, max(parts, 1) + 1).astype(int)
    return list(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))


def _buffers(n: int, parts: int, size: int) -> tuple[np.ndarray, ...]:
    """This thread's (4 x n projected points, parts x size depths at +inf, parts x size x 4
    sums, size merged depths), all C-contiguous (another memory layout would compile the
    loops again). A frame leaves the depths at +inf as it found them; one cut short (an
    exception) leaves them dirty, and they are reset here."""
    held = getattr(_local, "buffers", None)
    if held is None or held[0].size < 4 * n or held[1].shape != (parts, size):
        held = _local.buffers = (np.empty(4 * max(n, 1024), np.float32),
                                 np.full((parts, size), np.inf, np.float32),
                                 np.empty((parts, size, 4), np.float32),
                                 np.empty(size, np.float32))
        _local.dirty = False
    if _local.dirty:
        held[1].fill(np.inf)
    return held[0][: 4 * n].reshape(4, n), held[1], held[2], held[3]


def render_filtered(xyz_t: np.ndarray, radius: np.ndarray, rgb: np.ndarray, P: np.ndarray, f: float,
                    width: int, height: int, cfg, threads: int, out: tuple) -> None:
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
    shape = (cfg.tent_radius_px, cfg.sigma_scale, cfg.min_sigma_px, int(cfg.max_reach_px))
    uvzr, zbufs, accs, zbuf = _buffers(n, workers, size)
    _local.dirty = True
    _run(_project_and_cover, chunks, workers, lambda w, lo, hi: (
        xyz_t, radius, P, f, width, height, cfg.near, *shape, lo, hi, uvzr, zbufs[w]))
    _run(_merge_depth, _chunks(height + 2, workers), workers, lambda w, lo, hi: (
        zbufs, width + 2, lo, hi, zbuf))
    limit = zbuf * np.float32(1.0 + cfg.depth_tolerance)
    block = _block_max(limit, width + 2)
    accs.fill(0.0)  # here, not after the last frame: the blend then finds the sums in cache
    _run(_blend, chunks, workers, lambda w, lo, hi: (
        uvzr, rgb, width, height, *shape, lo, hi, limit, block, accs[w]))
    _run(_normalise, _chunks(height, workers), workers, lambda w, lo, hi: (
        zbuf, accs, width, height, lo, hi, image, mask, depth))
    _local.dirty = False
    if index is not None:
        bests = np.full((workers, size), n, np.int64)
        _run(_front, chunks, workers, lambda w, lo, hi: (
            uvzr, width, height, *shape, lo, hi, zbuf, bests[w]))
        best = bests.min(0).reshape(height + 2, width + 2)[1:-1, 1:-1]
        np.copyto(index, np.where(best < n, best, -1))
