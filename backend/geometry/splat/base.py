"""What every splat renderer shares: its settings, its output, the uploaded cloud, the
projection of poses, and the one signature each renderer module implements (``Render``)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from protocol import splat_filter


@dataclass
class RenderOutput:
    """Rendered views of a batch of poses (torch tensors on the renderer's device)."""

    image: torch.Tensor
    """B x H x W x 3 uint8 RGB; black where ``mask`` is False."""
    mask: torch.Tensor
    """B x H x W bool, True where a point covers the pixel."""
    depth: torch.Tensor
    """B x H x W float32 z-depth of the nearest point; 0 where ``mask`` is False."""
    index: torch.Tensor | None = None
    """B x H x W int64 index of the winning point, -1 where empty (``return_index=True``)."""

    def numpy(self) -> NumpyRenderOutput:
        """The same output as numpy arrays on the CPU."""
        idx = None if self.index is None else self.index.cpu().numpy()
        return NumpyRenderOutput(
            self.image.cpu().numpy(), self.mask.cpu().numpy(), self.depth.cpu().numpy(), idx
        )

    @classmethod
    def empty(cls, b: int, height: int, width: int, device: torch.device,
              want_index: bool) -> RenderOutput:
        """Uninitialised tensors for ``b`` views (a renderer fills every pixel)."""
        return cls(
            torch.empty((b, height, width, 3), dtype=torch.uint8, device=device),
            torch.empty((b, height, width), dtype=torch.bool, device=device),
            torch.empty((b, height, width), dtype=torch.float32, device=device),
            torch.empty((b, height, width), dtype=torch.int64, device=device) if want_index else None,
        )


@dataclass
class NumpyRenderOutput:
    """:class:`RenderOutput` as numpy arrays on the CPU (same fields, same layouts)."""

    image: np.ndarray
    mask: np.ndarray
    depth: np.ndarray
    index: np.ndarray | None = None


@dataclass(frozen=True)
class SplatConfig:
    """Settings of :class:`~backend.geometry.splat.SplatRenderer`."""

    backend: str = "native"
    """"native" (torch scatter, or numba loops on a CPU) or "pytorch3d" (needs pytorch3d)."""
    near: float = 1e-4
    """Points with z-depth at or below this (world units) are culled."""
    min_disc_px: float = 1.0
    """Points whose screen radius is below this cover only the pixel they fall in."""
    max_radius_px: float = 4.0
    """Screen radii are clamped to this many pixels."""
    batch_size: int = 1
    """Poses projected and scattered together (more helps on a GPU, not on a CPU)."""
    antialias: bool = True
    """Filtered footprints blended within ``depth_tolerance`` (``filtered``); False: the
    nearest point's colour only (``zbuffer``)."""
    tent_radius_px: float = 0.75
    """Points with a smaller screen radius are bilinear tents over 2 x 2 pixels."""
    sigma_scale: float = splat_filter.SIGMA_SCALE
    """Gaussian sigma of a larger point, in units of its screen radius."""
    min_sigma_px: float = splat_filter.MIN_SIGMA_PX
    """Smallest Gaussian sigma in pixels (the low-pass of a large point; the same as the
    viewer's, ``protocol.splat_filter``)."""
    max_reach_px: int = 4
    """Gaussian footprints reach at most this many pixels from their centre pixel."""
    depth_tolerance: float = splat_filter.DEPTH_TOLERANCE
    """Taps at most this much (relative) behind a pixel's front depth are blended."""
    cpu_loops: bool = True
    """On a CPU with numba installed, the filtered path runs as compiled loops
    (``numba_loops``: the same arithmetic, several times faster); False: torch tensors."""
    threads: int = 0
    """Threads of the compiled loops (0: torch's intra-op thread count)."""
    compile: bool = False
    """Fuse the z-buffer's per-point and per-pixel passes with ``torch.compile`` (needs a C++
    compiler on CPU or triton on CUDA; the first render then takes ~20-30 s to compile)."""


@dataclass(frozen=True)
class DeviceCloud:
    """A cloud laid out for rendering on one device."""

    xyz_t: torch.Tensor
    """3 x N float32 positions (transposed for the projection matmul)."""
    rgba: torch.Tensor
    """N + 1 int32 packed RGBA; the extra last entry is the black of empty pixels."""
    radius: torch.Tensor
    """N float32 world radii."""
    colour: torch.Tensor | None = None
    """3 x N float32 colour planes in [0, 255] (the tensor path's anti-aliased blend; None
    where the compiled CPU loops render)."""

    def __len__(self) -> int:
        return int(self.radius.shape[0])

    def rgb(self) -> torch.Tensor:
        """N x 3 uint8 colours (a view of ``rgba``)."""
        return self.rgba[:-1].view(torch.uint8).view(-1, 4)[:, :3]


class Render(Protocol):
    """The signature every renderer module's ``render`` has.

    ``poses`` is B x 4 x 4 float64 camera-to-world (OpenCV), ``K`` 3 x 3 float64 pixels;
    ``scratch`` is the calling renderer's per-thread working memory, reused between frames.
    """

    def __call__(self, cloud: DeviceCloud, poses: np.ndarray, K: np.ndarray, width: int,
                 height: int, config: SplatConfig, scratch: threading.local,
                 want_index: bool) -> RenderOutput: ...


def projection_matrices(poses: np.ndarray, K: np.ndarray) -> np.ndarray:
    """B x 3 x 4 matrices ``K [R|t]`` mapping world points to ``(u z, v z, z)``."""
    w2c = np.linalg.inv(poses)
    return np.asarray(K, dtype=np.float64) @ w2c[:, :3, :]


def centred_projections(poses: np.ndarray, K: np.ndarray) -> np.ndarray:
    """``projection_matrices`` with pixel centres at integer coordinates (the filtered paths)."""
    P = projection_matrices(poses, K)
    P[:, :2] -= 0.5 * P[:, 2:3]
    return P


def mean_focal(K: np.ndarray) -> float:
    """The focal length a point's screen radius is measured with (pixels)."""
    return float(0.5 * (K[0, 0] + K[1, 1]))
