"""SelectRegion / RegionOutline over real sockets: the outline the explorer shows before Space
is the region the dynamics clip then animates."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from backend.geometry.regions import fill_outline
from backend.geometry.synthetic import composite_water, water_strokes
from backend.server import Backend, BackendConfig
from protocol.messages import Arrow
from protocol.scripted import ScriptedClient, ScriptError

SIZE = 192


@pytest.fixture
def backend(tmp_path):
    config = BackendConfig(bind="tcp://127.0.0.1:0", sessions=tmp_path / "sessions",
                           heartbeat_s=0.2, peer_timeout_s=2.0)
    with Backend(config) as b:
        yield b


def test_the_outline_is_the_lake_and_the_clip_moves_only_inside_it(backend, scenes_dir):
    with Image.open(scenes_dir / "12_desert.jpg") as im:
        photo = np.asarray(im.convert("RGB").resize((SIZE, SIZE)))
    image, lake = composite_water(photo, seed=4)
    arrows = [Arrow(start=a, vector=((b[0] - a[0]) / 24, (b[1] - a[1]) / 24))
              for a, b in water_strokes(lake, 2, length_px=16)]
    with ScriptedClient(backend.address, timeout_s=600) as client:
        client.open_scene(image, scene_id="lake")
        reply, lines = client.select_region("lake", np.eye(4), arrows)
        region = fill_outline(lines, lake.shape)
        assert (region & lake).sum() / (region | lake).sum() >= 0.7
        assert reply.coverage == pytest.approx(region.mean(), abs=0.03)
        job = client.dynamics("lake", np.eye(4), num_frames=8, arrows=arrows, frame_codec="raw")
    still = job.frames[0].astype(int)
    changed = np.zeros(lake.shape, bool)
    for frame in job.frames[1:]:
        changed |= np.abs(frame.astype(int) - still).max(2) > 3
    grown = cv2.dilate(region.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert changed.sum() > 0.3 * lake.sum() and not (changed & ~grown).any()


def test_an_unknown_scene_is_an_error(backend):
    with ScriptedClient(backend.address, timeout_s=30) as client, \
            pytest.raises(ScriptError, match="unknown_scene"):
        client.select_region("nope", np.eye(4), [Arrow(start=(1.0, 1.0), vector=(1.0, 0.0))])
