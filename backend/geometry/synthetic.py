"""Synthetic photos with exact depth and exact labels, for tests and benchmarks.

``make_boxes(...) -> SyntheticScene``: a level camera ``camera_height`` above a textured
ground plane under a sky; people-sized boxes (and a house-sized one) stand on the ground, and
optionally a thin coloured post. Each pixel's colour and z-depth come from intersecting its
ray with the ground plane and the boxes (slab test), so depth is exact.
``labels_from_depth(depth, K, camera_height, sky_depth)`` recovers SKY / GROUND / VERTICAL
from any exact depth of a level camera (used for the procedural valley too).

OpenCV camera at the identity pose (x right, y down, z forward); the ground is y = +height.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from backend.geometry.popup import GROUND, SKY, VERTICAL
from protocol.camera import intrinsics

POST_COLOUR = (235, 20, 200)
"""The post's colour: magenta, found nowhere else in the scene."""


@dataclass(frozen=True)
class SyntheticScene:
    image: np.ndarray
    """H x W x 3 uint8 RGB."""
    depth: np.ndarray
    """H x W float32 z-depth."""
    K: np.ndarray
    labels: np.ndarray
    """H x W uint8 SKY / GROUND / VERTICAL."""
    post: np.ndarray
    """H x W bool: the coloured post's pixels (all False without one)."""
    camera_height: float
    sky_depth: float


@dataclass(frozen=True)
class Box:
    x: float
    """Centre, world units (x right)."""
    z: float
    """Centre, world units (z forward)."""
    width: float
    depth: float
    height: float
    colour: tuple[int, int, int]


PEOPLE = (
    Box(-1.2, 4.0, 0.5, 0.3, 1.75, (200, 60, 50)),
    Box(0.9, 6.0, 0.5, 0.3, 1.7, (50, 80, 190)),
    Box(-2.6, 9.0, 0.5, 0.3, 1.8, (230, 180, 40)),
    Box(2.4, 11.0, 0.5, 0.3, 1.75, (40, 150, 140)),
    Box(-0.3, 14.0, 0.6, 0.4, 1.8, (120, 70, 150)),
)
HOUSE = Box(4.5, 22.0, 6.0, 4.0, 5.0, (170, 150, 130))


