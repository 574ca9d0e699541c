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

Only the moving pixels are animated: :func:`loop_frame` reads each one's colour from where the
field carried it from (and will carry it from), the still view everywhere else, so a frame
costs the region's size, not the view's.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import cv2
import numpy as np

from backend.geometry.regions import select_region
from protocol.messages import Arrow


def _sample(field: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Bilinear sample of an H x W x C array at N x 2 pixel positions (x, y; pixel centres at
    .5), edge-clamped (OpenCV's remap: positions resolved to 1/32 pixel)."""
    c = 1 if field.ndim == 2 else field.shape[2]
    n = len(pos)
    cols = 1024  # remap's maps are images: N positions as rows of 1024 (fewer than 32767 each way)
    rows = max(1, -(-n // cols))
    flat = np.zeros((rows * cols, 2), np.float32)
    flat[:n] = pos - 0.5
    maps = flat.reshape(rows, cols, 2)
    # map2 None (maps hold x and y together) is valid OpenCV; its stub requires an array
    out = cv2.remap(np.ascontiguousarray(field, dtype=np.float32), maps, None,  # type: ignore[call-overload]
                    cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(-1, c)[:n]


def integrate(field: np.ndarray, start: np.ndarray, steps: int) -> list[np.ndarray]:
    """Positions after 0..steps Euler steps through ``field`` from N x 2 ``start`` (x, y)."""
    out = [start.astype(np.float32)]
    pos = out[0]
    for _ in range(steps):
        pos = pos + _sample(field, pos)
        out.append(pos)
    return out


def advect(field: np.ndarray, ahead: np.ndarray, behind: np.ndarray, steps: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """N x 2 positions (x, y) ``ahead`` carried ``steps`` Euler steps along ``field`` and
    ``behind`` as many against it, without keeping the steps between: from one start, the
    ends of ``integrate(field, ...)`` and ``integrate(-field, ...)``, bitwise (bilinear
    sampling of ``-field`` is the negated sample of ``field``), and the same in stretches."""
    n = len(ahead)
    ahead, behind = ahead.astype(np.float32), behind.astype(np.float32)
    for _ in range(steps):
        moved = _sample(field, np.concatenate([ahead, behind]))
        ahead, behind = ahead + moved[:n], behind - moved[n:]
    return ahead, behind


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


def loop_frame(still: np.ndarray, ys: np.ndarray, xs: np.ndarray, from_back: np.ndarray,
               from_ahead: np.ndarray, alpha: float) -> np.ndarray:
    """One frame of the loop, by warping: the moving pixels (``ys``, ``xs``) of ``still``
    show ``1 - alpha`` of the still view where their content came from (``from_back``: traced
    t steps against the field) and ``alpha`` of where it will come from (``from_ahead``:
    traced N - t steps along it); the rest of the view is ``still``. This is symmetric
    splatting (the module doc) read backwards: no holes, and a frame costs the region's size."""
    a = np.float32(alpha)
    colour = (1 - a) * _sample(still, from_back) + a * _sample(still, from_ahead)
    out = still.copy()
    out[ys, xs] = np.clip(colour + 0.5, 0, 255).astype(np.uint8)
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
