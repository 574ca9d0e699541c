"""The diffusion engine keeps a dynamics clip's motion in the world: on the tiny random
CogVideoX the whole Stage II runs (depth, inpainting, image-to-video, decoding); the clip the
random model decodes has no coherent motion, so its decoded frames are replaced, as they
stream, by the same view with its left half sliding right one pixel a frame. The engine's
optical flow must find that half moving right, lift it onto those points and keep it."""

from __future__ import annotations

import numpy as np

import backend.engines.diffusion as diffusion
from backend.engines.base import DynamicsRequest, FrameOut, MotionOut, OpenRequest
from backend.engines.diffusion import DiffusionEngine
from tests.test_engine_diffusion import FAST, TEXT, H, W, models, scene_image  # noqa: F401


def sliding(view: np.ndarray, t: int) -> np.ndarray:
    out = view.copy()
    out[:, : W // 2] = np.roll(view, t, axis=1)[:, : W // 2]
    return out


def test_a_generated_clip_leaves_its_motion_in_the_world(models, monkeypatch):  # noqa: F811
    real = diffusion.stream_frames
    image = scene_image(3)

    def slide(*args, **kwargs):
        for t, _ in real(*args, **kwargs):  # the tiny model's own frames, decoded
            yield t, sliding(image, t)

    monkeypatch.setattr(diffusion, "stream_frames", slide)
    engine = DiffusionEngine(models=str(models["full"]), guidance=FAST, inpaint_steps=2)
    scene, _ = engine.open_scene(OpenRequest("kept", image, text=TEXT))
    events = list(engine.dynamics(scene, DynamicsRequest(np.eye(4), num_frames=5,
                                                         prompt="water flows")))
    assert sum(isinstance(e, FrameOut) for e in events) == 5
    (kept,) = [e for e in events if isinstance(e, MotionOut)]
    cloud = scene.cloud.cloud()
    u = scene.K[0, 0] * cloud.xyz[kept.index, 0] / cloud.xyz[kept.index, 2] + scene.K[0, 2]
    assert np.median(u) < W / 2 and len(kept.index) > 50  # the sliding half
    assert np.median(kept.motion[:, 0]) > 0 and (kept.motion[:, 3] == 5 / 24.0).all()
    assert scene.moving_regions == ["what the clip moved"]
