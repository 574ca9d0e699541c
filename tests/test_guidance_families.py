"""Family rules of the new adapters: end-view conditioning reaches the network (LTX, Wan-VACE,
Wan FLF2V), frame-count rules, and VACE's control inputs built from the prior."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.guidance import PriorVideo
from backend.models import EasyAnimateAdapter, LTXAdapter, WanAdapter, WanVACEAdapter, testing
from backend.models.adapters import PromptEmbeds

SIZE, FRAMES = 32, 9


def prior_with_end(end_value: int) -> PriorVideo:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (FRAMES, SIZE, SIZE, 3), dtype=np.uint8)
    frames[-1] = end_value
    masks = np.ones((FRAMES, SIZE, SIZE), np.float32)
    masks[1:-1, :, SIZE // 2:] = 0.0
    return PriorVideo(frames, masks)


def predict_with(adapter, prior: PriorVideo | None) -> torch.Tensor:
    """One CFG-free network call on fixed latents, conditioned on ``prior``'s end view."""
    if adapter.family == "easyanimate":  # its Qwen2-VL text encoder is not built offline
        embeds = PromptEmbeds(torch.ones(1, 8, 16))
    else:
        embeds = adapter.encode_prompt("a camera flyover", "", False, 16)
    first = prior_with_end(0).frames[0]
    cond = adapter.prepare_conditioning(first, FRAMES, SIZE, SIZE, embeds, False,
                                        torch.Generator().manual_seed(0), prior=prior)
    shape = adapter.latent_shape(FRAMES, SIZE, SIZE)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    schedule = adapter.noise_schedule(4)
    with torch.no_grad():
        return adapter.predict(schedule.model_input(x, 1), schedule.timesteps[1], cond, 1.0)


@pytest.mark.parametrize("build", [
    lambda: LTXAdapter(testing.ltx_pipeline()),
    lambda: WanVACEAdapter(testing.wan_vace_pipeline()),
    lambda: WanAdapter(testing.wan_pipeline(flf2v=True), last_image=True),
    lambda: EasyAnimateAdapter(testing.easyanimate_pipeline()),
], ids=["ltx", "wan-vace", "wan-flf2v", "easyanimate"])
def test_end_view_reaches_the_network(build):
    adapter = build()
    dark, light = predict_with(adapter, prior_with_end(10)), predict_with(adapter, prior_with_end(240))
    assert dark.shape == light.shape == adapter.latent_shape(FRAMES, SIZE, SIZE)
    change = float((dark - light).abs().max())
    assert change > 1e-5, f"{adapter.family}: the end view does not change the prediction"
    again = predict_with(adapter, prior_with_end(10))
    torch.testing.assert_close(dark, again)  # and nothing else does


def test_ltx_hard_conditions_the_first_frame_and_follows_its_frame_rule():
    adapter = LTXAdapter(testing.ltx_pipeline())
    t = adapter.temporal_compression
    assert adapter.is_valid_num_frames(2 * t + 1) and not adapter.is_valid_num_frames(2 * t)
    with pytest.raises(ValueError, match=rf"{t}k\+1 frames"):
        adapter.check_num_frames(2 * t)
    # The clean estimate of the first latent frame is the image's latents, at any noise level.
    image = prior_with_end(0).frames[0]
    embeds = adapter.encode_prompt("a camera flyover", "", False, 16)
    cond = adapter.prepare_conditioning(image, FRAMES, SIZE, SIZE, embeds, False, None)
    schedule = adapter.noise_schedule(6)
    x = torch.randn(adapter.latent_shape(FRAMES, SIZE, SIZE))
    for i in (1, 3):
        with torch.no_grad():
            out = adapter.predict(schedule.model_input(x, i), schedule.timesteps[i], cond, 1.0)
        x0 = schedule.to_x0(out, x, i)
        torch.testing.assert_close(x0[:, :1], cond.tensors["kept"][:, :1], rtol=1e-4, atol=1e-4)
    assert float(schedule.sigmas[0]) == 1.0 and schedule.guidance_step(0) == 0.0


