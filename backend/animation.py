"""Eulerian flow animation of a still view (Holynski et al., as used by Make-It-4D).

A constant-velocity 2D motion field ``M`` (pixels per frame) describes how each place in the
view moves. Each pixel's path is found by integrating ``M`` (Euler steps); a looping clip of
``N`` frames blends the pixels pushed forward ``t`` steps with the pixels pushed backward
``N - t`` steps (symmetric splatting), with weights ``1 - t/N`` and ``t/N``. Frame 0 and the
frame after the last are both the still view, so the clip loops without a seam. The paths
are lifted to 3D by keeping each pixel's depth, so the clip renders from any nearby pose.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

from protocol.messages import Arrow


def field_from_arrows(
    arrows: Sequence[Arrow], width: int, height: int, sigma_frac: float = 0.12,
    frozen: np.ndarray | None = None,
) -> np.ndarray:
    """H x W x 2 motion field (du, dv px/frame) spread from sparse arrows.

    Each arrow sets the velocity near its start with a Gaussian falloff of ``sigma_frac`` of
    the image's smaller side; where arrows overlap their velocities are averaged. Pixels in
    ``frozen`` (H x W bool) do not move.
    """
    field = np.zeros((height, width, 2), np.float32)
    if not arrows:
        return field
    sigma = sigma_frac * min(width, height)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    weight_sum = np.zeros((height, width), np.float32)
    for arrow in arrows:
        if len(arrow.start) != 2 or len(arrow.vector) != 2:
            raise ValueError("an arrow needs a 2D start and a 2D vector")
        (u, v), (du, dv) = arrow.start, arrow.vector
        w = np.exp(-((xx - u) ** 2 + (yy - v) ** 2) / (2 * sigma**2))
        field[..., 0] += w * du
        field[..., 1] += w * dv
        weight_sum += w
    field /= np.maximum(weight_sum, 1e-6)[..., None]
    field *= np.clip(weight_sum / 0.5, 0, 1)[..., None]  # fade out far from every arrow
    if frozen is not None:
        field[frozen.astype(bool)] = 0
    return field


def guess_field(image: np.ndarray, depth: np.ndarray, speed_px: float = 0.6) -> np.ndarray:
    """An automatic motion field: the sky drifts sideways, water flows towards the viewer.

    Sky = the farthest pixels (depth within 5% of the maximum) in the upper half; water =
    blue-dominant, smooth pixels in the lower half. Everything else stays still.
    """
    h, w = depth.shape
    field = np.zeros((h, w, 2), np.float32)
    rows = np.arange(h)[:, None]
    sky = (depth >= 0.95 * depth.max()) & (rows < h // 2)
    field[sky, 0] = speed_px
    rgb = image.astype(np.float32)
    blue = (rgb[..., 2] > rgb[..., 0] + 10) & (rgb[..., 2] > rgb[..., 1])
    gy, gx = np.gradient(rgb.mean(axis=2))
    smooth = np.hypot(gx, gy) < 8
    water = blue & smooth & (rows >= h // 2) & ~sky
    field[water, 1] = 0.5 * speed_px
    return field


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


def blend(img_f: np.ndarray, mask_f: np.ndarray, img_b: np.ndarray, mask_b: np.ndarray,
          alpha: float, still: np.ndarray) -> np.ndarray:
    """Symmetric-splatting blend of the forward and backward renders; ``still`` fills gaps."""
    wf = (1 - alpha) * mask_f.astype(np.float32)
    wb = alpha * mask_b.astype(np.float32)
    total = wf + wb
    out = (img_f.astype(np.float32) * wf[..., None] + img_b.astype(np.float32) * wb[..., None])
    out = np.where(total[..., None] > 1e-6, out / np.maximum(total, 1e-6)[..., None], still)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
