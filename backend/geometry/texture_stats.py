"""Texture statistics of a filled region, for tests and benchmarks of the fills.

- ``high_frequency_energy(image, mask)``: mean squared detail (the image minus its Gaussian
  blur, sigma 1.5 px) over ``mask``: a smooth fill (Telea, pull-push) has little of it;
- ``coherence(image, mask)``: mean structure-tensor coherence ``((l1 - l2) / (l1 + l2))^2``
  (0 = no dominant direction, 1 = parallel lines) of the gradients (tensor smoothed with
  sigma 4 px) over ``mask``: streaks raise it;
- ``mirror_correlation(image, edge_x, width, rows)``: normalised correlation of the detail
  (as above) of the ``width`` columns right of a vertical hole edge at ``edge_x`` with the
  columns left of it read backwards: a mirror fill scores near 1, a copied texture or a
  smooth fill near 0.

- ``block_seam_ratio(image, mask, block)``: mean absolute step between neighbouring pixels
  across the borders of a ``block`` px grid over the mean step elsewhere: 1 for a photo, above
  1 for a mosaic of blocks copied from different places.

``mask`` is eroded by 3 px first, so the seam at the hole's border is not counted.
"""

from __future__ import annotations

import cv2
import numpy as np


def _gray(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image, np.float32)
    return img.mean(axis=2) if img.ndim == 3 else img


def _inner(mask: np.ndarray) -> np.ndarray:
    inner = cv2.erode(mask.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    if not inner.any():
        raise ValueError("the mask has no pixel 3 px away from its border")
    return inner


def high_frequency_energy(image: np.ndarray, mask: np.ndarray) -> float:
    g = _gray(image)
    detail = g - cv2.GaussianBlur(g, (0, 0), 1.5)
    return float(np.mean(detail[_inner(mask)] ** 2))


def coherence(image: np.ndarray, mask: np.ndarray, sigma: float = 4.0) -> float:
    g = _gray(image)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    jxx = cv2.GaussianBlur(gx * gx, (0, 0), sigma)
    jyy = cv2.GaussianBlur(gy * gy, (0, 0), sigma)
    jxy = cv2.GaussianBlur(gx * gy, (0, 0), sigma)
    root = np.sqrt((jxx - jyy) ** 2 + 4 * jxy**2)
    coh = (root / np.maximum(jxx + jyy, 1e-6)) ** 2
    return float(np.mean(coh[_inner(mask)]))


def mirror_correlation(image: np.ndarray, edge_x: int, width: int, rows: slice = slice(None)) -> float:
    g = _gray(image)
    g = (g - cv2.GaussianBlur(g, (0, 0), 1.5))[rows]
    right = g[:, edge_x : edge_x + width]
    left = g[:, edge_x - width : edge_x][:, ::-1]
    a, b = right - right.mean(), left - left.mean()
    return float((a * b).sum() / max(np.sqrt((a * a).sum() * (b * b).sum()), 1e-6))


def block_seam_ratio(image: np.ndarray, mask: np.ndarray, block: int) -> float:
    g = _gray(image)
    inner = _inner(mask)
    ratios = []
    for axis in (0, 1):
        step = np.abs(np.diff(g, axis=axis))
        both = (inner[1:] & inner[:-1]) if axis == 0 else (inner[:, 1:] & inner[:, :-1])
        at = (np.arange(step.shape[axis]) + 1) % block == 0
        at = at[:, None] if axis == 0 else at[None, :]
        ratios.append((step[both & at].mean(), step[both & ~at].mean()))
    return float(sum(r[0] for r in ratios) / max(sum(r[1] for r in ratios), 1e-6))