def _wave(x: np.ndarray, z: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros_like(x)
    for octave in range(4):
        fx, fz, ph = rng.uniform(0.6, 1.4, 3) * 2.0**octave
        out += np.sin(fx * x + ph) * np.cos(fz * z - ph) / 2.0**octave
    return 0.5 + 0.3 * out


def make_boxes(width: int = 384, height: int = 288, fov_x_deg: float = 60.0,
               camera_height: float = 1.6, post: tuple[float, float] | None = None,
               boxes: tuple[Box, ...] = (*PEOPLE, HOUSE), camera: tuple[float, float] = (0.0, 0.0)
               ) -> SyntheticScene:
    """Boxes standing on a ground plane (module doc); ``post=(x, z)`` adds a magenta post;
    ``camera=(x, z)`` moves the (level, forward-looking) camera over the ground (world units;
    the sky stays at ``sky_depth`` from it)."""
    ox, oz = camera
    K = intrinsics(width, height, fov_x_deg)
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    dx, dy = (u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]
    sky_depth = 200.0
    t = np.clip(v / height * 1.8, 0, 1)[..., None]
    rgb = (1 - t) * np.array([80, 130, 210]) + t * np.array([205, 220, 240])
    cloud = np.clip(_wave(dx * 6, dy * 14, 7) - 0.55, 0, 1)[..., None] * 3
    rgb = rgb * (1 - cloud) + cloud * 245
    depth = np.full((height, width), sky_depth)
    # the ground plane y = camera_height
    tg = camera_height / np.maximum(dy, 1e-4)
    gx, gz = ox + dx * tg, oz + tg
    hit = (dy > 1e-4) & (tg < depth)
    grass = (0.6 + 0.4 * _wave(gx * 3, gz * 3, 2))[..., None] * np.array([95, 150, 70])
    paving = ((np.floor(gx * 1.5) + np.floor(gz * 1.5)) % 2 == 0)[..., None] * 14.0
    ground = grass + paving
    fog = np.clip(gz / 80.0, 0, 1)[..., None]
    rgb = np.where(hit[..., None], (1 - fog) * ground + fog * np.array([190, 205, 225]), rgb)
    depth = np.where(hit, tg, depth)
    is_post = np.zeros((height, width), bool)
    items = list(boxes)
    if post is not None:
        items.append(Box(post[0], post[1], 0.15, 0.15, 2.2, POST_COLOUR))
    for i, box in enumerate(items):
        lo = np.array([box.x - box.width / 2 - ox, camera_height - box.height, box.z - box.depth / 2 - oz])
        hi = np.array([box.x + box.width / 2 - ox, camera_height, box.z + box.depth / 2 - oz])
        t_near, t_far, axis = _slab(dx, dy, lo, hi)
        hit = (t_near <= t_far) & (t_near > 0) & (t_near < depth)
        px, py = ox + dx * t_near, dy * t_near
        shade = np.where(axis == 0, 0.75, 1.0)[..., None]
        tex = (0.75 + 0.25 * _wave(px * 8 + i, py * 8, 10 + i))[..., None] * np.array(box.colour)
        if box.colour == POST_COLOUR:
            tex = np.broadcast_to(np.array(box.colour, float), tex.shape)
            is_post = np.where(hit, True, is_post & ~hit)
        else:
            is_post &= ~hit
        rgb = np.where(hit[..., None], tex * shade, rgb)
        depth = np.where(hit, t_near, depth)
    image = np.clip(rgb, 0, 255).astype(np.uint8)
    depth = depth.astype(np.float32)
    labels = labels_from_depth(depth, K, camera_height, sky_depth)
    return SyntheticScene(image, depth, K, labels, is_post, camera_height, sky_depth)


def _slab(dx: np.ndarray, dy: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """Ray (dx, dy, 1) from the origin against an axis-aligned box: (t_near, t_far, axis)."""
    near, far = np.full(dx.shape, -np.inf), np.full(dx.shape, np.inf)
    axis = np.zeros(dx.shape, np.int8)
    for k, d in enumerate((dx, dy, np.ones_like(dx))):
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.where(d != 0, lo[k] / d, np.where(lo[k] <= 0, -np.inf, np.inf))
            b = np.where(d != 0, hi[k] / d, np.where(hi[k] >= 0, np.inf, -np.inf))
        t0, t1 = np.minimum(a, b), np.maximum(a, b)
        axis = np.where(t0 > near, k, axis).astype(np.int8)
        near, far = np.maximum(near, t0), np.minimum(far, t1)
    return near, far, axis


def labels_from_depth(depth: np.ndarray, K: np.ndarray, camera_height: float, sky_depth: float,
                      tol: float = 0.02) -> np.ndarray:
    """SKY at ``sky_depth`` or beyond, GROUND where the point lies on the plane
    y = ``camera_height`` (within ``tol`` x its depth), VERTICAL elsewhere (level camera)."""
    h, w = depth.shape
    v = np.arange(h, dtype=np.float64)[:, None] + 0.5
    y = (v - K[1][2]) / K[1][1] * depth
    labels = np.full((h, w), VERTICAL, np.uint8)
    labels[np.abs(y - camera_height) <= tol * depth] = GROUND
    labels[depth >= 0.999 * sky_depth] = SKY
    return labels


def composite_water(image: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``image`` with a lake composited into its lower part: (image, H x W bool mask).

    The lake's far shore is a wavy line; its water mirrors the photo above the shore
    (flipped about the shore, blurred along the rows, displaced by ripples, darkened and
    tinted), so it holds the photo's own colours; the shore is blended over 2 pixels.
    """
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    x = np.arange(w) / w
    far = (0.55 + 0.06 * np.sin(2 * np.pi * (x * rng.uniform(0.8, 1.6) + rng.uniform()))) * h
    left, right = rng.uniform(0.0, 0.25) * w, rng.uniform(0.75, 1.0) * w
    bottom = h - rng.uniform(0.0, 0.1) * h
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    inside = np.minimum.reduce([v - far[None, :], u - left, right - u, bottom - v])
    mask = inside > 0
    # 1. the mirror image: row far - (v - far), rippled
    ripple = 2.5 * np.sin(v * 0.7 + 2.0 * np.sin(u / 23.0)) * (1 + (v - far[None, :]) / h)
    src_v = np.clip(2 * far[None, :] - v + ripple, 0, h - 1).astype(np.float32)
    src_u = (u + 1.5 * np.sin(v * 0.5)).astype(np.float32)
    mirror = cv2.remap(np.ascontiguousarray(image), src_u, src_v, cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REFLECT)
    mirror = cv2.blur(mirror, (9, 1)).astype(np.float32)
    # 2. darkened and tinted, with fine ripples of light
    glint = 10 * np.sin(v * 1.7 + 3 * np.sin(u / 41.0)) + rng.normal(0, 4, (h, w))
    water = 0.6 * mirror + np.array([10, 22, 34]) + glint[..., None]
    alpha = np.clip(inside / 2.0, 0, 1)[..., None]
    out = (alpha * np.clip(water, 0, 255) + (1 - alpha) * image).astype(np.uint8)
    return out, mask


def water_strokes(mask: np.ndarray, count: int = 3, length_px: float = 40.0
                  ) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """``count`` short horizontal strokes inside ``mask``, spread across it from left to
    right, each as (start (x, y), end (x, y)) in pixels."""
    ys, xs = np.nonzero(mask)
    out = []
    for q in np.linspace(0.25, 0.75, count) if count > 1 else (0.5,):
        cx = float(np.quantile(xs, q))
        rows = ys[np.abs(xs - cx) < 3]
        cy = float(np.median(rows)) + 0.5
        out.append(((cx - length_px / 2, cy), (cx + length_px / 2, cy)))
    return out
