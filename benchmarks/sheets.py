"""Contact sheets for the benchmarks that write pictures (``--sheets DIR``)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image


def contact_sheet(rows: list[list[np.ndarray]], path: Path, thumb: int = 256) -> None:
    """Frames in a grid (one row per list), each resized to ``thumb`` wide."""
    tiles = [np.concatenate([cv2.resize(f, (thumb, thumb * f.shape[0] // f.shape[1]),
                                        interpolation=cv2.INTER_AREA) for f in row], 1) for row in rows]
    Image.fromarray(np.concatenate(tiles, 0)).save(path)
