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
Gaussian of sigma ``sigma_scale * r`` (0.3 r, about a fifth of the pixel spacing
``sqrt(2) r``). Splat renderers widen every Gaussian by a 0.3 px^2 low-pass and blend front to
back without normalising, so at the view that made a point its Gaussian is already about half
a pixel wide whatever its own size: larger Gaussians blur the photo there (0.55 r, our
viewer's footprint, renders 03_ancient at 30.0 dB against our own render, 0.41 r 58_woodland
at 29.6 dB), smaller ones leave more seams when seen from closer. 0.3 r keeps every shared
scene above 30 dB with some margin (``tests/test_export_render.py``: 30.7 dB at the least).

Where the surface is known, the Gaussian is a disc on it, shaped like its pixel's footprint
on the surface: the quaternion turns its third axis onto the normal (that axis ``thin`` times
narrower) and its first axis along the slope, where the footprint is ``1 / cos`` longer
(``cos`` between the normal and the ray; at most ``1 / min_cos``). The rays are the first
view's (from the world origin): the points do not record which view made them, and most were
made from it or near it. Elsewhere a Gaussian is round (three equal scales, the identity
quaternion).

Frame: the scene's world is the first view's camera frame with OpenCV axes (x right, y
down, z forward), which is the frame 3DGS scenes trained on COLMAP data use (their cameras
are OpenCV too), so splat viewers open the file upright without a transform: the transform
from our world to the file's is the identity. Units are the scene's depth units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from protocol.files.surfaces import surface_normals

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

    sigma_scale: float = 0.3
    """Gaussian sigma in units of the point's world radius (see the module docstring)."""
    opacity: float = 0.99
    """Opacity of every Gaussian (stored as its logit)."""
    thin: float = 0.1
    """Sigma across a known surface over sigma along it."""
    min_cos: float = 0.2
    """Least cosine between a surface and the ray it was seen along: a disc is stretched along
    the slope by 1 / cos, at most 1 / min_cos."""
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


def surface_frames(normal: np.ndarray, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """N x 3 x 3 rotations whose columns are (t1, t2, n) for unit normals ``normal`` at
    ``xyz``, with t1 along the surface in the direction the first view's ray leans (the world
    origin's ray, projected onto the plane), and that ray's |cos| to the normal."""
    n = np.asarray(normal, np.float64)
    ray = np.asarray(xyz, np.float64)
    ray = ray / np.maximum(np.linalg.norm(ray, axis=1, keepdims=True), 1e-30)
    along = np.einsum("ij,ij->i", ray, n)
    t1 = ray - along[:, None] * n
    length = np.linalg.norm(t1, axis=1)
    head_on = length < 1e-6  # the ray meets the plane square on: any direction in it will do
    other = np.where((np.abs(n[:, 0]) < 0.9)[:, None], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0])
    t1[head_on] = np.cross(n[head_on], other[head_on])
    t1 /= np.linalg.norm(t1, axis=1, keepdims=True)
    t2 = np.cross(n, t1)
    return np.stack([t1, t2, n], axis=2), np.abs(along)


def quaternions_from_rotations(R: np.ndarray) -> np.ndarray:
    """N x 4 unit quaternions (w, x, y, z) of N x 3 x 3 rotation matrices."""
    m = np.asarray(R, np.float64)
    d0, d1, d2 = m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]
    q = 0.5 * np.sqrt(np.maximum(0.0, np.stack([1 + d0 + d1 + d2, 1 + d0 - d1 - d2,
                                                 1 - d0 + d1 - d2, 1 - d0 - d1 + d2], 1)))
    q[:, 1] = np.copysign(q[:, 1], m[:, 2, 1] - m[:, 1, 2])
    q[:, 2] = np.copysign(q[:, 2], m[:, 0, 2] - m[:, 2, 0])
    q[:, 3] = np.copysign(q[:, 3], m[:, 1, 0] - m[:, 0, 1])
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
    rows["scale_0"] = rows["scale_1"] = rows["scale_2"] = log_sigma
    quat = np.tile([1.0, 0.0, 0.0, 0.0], (n, 1))
    known = np.flatnonzero(surf.known)
    frames, cos = surface_frames(surf.normal[known], xyz[known])
    rows["scale_0"][known] -= np.log(np.maximum(cos, settings.min_cos))  # the pixel's footprint on the slope
    rows["scale_2"][known] += np.log(settings.thin)
    quat[known] = quaternions_from_rotations(frames)
    rows["rot_0"], rows["rot_1"], rows["rot_2"], rows["rot_3"] = quat.T
    return rows
