"""The classic engine's per-frame work: the gap fill and the keyframes a clip grows from."""

import numpy as np

from backend.engines.base import FrameOut, OpenRequest, PointsOut, TransitionRequest
from backend.engines.classic import ClassicEngine
from protocol.trajectory import stock_path


def test_fill_gaps_fills_pinholes_with_their_neighbours_mean_and_keeps_known_pixels():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    mask = np.ones((64, 80), bool)
    mask[10, 10] = mask[40, 70] = False  # pinholes
    mask[20:36, 30:50] = False  # a hole larger than two rounds of 3 x 3 means
    out = ClassicEngine(depth_model="none")._fill_gaps(np.where(mask[..., None], image, 0), mask)
    np.testing.assert_array_equal(out[mask], image[mask])
    for y, x in ((10, 10), (40, 70)):
        ring = image[y - 1:y + 2, x - 1:x + 2].reshape(-1, 3).astype(float)
        mean = (ring.sum(0) - image[y, x]) / 8
        np.testing.assert_allclose(out[y, x], mean, atol=0.51)
    # the large hole holds plausible averages, not black: between the image's extremes
    inner = out[24:32, 36:44].astype(float)
    assert 60 < inner.mean() < 200 and inner.std() < 40


def test_transition_streams_every_frame_in_order_and_grows_from_few_keyframes():
    h = w = 96
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.stack([xx * 2, yy * 2, (xx + yy) % 256], -1).astype(np.uint8)
    engine = ClassicEngine(depth_model="none")
    grown = []
    original = engine._grow
    engine._grow = lambda scene, pose: grown.append(pose) or original(scene, pose)
    scene, _ = engine.open_scene(OpenRequest("ramp", image))
    poses = stock_path("backward", 49, scene.median_depth)
    events = list(engine.transition(scene, TransitionRequest(poses)))
    frames = [e for e in events if isinstance(e, FrameOut)]
    assert [f.index for f in frames] == list(range(49))
    assert all(f.image.shape == (h, w, 3) and f.image.dtype == np.uint8 for f in frames)
    # keyframes every 16 frames, the end first: 48, 32, 16
    np.testing.assert_array_equal(np.stack(grown), poses[[48, 32, 16]])
    assert isinstance(events[-1], PointsOut) and len(events[-1].cloud) > 0
    # backing away from the ramp never leaves black pixels: the fills cover every frame
    assert min(f.image.max(-1).astype(bool).mean() for f in frames) > 0.99
