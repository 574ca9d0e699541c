"""Frames and poses between the request's clip and the video model's clip (diffusion engine).

The video model generates a fixed number of frames at its own size; a request brings any
number of poses at the scene's size. These functions carry poses, frames and masks across:

- ``resample_poses(poses, n)``: ``n`` poses evenly spaced in *time* along the request's poses
  (lerp position, slerp rotation), both ends kept, so model frame j sits at request time
  ``j / (n - 1)``.
- ``time_indices(n_out, n_in)``: for each of ``n_out`` evenly spaced output times, the nearest
  of ``n_in`` evenly spaced input frames (both ends map to both ends).
- ``resize_frames`` / ``resize_masks``: images and visibility masks to another size (masks
  become area fractions in [0, 1]).
- ``Letterbox``: the scene's frames into the model's size without squashing (scaled to fit,
  the rest padded by reflection and marked unseen, so the model fills it), and back (crop).
- ``background_depth`` / ``fill_cracks``: depth and colour fills used when lifting new pixels.
- ``align_prediction``: a depth model's output aligned to the rendered depth (z-depth).
- ``inpainter_multiple``: the image sides an inpainting pipeline accepts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from backend.engines.classic import inpaint
from backend.geometry.depth import align_depth
from backend.models.depth import DepthPrediction
from protocol.camera import interpolate_pose

log = logging.getLogger(__name__)


def time_indices(n_out: int, n_in: int) -> np.ndarray:
    """Index of the nearest input frame for each output frame, both evenly spaced in time."""
    if n_out < 1 or n_in < 1:
        raise ValueError(f"frame counts must be >= 1, got {n_out} and {n_in}")
    if n_out == 1:
        return np.zeros(1, np.int64)
    t = np.arange(n_out) * (n_in - 1) / (n_out - 1)
    return np.clip(np.floor(t + 0.5), 0, n_in - 1).astype(np.int64)


def resample_poses(poses: np.ndarray, n: int) -> np.ndarray:
    """``n`` camera-to-world poses evenly spaced in time along ``poses`` (N x 4 x 4, N >= 1)."""
    poses = np.asarray(poses, dtype=np.float64)
    if poses.ndim != 3 or poses.shape[1:] != (4, 4) or len(poses) < 1:
        raise ValueError(f"poses must be N x 4 x 4 with N >= 1, got {poses.shape}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if len(poses) == 1 or n == 1:
        return np.repeat(poses[:1], n, axis=0)
    out = np.empty((n, 4, 4))
    for j, s in enumerate(np.linspace(0.0, len(poses) - 1, n)):
        i = min(int(s), len(poses) - 2)
        out[j] = interpolate_pose(poses[i], poses[i + 1], s - i)
    out[0], out[-1] = poses[0], poses[-1]
    return out


def resize_frames(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """T x H x W x 3 uint8 -> T x height x width x 3 (area when shrinking, cubic when growing)."""
    frames = np.asarray(frames)
    if frames.shape[1:3] == (height, width):
        return frames
    shrink = width * height < frames.shape[1] * frames.shape[2]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    return np.stack([cv2.resize(f, (width, height), interpolation=interp) for f in frames])


def resize_masks(masks: np.ndarray, width: int, height: int) -> np.ndarray:
    """T x H x W visibility -> T x height x width float32 fractions of visible area."""
    m = np.asarray(masks, dtype=np.float32)
    if m.shape[1:3] == (height, width):
        return m
    return np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in m])


@dataclass(frozen=True)
class Letterbox:
    """Where a scene-sized frame sits inside the model's frame: scaled to fit, centred."""

    src: tuple[int, int]
    """(width, height) of the scene's frames."""
    dst: tuple[int, int]
    """(width, height) of the model's frames."""
    box: tuple[int, int, int, int]
    """(x, y, width, height) of the content inside the model's frame."""

    @classmethod
    def fit(cls, width: int, height: int, dst_width: int, dst_height: int) -> Letterbox:
        scale = min(dst_width / width, dst_height / height)
        w = min(dst_width, max(1, round(width * scale)))
        h = min(dst_height, max(1, round(height * scale)))
        return cls((width, height), (dst_width, dst_height),
                   ((dst_width - w) // 2, (dst_height - h) // 2, w, h))

    def _pads(self) -> tuple[int, int, int, int]:
        x, y, w, h = self.box
        return y, self.dst[1] - y - h, x, self.dst[0] - x - w

    def frames_in(self, frames: np.ndarray) -> np.ndarray:
        """T x H x W x 3 scene frames -> model frames (padding reflects the content)."""
        _, _, w, h = self.box
        top, bottom, left, right = self._pads()
        small = resize_frames(frames, w, h)
        return np.stack([cv2.copyMakeBorder(f, top, bottom, left, right, cv2.BORDER_REFLECT_101)
                         for f in small])

    def masks_in(self, masks: np.ndarray) -> np.ndarray:
        """T x H x W visibility -> model size; the padding is unseen (0)."""
        _, _, w, h = self.box
        top, bottom, left, right = self._pads()
        small = resize_masks(masks, w, h)
        return np.pad(small, ((0, 0), (top, bottom), (left, right)))

    def frames_out(self, frames: np.ndarray) -> np.ndarray:
        """Model frames -> scene-sized frames (the padding cropped off)."""
        x, y, w, h = self.box
        return resize_frames(np.asarray(frames)[:, y:y + h, x:x + w], *self.src)


def background_depth(depth: np.ndarray, hole: np.ndarray, radius: int) -> np.ndarray:
    """Depth with ``hole`` filled from its surroundings, leaning to the farther side."""
    known = ~hole & (depth > 0)
    if not known.any():
        raise ValueError("no known depth to fill from")
    seed = np.where(known, depth, 0).astype(np.float32)
    farthest = cv2.dilate(seed, np.ones((9, 9), np.uint8))
    smooth = inpaint(seed, ~known, radius)
    out = np.where(known, depth, np.maximum(smooth, farthest)).astype(np.float32)
    out[~known & (out <= 0)] = float(np.median(depth[known]))
    return out


def fill_cracks(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Cover the odd pixel no splat reached (``mask`` False) from its neighbours."""
    return image if mask.all() else inpaint(image, ~mask, 3)


def align_prediction(pred: DepthPrediction, reference: np.ndarray, known: np.ndarray,
                     far_ratio: float = 50.0) -> np.ndarray:
    """Z-depth from a depth model's output, aligned to ``reference`` over ``known``.

    Disparity (affine-invariant inverse depth) is fitted to ``1 / reference``, depth to
    ``reference`` (robust scale and shift, ``align_depth``). Pixels whose aligned disparity is
    not positive come back NaN; depth is capped at ``far_ratio`` x the known median. Raises
    ValueError when the fit fails or the scale is not positive (the model disagrees with the
    scene).
    """
    ref = np.asarray(reference, np.float64)
    values = np.asarray(pred.values, np.float64)
    if pred.kind == "disparity":
        target = np.where(known, 1.0 / np.maximum(ref, 1e-12), 0.0)
        fit = align_depth(values, target, known)
        if fit.scale <= 0:
            raise ValueError(f"disparity aligns with a non-positive scale {fit.scale:.3g}")
        disparity = fit.apply(values).astype(np.float64)
        with np.errstate(divide="ignore"):
            depth = np.where(disparity > 0, 1.0 / disparity, np.nan)
    else:
        fit = align_depth(values, ref, known)
        if fit.scale <= 0:
            raise ValueError(f"depth aligns with a non-positive scale {fit.scale:.3g}")
        depth = fit.apply(values).astype(np.float64)
        depth[depth <= 0] = np.nan
    log.debug("depth aligned: scale %.4g shift %.4g residual %.4g", fit.scale, fit.shift,
              fit.residual)
    cap = far_ratio * float(np.median(ref[known]))
    return np.minimum(depth, cap).astype(np.float32)


def inpainter_multiple(pipe) -> int:
    """Image sides the inpainting pipeline accepts are multiples of this (VAE x UNet levels)."""
    vae = int(getattr(pipe, "vae_scale_factor", 8))
    unet = getattr(pipe, "unet", None)
    levels = len(unet.config.block_out_channels) - 1 if unet is not None else 0
    return vae * 2**levels
