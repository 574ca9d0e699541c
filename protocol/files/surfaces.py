"""Where a cloud's local surface is known: normals from the points around each point.

``surface_normals(xyz, radius) -> Surfaces``: points are binned into voxels about
``VOXEL_SPACINGS`` pixel spacings wide at their own footprint (a point of radius ``r`` was
lifted from a pixel whose spacing on the surface is ``sqrt(2) r``, so the voxel edge is the
power of two nearest to ``VOXEL_SPACINGS * sqrt(2) r``: points of one surface seen at one
distance share voxels, a closer view's finer points get finer voxels). Each voxel's points
give a covariance; where it holds at least ``min_points`` points spread over a plane (the
smallest eigenvalue at most ``flatness`` times the middle one, the middle at least
``min_spread`` times the largest: not a line), its smallest eigenvector is the normal of all
its points; a point whose voxel holds no plane tries the other grids of ``PASSES``. Where
none does (foliage, lone points, edges) the surface is unknown.

Normals face the world origin (the first view's camera), as the surface was seen from there
or near it. Pure numpy: one sort and a few weighted bincounts per call, so large clouds are
processed a chunk at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

VOXEL_SPACINGS = 4.0
_BITS = 19
_HALF = 1 << (_BITS - 1)


@dataclass(frozen=True)
class Surfaces:
    normal: np.ndarray
    """N x 3 float32 unit normals facing the world origin; zeros where unknown."""
    known: np.ndarray
    """N bool: the point's voxel held a plane."""


PASSES = ((0, 0.0), (0, 0.5), (1, 0.0), (2, 0.0))
"""(level offset, grid shift in cells) of the voxel grids tried in turn: a point whose voxel
held no plane (cut off by a cell or level boundary) tries the half-shifted grid, then voxels
twice as wide."""


def _voxel_keys(xyz: np.ndarray, radius: np.ndarray, coarser: int, shift: float) -> np.ndarray:
    """int64 key per point packing (level, cell); -1 where the cell is out of range."""
    spacing = np.sqrt(2.0) * np.maximum(radius.astype(np.float64), 1e-12)
    level = np.clip(np.round(np.log2(VOXEL_SPACINGS * spacing)) + coarser, -32, 31).astype(np.int64)
    cell = np.floor(xyz / np.exp2(level)[:, None] + shift).astype(np.int64) + _HALF
    ok = np.all((cell >= 0) & (cell < (1 << _BITS)), axis=1)
    key = ((level + 32) << (3 * _BITS)) | (cell[:, 0] << (2 * _BITS)) | (cell[:, 1] << _BITS) | cell[:, 2]
    return np.where(ok, key, -1)


def _voxel_planes(xyz: np.ndarray, keys: np.ndarray, min_points: int, flatness: float,
                  min_spread: float) -> tuple[np.ndarray, np.ndarray]:
    """Per point: its voxel's plane normal and whether the voxel holds a plane."""
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    m = len(counts)
    # each voxel's centroid and covariance (centred, so far worlds keep their precision)
    centre = np.stack([np.bincount(inverse, xyz[:, c], m) for c in range(3)], 1) / counts[:, None]
    d = xyz - centre[inverse]
    cov = np.empty((m, 3, 3))
    for i, j in ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)):
        cov[:, i, j] = cov[:, j, i] = np.bincount(inverse, d[:, i] * d[:, j], m) / counts
    # planes: enough points, one thin direction, two wide ones
    full = np.flatnonzero(counts >= min_points)
    values, vectors = np.linalg.eigh(cov[full])  # ascending eigenvalues
    plane = (values[:, 0] <= flatness * values[:, 1]) & (values[:, 1] >= min_spread * values[:, 2])
    voxel_normal = np.zeros((m, 3))
    voxel_normal[full[plane]] = vectors[plane, :, 0]
    voxel_known = np.zeros(m, bool)
    voxel_known[full[plane]] = True
    return voxel_normal[inverse], voxel_known[inverse] & (keys >= 0)


def surface_normals(xyz: np.ndarray, radius: np.ndarray, min_points: int = 6,
                    flatness: float = 0.1, min_spread: float = 0.05) -> Surfaces:
    """Normals of the points whose voxel holds a plane (see the module docstring)."""
    n = len(xyz)
    nrm = np.zeros((n, 3))
    known = np.zeros(n, bool)
    if n == 0:
        return Surfaces(nrm.astype(np.float32), known)
    xyz = np.asarray(xyz, np.float64)
    radius = np.asarray(radius)
    # 1. each grid in turn names the normals of the points still unknown; only the voxels
    #    holding such a point are fitted (with all their points, so the fit is the same)
    for coarser, shift in PASSES:
        keys = _voxel_keys(xyz, radius, coarser, shift)
        sub = np.flatnonzero(np.isin(keys, np.unique(keys[~known]))) if known.any() else np.arange(n)
        normal, plane = _voxel_planes(xyz[sub], keys[sub], min_points, flatness, min_spread)
        new = plane & ~known[sub]
        nrm[sub[new]] = normal[new]
        known[sub[new]] = True
        if known.all():
            break
    # 2. turned to face the first view's camera
    flip = np.einsum("ij,ij->i", nrm, xyz) > 0
    nrm[flip] *= -1.0
    return Surfaces(nrm.astype(np.float32), known)
