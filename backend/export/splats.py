"""3D Gaussian splats in the reference 3DGS PLY layout, from points with colours and radii.

The layout is what the reference code (graphdeco-inria ``GaussianModel.save_ply`` /
``load_ply``) writes and reads, one float32 property each, in this order:

- ``x y z``: the Gaussian's centre (the point);
- ``nx ny nz``: the surface normal where known (``surfaces``), else zeros (the reference
  code writes zeros and never reads them);
- ``f_dc_0..2``: the degree-0 spherical-harmonic coefficient per channel, ``(c - 0.5) /
  SH_C0`` for a colour ``c`` in [0, 1] (renderers show ``SH_C0 * f_dc + 0.5``);
- ``f_rest_0..(3 (d + 1)^2 - 4)``: the higher bands, zeros (a view-independent colour):
  none at degree 0 (the default: what a degree-0 model of the reference code writes, and what
  splat viewers read; a file 3.6 times smaller), 45 at degree 3 (what the reference loader
  asserts at its default ``--sh_degree 3``, and SIBR's viewer expects);
- ``opacity``: a logit (renderers apply the sigmoid);
- ``scale_0..2``: natural logs of the standard deviations along the Gaussian's axes (renderers
  apply exp);
- ``rot_0..3``: a unit quaternion (w, x, y, z) rotating the Gaussian's axes into the world.

Sizes: a point of world radius ``r`` (its pixel's footprint at the view that made it) is a
Gaussian of sigma ``sigma_scale * r`` (0.35 r, a quarter of the pixel spacing ``sqrt(2) r``).
Splat renderers widen every Gaussian by a 0.3 px^2 low-pass and blend front to back without
normalising, so at the view that made a point its Gaussian is already about half a pixel
wide whatever its own size: larger Gaussians blur the photo there (0.55 r, our viewer's
footprint, renders the shared scenes at 28-30 dB against our own render), smaller ones
leave seams when seen from closer. 0.35 r is the largest that keeps every shared scene at
30 dB or more (``tests/test_export_render.py``).

Where the surface is known, the Gaussian is a disc on it: the quaternion turns its third
axis onto the normal and that axis is ``thin`` times narrower; elsewhere it is round (three
equal scales, the identity quaternion).

Frame: the scene's world is the first view's camera frame with OpenCV axes (x right, y
down, z forward), which is the frame 3DGS scenes trained on COLMAP data use (their cameras
are OpenCV too), so splat viewers open the file upright without a transform: the transform
from our world to the file's is the identity. Units are the scene's depth units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backend.export.surfaces import surface_normals

SH_C0 = 0.28209479177387814
"""The degree-0 real spherical harmonic, 1 / (2 sqrt(pi))."""

FRAME_COMMENTS = [
    "dreamjourney 3D Gaussian splats (reference 3DGS layout)",
    "world = the scene's first view's camera frame, OpenCV axes (x right, y down, z forward)",
    "transform to the file's frame = identity; units = the scene's depth units",
]


@dataclass(frozen=True)
class SplatSettings:
    """How points become Gaussians."""

    sigma_scale: float = 0.35
    """Gaussian sigma in units of the point's world radius (see the module docstring)."""
    opacity: float = 0.99
    """Opacity of every Gaussian (stored as its logit)."""
    thin: float = 0.1
    """Sigma across a known surface over sigma along it."""
    sh_degree: int = 0
    """Degree of the spherical harmonics written (0: no f_rest; 3: 45 zero f_rest, what the
    reference loader expects at its default ``--sh_degree``)."""

    def __post_init__(self) -> None:
        if self.sh_degree not in (0, 1, 2, 3):
            raise ValueError(f"sh_degree must be 0-3, got {self.sh_degree}")
        if not 0.0 < self.opacity < 1.0:
            raise ValueError(f"opacity must be in (0, 1), got {self.opacity}")
        if not (self.sigma_scale > 0 and 0 < self.thin <= 1):
            raise ValueError("sigma_scale must be positive and thin in (0, 1]")


def splat_properties(sh_degree: int = 0) -> list[str]:
    """The vertex properties in file order."""
    rest = 3 * (sh_degree + 1) ** 2 - 3
    return ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2",
            *(f"f_rest_{i}" for i in range(rest)), "opacity",
            "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]


def splat_dtype(sh_degree: int = 0) -> np.dtype:
    return np.dtype([(name, "<f4") for name in splat_properties(sh_degree)])


def quaternions_onto(normal: np.ndarray) -> np.ndarray:
    """N x 4 unit quaternions (w, x, y, z) of the shortest rotations taking +z onto each of
    ``normal`` or its opposite (a Gaussian is symmetric, so the sign is free: the one with a
    non-negative z avoids the half-turn's ambiguity)."""
    n = np.where((normal[:, 2] < 0)[:, None], -normal, normal).astype(np.float64)
    q = np.stack([1.0 + n[:, 2], -n[:, 1], n[:, 0], np.zeros(len(n))], 1)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def splat_rows(xyz: np.ndarray, rgb: np.ndarray, radius: np.ndarray,
               settings: SplatSettings | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """One row of :func:`splat_dtype` per point (xyz N x 3, rgb N x 3 uint8, radius N).

    ``out``: a zeroed buffer of at least N rows to fill (its first N rows are returned);
    reusing one across chunks spares the allocation. Only ``f_rest`` is never written, so it
    must stay zero."""
    n = len(xyz)
    settings = settings or SplatSettings()
    dtype = splat_dtype(settings.sh_degree)
    if out is None:
        out = np.zeros(n, dtype)
    elif out.dtype != dtype or len(out) < n:
        raise ValueError(f"out must hold {n} rows of {dtype}")
    rows = out[:n]
    rows["x"], rows["y"], rows["z"] = np.asarray(xyz, np.float32).T
    surf = surface_normals(xyz, radius)
    rows["nx"], rows["ny"], rows["nz"] = surf.normal.T
    dc = (np.asarray(rgb, np.float32) / 255.0 - 0.5) / SH_C0
    rows["f_dc_0"], rows["f_dc_1"], rows["f_dc_2"] = dc.T
    rows["opacity"] = np.log(settings.opacity / (1.0 - settings.opacity))
    log_sigma = np.log(np.maximum(settings.sigma_scale * np.asarray(radius, np.float64), 1e-30))
    rows["scale_0"] = rows["scale_1"] = log_sigma
    rows["scale_2"] = log_sigma + np.where(surf.known, np.log(settings.thin), 0.0)
    quat = np.tile([1.0, 0.0, 0.0, 0.0], (n, 1))
    quat[surf.known] = quaternions_onto(surf.normal[surf.known])
    rows["rot_0"], rows["rot_1"], rows["rot_2"], rows["rot_3"] = quat.T
    return rows
