"""The pop-up prior: standing things stand, and the first view is the photo, seam-free."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from backend.engines.base import OpenRequest
from backend.engines.classic import ClassicEngine
from backend.geometry.depth import horizon_depth
from backend.geometry.depth_metrics import abs_rel, upright_fraction
from backend.geometry.popup import GROUND, SKY, VERTICAL, popup_depth
from backend.geometry.synthetic import labels_from_depth, make_boxes
from explorer.procedural_scene import make_valley


@pytest.fixture(scope="module")
def boxes():
    scene = make_boxes(320, 240)
    return scene, popup_depth(scene.image, scene.K)


def test_people_sized_boxes_stand_upright_where_the_horizon_prior_lays_them_down(boxes):
    scene, prior = boxes
    standing = scene.labels == VERTICAL
    upright = upright_fraction(prior.depth, scene.K, standing)
    flat = upright_fraction(horizon_depth(scene.image, scene.K), scene.K, standing)
    assert upright >= 0.8 and flat < 0.5, (upright, flat)


def test_prior_depth_is_far_closer_to_the_truth_than_the_horizon_prior(boxes):
    scene, prior = boxes
    solid = scene.labels != SKY
    ours = abs_rel(prior.depth, scene.depth, solid)
    theirs = abs_rel(horizon_depth(scene.image, scene.K), scene.depth, solid)
    assert ours <= 0.5 * theirs and ours < 0.15, (ours, theirs)


def test_the_valley_stones_stand_up():
    valley = make_valley(384, 216)
    labels = labels_from_depth(valley.depth, valley.K, 1.0, float(valley.depth.max()))
    stones = (labels == VERTICAL) & (valley.depth < 20)  # the ridge stands at 30
    prior = popup_depth(valley.image, valley.K)
    assert upright_fraction(prior.depth, valley.K, stones) >= 0.8


def test_sky_above_ground_below_and_sky_farthest(boxes):
    scene, prior = boxes
    h = scene.image.shape[0]
    assert (prior.labels[: h // 10] == SKY).mean() > 0.9
    assert (prior.labels[-h // 10 :] == GROUND).mean() > 0.85
    assert prior.depth[prior.labels == SKY].min() >= prior.depth[prior.labels != SKY].max()


def test_the_first_view_is_the_photo_without_a_seam(scenes_dir):
    """Layer boundaries once left a dashed line across water and walls (issue 21)."""
    bgr = cv2.resize(cv2.imread(str(scenes_dir / "05_city_2.jpg")), (320, 320), interpolation=cv2.INTER_AREA)
    photo = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    engine = ClassicEngine(depth_model="none")
    scene, _ = engine.open_scene(OpenRequest("seam", photo))
    out = engine.renderer.render(scene.cloud, np.eye(4)[None], scene.K, 320, 320).numpy()
    frame = engine._fill_gaps(out.image[0], out.mask[0])
    rows = np.abs(frame.astype(int) - photo.astype(int)).sum(2).mean(1)
    assert rows.max() < 2.0, (int(rows.argmax()), float(rows.max()))
