"""How well a depth prior matches exact depth: AbsRel and how upright standing things are.

- ``abs_rel(depth, truth, where)``: mean ``|d - t| / t`` over ``where`` after scaling ``depth``
  by the median ratio ``t / d`` there (a monocular prior's scale is a guess: the usual
  median scaling of monocular depth evaluation).
- ``upright_fraction(depth, K, where)``: the share of ``where`` pixels (standing objects)
  whose lifted points form a near-vertical surface, over the pixels whose neighbours ``stride``
  pixels away are all inside ``where``: the normal of the surface through them is within
  ``max_tilt_deg`` of horizontal. A prior that lays people flat on the ground scores near 0.
"""

from __future__ import annotations

import numpy as np


def abs_rel(depth: np.ndarray, truth: np.ndarray, where: np.ndarray) -> float:
    """Median-scaled absolute relative error over ``where`` (module doc)."""
    d = np.asarray(depth, np.float64)[where]
    t = np.asarray(truth, np.float64)[where]
    if d.size == 0:
        raise ValueError("no pixels to compare")
    scale = float(np.median(t / np.maximum(d, 1e-9)))
    return float(np.mean(np.abs(scale * d - t) / t))


def upright_fraction(depth: np.ndarray, K: np.ndarray, where: np.ndarray, stride: int = 3,
                     max_tilt_deg: float = 25.0) -> float:
    """Share of ``where`` pixels on a near-vertical surface of the lifted depth (module doc)."""
    z = np.asarray(depth, np.float64)
    h, w = z.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    pts = np.stack([(u - K[0][2]) / K[0][0] * z, (v - K[1][2]) / K[1][1] * z, z], -1)
    s = stride
    inside = where[s:-s, s:-s] & where[2 * s:, s:-s] & where[:-2 * s, s:-s] \
        & where[s:-s, 2 * s:] & where[s:-s, :-2 * s]
    du = pts[s:-s, 2 * s:] - pts[s:-s, :-2 * s]
    dv = pts[2 * s:, s:-s] - pts[:-2 * s, s:-s]
    n = np.cross(du, dv)
    norm = np.linalg.norm(n, axis=-1)
    ok = inside & (norm > 0)
    if not ok.any():
        raise ValueError("no standing pixels to measure")
    upright = np.abs(n[..., 1]) < np.sin(np.radians(max_tilt_deg)) * norm
    return float((ok & upright).sum() / ok.sum())