def test_ltx_refuses_a_scheduler_that_shifts_its_sigmas():
    """LTXConditionPipeline steps tokens from t / 1000; a shifted table breaks that chain."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    pipe = testing.ltx_pipeline()
    pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    with pytest.raises(ValueError, match="shifts its sigmas"):
        LTXAdapter(pipe).noise_schedule(6)


def test_ltx_distilled_timesteps_are_used_as_given():
    given = (1000, 993, 987, 981, 975, 909, 725, 0.03)
    adapter = LTXAdapter(testing.ltx_pipeline(), timesteps=given)
    schedule = adapter.noise_schedule(8)
    assert schedule.timesteps.tolist() == pytest.approx(given)
    assert schedule.sigmas[:-1].tolist() == pytest.approx([t / 1000 for t in given])
    assert float(schedule.sigmas[-1]) == 0.0
    with pytest.raises(ValueError, match="runs 8 steps"):
        adapter.noise_schedule(4)


def test_vace_control_inputs_are_the_partial_render_and_its_holes():
    adapter = WanVACEAdapter(testing.wan_vace_pipeline())
    prior = prior_with_end(200)
    video, hole = adapter.control_inputs(prior.frames[0], FRAMES, SIZE, SIZE, prior)
    assert video.shape == (1, 3, FRAMES, SIZE, SIZE) and hole.shape == (1, 1, FRAMES, SIZE, SIZE)
    assert hole[0, 0, 0].sum() == 0 and hole[0, 0, -1].sum() == 0  # both ends kept
    assert torch.equal(hole[0, 0, 1:-1, :, SIZE // 2:], torch.ones(FRAMES - 2, SIZE, SIZE // 2))
    assert float(video[0, :, 1:-1, :, SIZE // 2:].abs().max()) == 0.0  # holes are mid grey
    expected_end = torch.full((3, SIZE, SIZE), 200 / 127.5 - 1.0)
    torch.testing.assert_close(video[0, :, -1], expected_end)


def test_svd_per_frame_guidance_ramp_reaches_the_network(monkeypatch):
    from backend.guidance import GuidanceConfig, GuidedVideoSampler
    from backend.models import SVDAdapter

    adapter = SVDAdapter(testing.svd_pipeline())
    scales = []
    predict = adapter.predict

    def spy(x, t, cond, scale):
        scales.append(scale)
        return predict(x, t, cond, scale)

    monkeypatch.setattr(adapter, "predict", spy)
    cfg = GuidanceConfig(num_frames=4, pad_frames=0, num_inference_steps=2, mode="none",
                         guidance_scale=3.0, frame_guidance_ramp=(1.0, 3.0), height=8, width=8)
    image = prior_with_end(0).frames[0][:8, :8]
    GuidedVideoSampler(adapter)(image, None, cfg)
    assert len(scales) == 2
    for scale in scales:
        torch.testing.assert_close(scale.flatten(), torch.tensor([1.0, 5 / 3, 7 / 3, 3.0]))


def test_easyanimate_inpaint_video_keeps_both_ends():
    adapter = EasyAnimateAdapter(testing.easyanimate_pipeline())
    prior = prior_with_end(200)
    video, mask = adapter.inpaint_inputs(prior.frames[0], FRAMES, SIZE, SIZE, prior)
    assert mask[0, 0, 0].max() == 0 and mask[0, 0, -1].max() == 0  # kept
    assert mask[0, 0, 1:-1].min() == 1 and float(video[0, :, 1:-1].max()) == -1.0  # generated
    torch.testing.assert_close(video[0, :, -1], torch.full((3, SIZE, SIZE), 200 / 127.5 - 1.0))
    _, plain_mask = adapter.inpaint_inputs(prior.frames[0], FRAMES, SIZE, SIZE, None)
    assert plain_mask[0, 0, -1].min() == 1  # without a prior only the first frame is given
