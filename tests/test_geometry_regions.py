"""An arrow selects the whole coherent region it lies in, bounded by the freeze brush."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from backend import animation
from backend.geometry.regions import fill_outline, outline
from backend.geometry.synthetic import composite_water, water_strokes
from protocol.messages import Arrow


def _lake(scenes_dir, name: str, seed: int, size: int = 256):
    with Image.open(scenes_dir / f"{name}.jpg") as im:
        photo = np.asarray(im.convert("RGB").resize((size, size)))
    return composite_water(photo, seed)


def _arrows(lake: np.ndarray, count: int) -> list[Arrow]:
    return [Arrow(start=a, vector=((b[0] - a[0]) / 24, (b[1] - a[1]) / 24))
            for a, b in water_strokes(lake, count, length_px=20)]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.mark.parametrize("name,seed", [("03_ancient", 3), ("12_desert", 4)])
def test_three_strokes_select_a_composited_lake(scenes_dir, name, seed):
    image, lake = _lake(scenes_dir, name, seed)
    region = animation.segment_region(image, _arrows(lake, 3))
    assert _iou(region, lake) >= 0.7


def test_the_freeze_brush_bounds_the_region(scenes_dir):
    image, lake = _lake(scenes_dir, "03_ancient", 3)
    frozen = np.zeros(lake.shape, bool)
    frozen[:, 150:] = True
    arrows = [a for a in _arrows(lake, 3) if a.start[0] < 130]
    region = animation.segment_region(image, arrows, frozen)
    assert not (region & frozen).any()
    assert _iou(region, lake & ~frozen) >= 0.6


def test_the_whole_region_moves(scenes_dir):
    image, lake = _lake(scenes_dir, "12_desert", 4)
    field, region = animation.motion_field(image, np.full(lake.shape, 5.0, np.float32), _arrows(lake, 1))
    moving = np.abs(field).max(axis=2) > 0
    assert moving[lake].mean() > 0.7 and not moving[~region].any()


def test_outline_round_trips_with_its_hole():
    mask = np.zeros((80, 100), bool)
    mask[10:70, 10:90] = True
    mask[30:50, 40:60] = False  # a hole (an island)
    back = fill_outline(outline(mask), mask.shape)
    assert _iou(back, mask) > 0.95 and not back[35:45, 45:55].any()
