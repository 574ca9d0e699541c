"""Reveals respect what they fill: sky from sky, ground from ground, no copied post."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from backend.engines.base import OpenRequest
from backend.engines.classic import ClassicEngine
from backend.geometry.layout import view_layout
from backend.geometry.popup import GROUND, SKY
from backend.geometry.synthetic import POST_COLOUR, make_boxes

SIZE = (320, 240)
POST = (0.6, 7.0)
CAMERAS = ((0.8, -2.0), (0.0, -3.0))


@pytest.fixture(scope="module")
def engine():
    return ClassicEngine(depth_model="none")


def _reveal(engine, scene, cam):
    pose = np.eye(4)
    pose[0, 3], pose[2, 3] = cam
    view = engine.renderer.render(scene.cloud, pose[None], scene.K, *SIZE).numpy()
    hole = ~view.mask[0]
    colour, depth = engine._fill(view.image[0], view.depth[0], hole, scene, pose)
    return pose, hole, colour, depth


@pytest.mark.parametrize("exact", [True, False], ids=["exact-depth", "pop-up-prior"])
def test_a_post_is_never_copied_into_the_sky_or_onto_the_ground(engine, exact):
    first = make_boxes(*SIZE, post=POST)
    scene, _ = engine.open_scene(OpenRequest("post", first.image, K=first.K,
                                             depth=first.depth if exact else None))
    assert scene.layout is not None
    for cam in CAMERAS:
        _, hole, colour, _ = _reveal(engine, scene, cam)
        truth = make_boxes(*SIZE, post=POST, camera=cam)
        assert hole.mean() > 0.15  # a real reveal
        magenta = np.abs(colour.astype(int) - np.array(POST_COLOUR)).sum(2) < 90
        near_post = cv2.dilate(truth.post.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
        open_air = (truth.labels == SKY) | (truth.labels == GROUND)
        assert not (hole & magenta & open_air & ~near_post).any(), cam


def test_revealed_ground_lies_on_the_ground_plane(engine):
    first = make_boxes(*SIZE)
    scene, _ = engine.open_scene(OpenRequest("plane", first.image, K=first.K, depth=first.depth))
    pose, hole, _, depth = _reveal(engine, scene, (0.0, -3.0))
    layout = view_layout(np.where(hole, 0, depth), ~hole, scene.K, pose, scene.layout)
    truth = make_boxes(*SIZE, camera=(0.0, -3.0))
    ground = hole & (truth.labels == GROUND)
    assert ground.sum() > 1000
    err = np.abs(depth[ground] - truth.depth[ground]) / truth.depth[ground]
    assert np.median(err) < 0.02 and np.isfinite(layout.ground_depth[ground]).all()
