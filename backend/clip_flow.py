"""The motion of a generated dynamics clip, as an Eulerian flow the world can keep.

A video model's dynamics clip is a picture of motion, not a motion field. To keep it in the
world (4D points, ``backend.region_motion``) it is read back as the constant-velocity field
Make-It-4D assumes (Holynski et al.): OpenCV Farneback optical flow between consecutive
frames, the per-pixel median over the pairs (robust to the odd bad pair and to flicker).
The moving region is where that median speed is at least ``min_speed_px`` per frame,
cleaned of specks, limited to the drawn arrows' region when there are arrows, and the field
is faded to zero over a band inside its edge (``animation.feather``), as the classic engine's
is, so the loop keeps its points inside.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from backend import animation


def clip_field(frames: Sequence[np.ndarray], min_speed_px: float = 0.15,
               min_area: float = 0.002) -> tuple[np.ndarray, np.ndarray]:
    """(H x W x 2 median flow in px/frame, H x W bool moving region) of ``frames`` (RGB
    uint8), not yet faded at the region's edge."""
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    h, w = grey[0].shape
    if len(grey) < 2:
        return np.zeros((h, w, 2), np.float32), np.zeros((h, w), bool)
    # OpenCV's stubs lack the documented None for the (output) flow argument
    flows = np.stack([cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)  # type: ignore[call-overload]
                      for a, b in zip(grey[:-1], grey[1:], strict=True)])
    field = np.median(flows, axis=0).astype(np.float32)
    moving = np.hypot(field[..., 0], field[..., 1]) >= min_speed_px
    moving = cv2.morphologyEx(moving.astype(np.uint8), cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(moving)
    big = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] >= min_area * h * w)
    return field, np.isin(labels, big[big > 0])


def clip_region(image: np.ndarray, frames: Sequence[np.ndarray], arrows: tuple,
                frozen: np.ndarray | None, feather_px: float = 8.0
                ) -> tuple[np.ndarray, np.ndarray]:
    """(field, region): :func:`clip_field` kept inside the region the arrows select in
    ``image`` (when there are arrows) and off the frozen pixels, faded to zero over
    ``feather_px`` inside the region's edge."""
    field, region = clip_field(frames)
    keep = np.ones(region.shape, bool)
    if arrows:
        keep = animation.segment_region(image, arrows, frozen)
    if frozen is not None:
        keep &= ~frozen.astype(bool)
    region &= keep
    return field * animation.feather(region, feather_px)[..., None], region
