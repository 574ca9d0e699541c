"""Eulerian flow animation of a still view (Holynski et al., as used by Make-It-4D).

A constant-velocity 2D motion field ``M`` (pixels per frame) describes how each place in the
view moves. Each pixel's path is found by integrating ``M`` (Euler steps); a looping clip of
``N`` frames blends the pixels pushed forward ``t`` steps with the pixels pushed backward
``N - t`` steps (symmetric splatting), with weights ``1 - t/N`` and ``t/N``. Frame 0 and the
frame after the last are both the still view, so the clip loops without a seam. The paths
are lifted to 3D by keeping each pixel's depth, so the clip renders from any nearby pose.

Motion stays where it belongs: :func:`motion_field` takes as the moving region the whole
coherent region each arrow lies in (``geometry.regions.select_region``: a graph segmentation
of superpixels by colour, texture and edges, holding the stroke; the freeze brush bounds it),
interpolates the arrows' velocities inside it only and fades them to zero over a feather band
*inside* its edge, so every pixel outside stays exactly still and particles slow down before
they reach the edge (no seam, nothing dragged out). Without arrows the region is a sky/water
guess, confined the same way.

Only the moving pixels are animated: :func:`splat` pushes them to their positions of a frame
(bilinear splatting, the still view everywhere else), so a frame costs the region's size, not
the view's.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import cv2
import numpy as np

from backend.geometry.regions import select_region
from protocol.messages import Arrow


def _sample(field: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Bilinear sample of an H x W x 2 field at N x 2 pixel positions (x, y), edge-clamped."""
    h, w = field.shape[:2]
    x = np.clip(pos[:, 0] - 0.5, 0, w - 1)
    y = np.clip(pos[:, 1] - 0.5, 0, h - 1)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = field[y0, x0] * (1 - fx) + field[y0, x1] * fx
    bottom = field[y1, x0] * (1 - fx) + field[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def integrate(field: np.ndarray, start: np.ndarray, steps: int) -> list[np.ndarray]:
    """Positions after 0..steps Euler steps through ``field`` from N x 2 ``start`` (x, y)."""
    out = [start.astype(np.float32)]
    pos = out[0]
    for _ in range(steps):
        pos = pos + _sample(field, pos)
        out.append(pos)
    return out


def loop_paths(field: np.ndarray, start: np.ndarray, num_frames: int) -> tuple[list, list, np.ndarray]:
    """Forward and backward positions for each frame of a seamless loop, and blend weights.

    Returns ``(forward, backward, alpha)``: ``forward[t]`` is ``start`` pushed ``t`` steps
    along ``field``, ``backward[t]`` pushed ``num_frames - t`` steps against it, and frame
    ``t`` blends them with weights ``1 - alpha[t]`` and ``alpha[t] = t / num_frames``.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    forward = integrate(field, start, num_frames)
    backward_steps = integrate(-field, start, num_frames)
    backward = [backward_steps[num_frames - t] for t in range(num_frames)]
    alpha = np.arange(num_frames, dtype=np.float32) / num_frames
    return forward[:num_frames], backward, alpha


def loop_frames(field: np.ndarray, start: np.ndarray, num_frames: int) -> Iterator[tuple]:
    """``(t, forward[t], backward[t], alpha[t])`` of :func:`loop_paths`, one frame at a time.

    Memory is O(sqrt(num_frames)) position arrays instead of 2 x num_frames: the backward
    path is integrated once keeping every k-th step (k = sqrt(n)), and each stretch of k
    steps is integrated again from its checkpoint when the frames reach it. The positions
    are bitwise those of :func:`loop_paths`.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    n = num_frames
    k = max(1, math.isqrt(n))
    back_field = -field
    checkpoints = {}
    pos = start.astype(np.float32)
    for step in range(n + 1):
        if step % k == 0:
            checkpoints[step] = pos
        if step < n:
            pos = pos + _sample(back_field, pos)
    forward = start.astype(np.float32)
    stretch: dict[int, np.ndarray] = {}
    for t in range(n):
        s = n - t  # backward[t] is ``start`` pushed s steps against the field
        if s not in stretch:
            base = (s // k) * k
            p = checkpoints[base]
            stretch = {base: p}
            for step in range(base + 1, s + 1):
                p = p + _sample(back_field, p)
                stretch[step] = p
        yield t, forward, stretch[s], t / n
        forward = forward + _sample(field, forward)


def splat(colour: np.ndarray, pos: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(H x W x 3 float32 sum of weighted colours, H x W float32 sum of weights): N x 3
    ``colour`` pushed to N x 2 pixel positions ``pos`` (x, y; pixel centres at .5), each
    spread bilinearly over the 4 pixels around it."""
    h, w = shape
    x, y = pos[:, 0] - 0.5, pos[:, 1] - 0.5
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0).astype(np.float32), (y - y0).astype(np.float32)
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    acc = np.zeros((h * w, 4), np.float32)
    for dx, dy, wt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy),
                       (1, 1, fx * fy)):
        xi, yi = x0 + dx, y0 + dy
        ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        flat = yi[ok] * w + xi[ok]
        wk = wt[ok]
        for c in range(3):
            acc[:, c] += np.bincount(flat, colour[ok, c] * wk, h * w)
        acc[:, 3] += np.bincount(flat, wk, h * w)
    return acc[:, :3].reshape(h, w, 3), acc[:, 3].reshape(h, w)


def loop_frame(still: np.ndarray, moving: np.ndarray, colour: np.ndarray, forward: np.ndarray,
               backward: np.ndarray, alpha: float, min_weight: float = 0.3) -> np.ndarray:
    """One frame of the loop: the ``moving`` pixels (H x W bool) of ``still`` replaced by the
    symmetric splat of their ``colour`` (N x 3) pushed ``forward`` and ``backward`` (N x 2),
    weighted ``1 - alpha`` and ``alpha``; where too little arrives the still view shows."""
    shape = still.shape[:2]
    acc_f, w_f = splat(colour, forward, shape)
    acc_b, w_b = splat(colour, backward, shape)
    a = np.float32(alpha)
    acc = (1 - a) * acc_f + a * acc_b
    wsum = (1 - a) * w_f + a * w_b
    out = still.copy()
    take = moving & (wsum >= min_weight)
    out[take] = np.clip(acc[take] / wsum[take, None] + 0.5, 0, 255).astype(np.uint8)
    return out


def _stroke_mask(arrows: Sequence[Arrow], width: int, height: int, scale: float, thickness: int,
                 min_len_px: float = 12.0, frames: float = 8.0) -> np.ndarray:
    """The stroked pixels: each arrow drawn from its start along its vector (at ``scale``)."""
    mask = np.zeros((height, width), np.uint8)
    for arrow in arrows:
        if len(arrow.start) != 2 or len(arrow.vector) != 2:
            raise ValueError("an arrow needs a 2D start and a 2D vector")
        (u, v), (du, dv) = arrow.start, arrow.vector
        norm = float(np.hypot(du, dv))
        length = max(norm * frames, min_len_px)
        end = (u + du / norm * length, v + dv / norm * length) if norm > 0 else (u, v)
        p0 = (int(round(u * scale)), int(round(v * scale)))
        p1 = (int(round(end[0] * scale)), int(round(end[1] * scale)))
        cv2.line(mask, p0, p1, 1, thickness)
    return mask.astype(bool)


def segment_region(image: np.ndarray, arrows: Sequence[Arrow], frozen: np.ndarray | None = None
                   ) -> np.ndarray:
    """H x W bool: the union of the coherent regions the arrows lie in (``select_region`` of
    each arrow's stroke); frozen pixels never belong to it."""
    h, w = image.shape[:2]
    region = np.zeros((h, w), bool)
    for arrow in arrows:
        stroke = _stroke_mask([arrow], w, h, 1.0, thickness=3)
        if frozen is not None:
            stroke &= ~frozen.astype(bool)
        if stroke.any() and not region[stroke].all():
            region |= select_region(image, stroke, frozen)
    return region


def feather(region: np.ndarray, width_px: float = 8.0) -> np.ndarray:
    """H x W float32 in [0, 1]: 0 outside ``region``, rising to 1 over ``width_px`` inside."""
    if not region.any():
        return np.zeros(region.shape, np.float32)
    inside = cv2.distanceTransform(region.astype(np.uint8), cv2.DIST_L2, 5)
    ramp = np.clip((inside - 0.5) / max(width_px, 1e-6), 0.0, 1.0)
    return (ramp * ramp * (3 - 2 * ramp)).astype(np.float32)  # smoothstep: no kink


def interpolate_arrows(arrows: Sequence[Arrow], weight: np.ndarray, sigma_frac: float = 0.25
                       ) -> np.ndarray:
    """H x W x 2 field: the arrows' velocities blended by distance (normalised Gaussian
    weights, so the whole region moves), times ``weight`` (0 outside the region)."""
    h, w = weight.shape
    field = np.zeros((h, w, 2), np.float32)
    if not arrows:
        return field
    sigma = sigma_frac * min(w, h)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    logs = np.stack([-((xx - a.start[0]) ** 2 + (yy - a.start[1]) ** 2) / (2 * sigma**2)
                     for a in arrows])
    ws = np.exp(logs - logs.max(axis=0, keepdims=True))  # nearest arrow always has weight 1
    ws /= ws.sum(axis=0, keepdims=True)
    for wi, a in zip(ws, arrows, strict=True):
        field[..., 0] += wi * float(a.vector[0])
        field[..., 1] += wi * float(a.vector[1])
    return field * weight[..., None]


def guess_region(image: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sky, water) H x W bool guesses: far upper pixels connected to the top edge; blue,
    smooth lower pixels in large components."""
    h, w = depth.shape
    rows = np.arange(h)[:, None]
    sky = (depth >= 0.95 * depth.max()) & (rows < h // 2)
    count, labels = cv2.connectedComponents(sky.astype(np.uint8))
    top = np.unique(labels[0][sky[0]])
    sky = np.isin(labels, top[top > 0])
    rgb = image.astype(np.float32)
    blue = (rgb[..., 2] > rgb[..., 0] + 10) & (rgb[..., 2] > rgb[..., 1])
    gy, gx = np.gradient(cv2.GaussianBlur(rgb.mean(axis=2), (0, 0), 1.5))
    smooth = np.hypot(gx, gy) < 6
    water = blue & smooth & (rows >= h // 2) & ~sky
    water = cv2.morphologyEx(water.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8))
    water = cv2.morphologyEx(water, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8)) > 0
    count, labels, stats, _ = cv2.connectedComponentsWithStats(water.astype(np.uint8))
    big = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] >= 0.005 * h * w)
    water = np.isin(labels, big[big > 0])
    return sky, water


def motion_field(image: np.ndarray, depth: np.ndarray, arrows: Sequence[Arrow] = (),
                 frozen: np.ndarray | None = None, feather_px: float = 8.0, speed_px: float = 0.6
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(H x W x 2 field in px/frame, H x W bool moving region); see the module docstring."""
    frozen_b = None if frozen is None else frozen.astype(bool)
    if arrows:
        region = segment_region(image, arrows, frozen_b)
        return interpolate_arrows(arrows, feather(region, feather_px)), region
    sky, water = guess_region(image, depth)
    if frozen_b is not None:
        sky, water = sky & ~frozen_b, water & ~frozen_b
    field = np.zeros(depth.shape + (2,), np.float32)
    field[..., 0] = speed_px * feather(sky, feather_px)
    field[..., 1] = 0.5 * speed_px * feather(water, feather_px)
    return field, sky | water
