"""A procedural scene with exact z-depth, so the demo needs nothing but the install.

A valley seen from 1 unit above the ground: a textured ground plane with a river, three
standing stones (fronto-parallel slabs), a mountain ridge and a sky far behind. Each pixel's
colour and depth come from intersecting its camera ray with these surfaces analytically.
OpenCV camera at the identity pose (x right, y down, z forward); the ground is y = +1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from protocol.camera import intrinsics


@dataclass
class ProceduralScene:
    image: np.ndarray
    """H x W x 3 uint8 RGB."""
    depth: np.ndarray
    """H x W float32 z-depth."""
    K: np.ndarray


def _noise(x: np.ndarray, z: np.ndarray, seed: int = 0) -> np.ndarray:
    """Smooth value in [0, 1] from a few sines (deterministic, no RNG state)."""
    rng = np.random.default_rng(seed)
    out = np.zeros_like(x)
    for octave in range(4):
        fx, fz, ph = rng.uniform(0.5, 1.5, 3) * (2.0**octave)
        out += np.sin(fx * x + ph) * np.cos(fz * z - ph) / (2.0**octave)
    return 0.5 + 0.35 * out


def make_valley(width: int = 640, height: int = 360, fov_x_deg: float = 70.0) -> ProceduralScene:
    """Render the valley at ``width`` x ``height`` with its exact z-depth."""
    K = intrinsics(width, height, fov_x_deg)
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    dx = (u - K[0, 2]) / K[0, 0]  # ray direction with d_z = 1, so t is the z-depth
    dy = (v - K[1, 2]) / K[1, 1]
    far = 60.0
    depth = np.full((height, width), far, np.float64)
    rgb = np.zeros((height, width, 3), np.float64)

    # Sky: a gradient on a far plane.
    t = np.clip((v / height) * 1.6, 0, 1)[..., None]
    rgb[:] = (1 - t) * np.array([70, 120, 200]) + t * np.array([200, 215, 235])

    # Mountain ridge on the plane z = 30 (its height varies with x).
    zr = 30.0
    xr, yr = dx * zr, dy * zr
    ridge_top = 1.0 - (6.0 + 3.0 * np.sin(xr * 0.15) + 1.5 * np.sin(xr * 0.41 + 1.0))
    hit = (yr > ridge_top) & (zr < depth)
    shade = _noise(xr * 0.3, yr * 0.3, 1)[..., None]
    mountain = (0.6 + 0.4 * shade) * np.array([95, 105, 120])
    snow = (yr < ridge_top + 1.2)[..., None] * np.array([150, 150, 140])
    rgb = np.where(hit[..., None], np.minimum(mountain + snow, 255), rgb)
    depth = np.where(hit, zr, depth)

    # Ground plane y = 1: t = 1 / dy for rays looking down.
    tg = np.where(dy > 1e-4, 1.0 / np.maximum(dy, 1e-4), far * 10)
    gx, gz = dx * tg, tg
    hit = tg < depth
    grass = (0.55 + 0.45 * _noise(gx * 2.0, gz * 2.0, 2))[..., None] * np.array([70, 140, 55])
    checker = ((np.floor(gx) + np.floor(gz)) % 2 == 0)[..., None] * 12.0
    river = np.abs(gx - 1.2 * np.sin(gz * 0.35)) < 0.9
    water = (0.7 + 0.3 * _noise(gx * 4.0, gz * 1.0, 3))[..., None] * np.array([40, 110, 190])
    ground = np.where(river[..., None], water, grass + checker)
    fog = np.clip(gz / 40.0, 0, 1)[..., None]
    ground = (1 - fog) * ground + fog * np.array([170, 190, 210])
    rgb = np.where(hit[..., None], ground, rgb)
    depth = np.where(hit, tg, depth)

    # Standing stones: fronto-parallel slabs from the ground up.
    for cx, cz, half_w, tall, colour in (
        (-3.0, 7.0, 0.6, 2.6, (150, 120, 95)),
        (3.5, 10.0, 0.8, 3.4, (135, 110, 100)),
        (-1.0, 16.0, 1.2, 4.5, (120, 115, 110)),
    ):
        sx, sy = dx * cz, dy * cz
        hit = (np.abs(sx - cx) < half_w) & (sy < 1.0) & (sy > 1.0 - tall) & (cz < depth)
        tex = (0.7 + 0.3 * _noise(sx * 6.0, sy * 6.0, 4))[..., None] * np.array(colour)
        rgb = np.where(hit[..., None], tex, rgb)
        depth = np.where(hit, cz, depth)

    image = np.clip(rgb, 0, 255).astype(np.uint8)
    return ProceduralScene(image, depth.astype(np.float32), K)


def river_flow(z: float = 5.0, length: float = 3.0) -> tuple[tuple, tuple]:
    """World start and end of an arrow along the river, flowing towards the first view."""
    pts = [(1.2 * np.sin(zz * 0.35), 1.0, zz) for zz in (z + length, z)]
    return tuple(map(float, pts[0])), tuple(map(float, pts[1]))
