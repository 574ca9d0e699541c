"""NoiseSchedule against diffusers' own schedulers, renoising statistics, prior masks, config."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import (
    CogVideoXDDIMScheduler,
    DDIMScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
)

from backend.guidance import GuidanceConfig, PriorVideo, latent_masks, schedule_from_scheduler


def _schedulers():
    return {
        "ddim_eps": DDIMScheduler(clip_sample=False, set_alpha_to_one=True),
        "cogvideox_v": CogVideoXDDIMScheduler(prediction_type="v_prediction",
                                              timestep_spacing="trailing", clip_sample=False,
                                              rescale_betas_zero_snr=True, snr_shift_scale=1.0,
                                              beta_schedule="scaled_linear"),
        "svd_euler_v": EulerDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
            prediction_type="v_prediction", sigma_max=700.0, sigma_min=0.002,
            steps_offset=1, timestep_spacing="leading", timestep_type="continuous",
            use_karras_sigmas=True),
        "wan_flow": FlowMatchEulerDiscreteScheduler(shift=3.0),
    }


@pytest.mark.parametrize("name", list(_schedulers()))
def test_step_matches_diffusers(name):
    reference = _schedulers()[name]
    # 5 steps: DDIM's prev_timestep = t - 1000 // 5 is then the next timestep exactly.
    schedule = schedule_from_scheduler(_schedulers()[name], 5)
    reference.set_timesteps(5)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 4, generator=gen, dtype=torch.float64) * schedule.initial_noise_scale()
    for i, t in enumerate(reference.timesteps):
        out = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        ours = schedule.step(schedule.to_x0(out, x, i), x, i)
        theirs = reference.step(out, t, x, return_dict=False)[0]
        torch.testing.assert_close(ours, theirs.to(torch.float64), rtol=1e-5, atol=1e-5)
        x = theirs.to(torch.float64)


@pytest.mark.parametrize("name", list(_schedulers()))
def test_renoise_is_the_forward_transition(name):
    schedule = schedule_from_scheduler(_schedulers()[name], 6)
    gen = torch.Generator().manual_seed(1)
    x0 = torch.full((200_000,), 0.5, dtype=torch.float64)
    i = 2
    noisy_prev = schedule.add_noise(x0, i + 1, torch.randn(x0.shape, generator=gen,
                                                           dtype=torch.float64))
    back = schedule.renoise(noisy_prev, i, gen)
    a, s = float(schedule.alphas[i]), float(schedule.sigmas[i])
    assert abs(back.mean().item() - a * 0.5) < 0.02 * max(1.0, s)
    assert abs(back.std().item() - s) < 0.01 * max(1.0, s)


def test_guidance_step_is_the_release_sigma_root_in_ve_coordinates():
    for name, scheduler in _schedulers().items():
        schedule = schedule_from_scheduler(scheduler, 5)
        for i in range(5):
            a, s = float(schedule.alphas[i]), float(schedule.sigmas[i])
            expected = 0.0 if a == 0.0 else a * (s / a) ** 0.5  # a_t * sqrt(sigma_VE)
            assert abs(schedule.guidance_step(i) - expected) < 1e-9, name
    zero_snr = schedule_from_scheduler(_schedulers()["cogvideox_v"], 5)
    assert zero_snr.guidance_step(0) == 0.0  # a_0 = 0: nothing to guide


def test_latent_masks_cut_at_80_percent_of_space_and_time():
    masks = np.zeros((9, 16, 16), np.float32)
    masks[0] = 1.0
    masks[1:5, :8, :] = 1.0  # top half visible in latent frame 1's four frames
    masks[1:5, 8, :] = 1.0  # and one more row of the bottom cells: 9 of 64 rows
    masks[5:9] = 1.0
    masks[8, :2, :8] = 0.0  # latent frame 2: 16 of 256 pixels of cell (0, 0) hidden
    masks[5:8, :8, 8:] = 0.0  # latent frame 2, cell (0, 1): 3 of 4 frames hidden
    groups = [range(0, 1), range(1, 5), range(5, 9)]
    m = latent_masks(masks, groups, spatial=8, device=torch.device("cpu"))
    assert m.shape == (1, 3, 1, 2, 2)
    torch.testing.assert_close(m[0, :, 0], torch.tensor(
        [[[1.0, 1.0], [1.0, 1.0]], [[1.0, 1.0], [0.0, 0.0]], [[1.0, 0.0], [1.0, 1.0]]]))


def test_prior_holes_are_telea_filled_before_encoding():
    yy, xx = np.mgrid[0:32, 0:32]
    image = np.stack([xx * 8, yy * 8, np.full_like(xx, 128)], -1).astype(np.uint8)
    mask = np.ones((32, 32), np.float32)
    mask[10:20, 12:22] = 0.0
    holed = image * (mask[..., None] > 0)
    filled = PriorVideo(holed[None].astype(np.uint8), mask[None]).filled()[0]
    np.testing.assert_array_equal(filled[mask > 0], holed[mask > 0])  # visible pixels kept
    inside = filled[12:18, 14:20].astype(np.float32)
    assert inside.min() > 40  # no black left in the hole
    assert np.abs(inside - image[12:18, 14:20]).mean() < 20  # a smooth ramp continues


def test_prior_padding_replicates_end_views():
    frames = np.arange(3, dtype=np.uint8)[:, None, None, None].repeat(4, 1).repeat(4, 2).repeat(3, 3)
    prior = PriorVideo(frames, np.ones((3, 4, 4), np.float32)).padded(2)
    assert prior.frames[:, 0, 0, 0].tolist() == [0, 0, 0, 1, 2, 2, 2]
    with pytest.raises(ValueError, match="masks"):
        PriorVideo(frames, np.ones((3, 4, 5)))


def test_config_defaults_and_validation():
    cfg = GuidanceConfig()
    assert (cfg.num_frames, cfg.pad_frames, cfg.num_inference_steps) == (48, 4, 25)
    assert (cfg.guidance_scale, cfg.lr, cfg.early_stop, cfg.mode) == (7.0, 0.025, 0.2, "release")
    assert cfg.prompt.startswith("A fast camera flyover, cruising steadily across the scene.")
    assert cfg.negative_prompt.startswith("The video has blurry area.")
    assert cfg.total_frames == 56 and cfg.guided_steps == 20
    assert cfg.replace(mode="none").guided_steps == 0
    with pytest.raises(ValueError, match="unknown guidance settings: bogus"):
        GuidanceConfig.from_mapping({"bogus": 1})
    with pytest.raises(ValueError, match="early_stop"):
        cfg.replace(early_stop=1.5)
    with pytest.raises(AttributeError):
        cfg.num_frames = 3  # frozen
