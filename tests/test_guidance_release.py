"""The release's guided sampler on an exact model of Gaussian video data (no networks).

The analytic model (backend/models/analytic.py) knows E[x_0 | x_t] in closed form, so these
tests pin the sampler's arithmetic: the same run in four parameterisations agrees in VE
coordinates, guidance reproduces the prior where it is hidden, and one step equals the
release's ``step_Interp_PriorPS`` written out by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.guidance import GuidanceConfig, GuidedVideoSampler, PriorVideo
from backend.models.analytic import GaussianVideoModel, image_latent

SIGMAS = tuple(float(s) for s in np.geomspace(14.0, 0.03, 10))
PAPER_SIGMAS = tuple(float(s) for s in np.geomspace(14.0, 0.03, 25))
"""The release's 25 steps (20 guided, 15 rounds, lr 0.025)."""
PARAMETERISATIONS = [("vp", "epsilon"), ("vp", "v_prediction"), ("flow", "flow"), ("ve", "epsilon")]
FRAMES, PAD, SIZE = 9, 2, 8


def make_prior(model: GaussianVideoModel, seed: int = 1) -> tuple[PriorVideo, np.ndarray]:
    """The prior's content is one image from the data; visible: the first and last frames and
    the left half of the middle frame. Hidden pixels are black, as a render leaves them."""
    image = model.sample_image(torch.Generator().manual_seed(seed))
    masks = np.zeros((FRAMES, SIZE, SIZE), np.float32)
    masks[0] = masks[-1] = 1.0
    masks[FRAMES // 2, :, : SIZE // 2] = 1.0
    frames = image[None].repeat(FRAMES, 0) * (masks[..., None] > 0)
    return PriorVideo(frames.astype(np.uint8), masks), image


def config(**changes) -> GuidanceConfig:
    base = GuidanceConfig(num_frames=FRAMES, pad_frames=PAD, num_inference_steps=len(SIGMAS),
                          guidance_scale=1.0, renoise_rounds=3, lr=0.025, early_stop=0.2)
    return base.replace(**changes)


def run(model: GaussianVideoModel, cfg: GuidanceConfig, seed: int = 0):
    prior, image = make_prior(model)
    sampler = GuidedVideoSampler(model)
    out = sampler(prior.frames[0], prior, cfg, generator=torch.Generator().manual_seed(seed))
    return out, image


@pytest.mark.parametrize("mode", ["release", "blend", "none"])
def test_same_result_in_every_parameterisation(mode):
    finals = {}
    for kind, prediction in PARAMETERISATIONS:
        model = GaussianVideoModel(kind, prediction, SIGMAS)
        out, _ = run(model, config(mode=mode))
        finals[(kind, prediction)] = out.latents  # the table ends at a = 1: VE coordinates
    reference = finals[("ve", "epsilon")]
    assert reference.abs().max() > 0.1
    for key, latents in finals.items():
        err = float((latents - reference).abs().max())
        assert err < 2e-4, f"{mode}: {key} differs from VE/EDM by {err:.2e} in VE coordinates"


@pytest.mark.parametrize("kind,prediction", PARAMETERISATIONS)
def test_release_guidance_reproduces_the_prior_where_it_is_hidden(kind, prediction):
    model = GaussianVideoModel(kind, prediction, PAPER_SIGMAS)
    cfg = config(num_inference_steps=25, renoise_rounds=15)
    assert cfg.guided_steps == 20
    errors = {}
    for mode in ("release", "none"):
        per_seed = []
        for seed in range(4):
            out, image = run(model, cfg.replace(mode=mode), seed)
            target = image_latent(image)
            hidden = out.latents[0, PAD + 1:PAD + FRAMES - 1]  # every middle frame
            hidden = torch.cat([hidden[: FRAMES // 2 - 1], hidden[FRAMES // 2:]])  # fully hidden
            per_seed.append(float((hidden - target).pow(2).mean()))
        errors[mode] = float(np.mean(per_seed))
    guided, plain = errors["release"], errors["none"]
    message = (f"{kind}/{prediction}: hidden-frame MSE to the prior, guided {guided:.4f}, "
               f"unguided {plain:.4f}, data variance {model.var}")
    assert guided < 0.02 * model.var, message
    assert plain > 0.8 * model.var, message


def test_one_release_step_is_the_release_formula():
    """Hand-written ``step_Interp_PriorPS`` (EasyAnimate's patched Euler scheduler): the
    prediction is made before ``requires_grad``, the loss is backpropagated to the sample,
    ``grad / std(grad) * sigma ** 0.5 * lr`` is subtracted, then the Euler step runs on a second
    prediction at the moved sample."""
    sigmas = (3.0, 1.2)
    model = GaussianVideoModel("ve", "epsilon", sigmas)
    cfg = config(num_inference_steps=2, early_stop=0.5, renoise_rounds=0, lr=0.3)
    out, _ = run(model, cfg.replace(num_inference_steps=2), seed=5)
    # the release, by hand, for step 0 then a plain step 1
    prior, _ = make_prior(model)
    padded = prior.padded(PAD)
    z_prior = model.encode_video(torch.from_numpy(padded.filled()).permute(0, 3, 1, 2)
                                 .float() / 127.5 - 1.0)
    hole = 1.0 - torch.from_numpy(padded.masks)[None, :, None]  # the release's mask: 1 = hole
    g = torch.Generator().manual_seed(5)
    shape = (1, FRAMES + 2 * PAD, 3, SIZE, SIZE)
    sigma, sigma_next = sigmas
    latents = torch.randn(shape, generator=g) * (sigma**2 + 1) ** 0.5

    def eps(sample, s):
        return model.forward(sample / (s**2 + 1) ** 0.5, torch.tensor(sigmas.index(s)), None)

    noise_pred = eps(latents, sigma)
    sample = latents.detach().requires_grad_(True)
    pred_original_sample = sample - sigma * noise_pred
    visible = (1 - hole) > 0.5
    loss = ((pred_original_sample - z_prior) ** 2 * visible).sum() / visible.sum()
    loss.backward()
    grad = sample.grad / torch.std(sample.grad) * sigma**0.5 * cfg.lr
    latents = (latents - grad).detach()
    noise_pred = eps(latents, sigma)
    x0 = latents - sigma * noise_pred
    latents = latents + (latents - x0) / sigma * (sigma_next - sigma)
    x0 = latents - sigma_next * eps(latents, sigma_next)
    latents = latents + (latents - x0) / sigma_next * (0.0 - sigma_next)
    torch.testing.assert_close(out.latents, latents, rtol=1e-5, atol=1e-5)
    assert out.counters.guided_step_indices == [0]


def test_no_rounds_where_a_times_s_is_zero():
    """Flow and zero-terminal-SNR schedules start at a = 0: that step runs once, unguided."""
    sigmas = (float("inf"), *SIGMAS[1:])
    for kind, prediction in [("flow", "flow"), ("vp", "v_prediction")]:
        model = GaussianVideoModel(kind, prediction, sigmas)
        model.forward_calls = 0
        cfg = config(renoise_rounds=4)
        out, _ = run(model, cfg)
        c = out.counters
        guided = cfg.guided_steps - 1
        assert c.unguidable_steps == 1 and c.guided_step_indices == list(range(1, guided + 1))
        assert c.renoise_rounds == guided * 4
        # step 0: one call; guided steps: (guide + step) per round; the rest: one call
        expected = 1 + guided * 5 * 2 + (len(sigmas) - guided - 1)
        assert c.model_evals == model.forward_calls == expected
        assert c.guidance_evals == guided * 5


def test_end_view_reaches_the_conditioning():
    model = GaussianVideoModel("ve", "epsilon", SIGMAS)
    prior, _ = make_prior(model)
    GuidedVideoSampler(model)(prior.frames[0], prior, config(renoise_rounds=0))
    np.testing.assert_array_equal(model.end_images[-1], prior.frames[-1])


@pytest.mark.parametrize("mode", ["release", "blend", "none"])
def test_forwards_per_clip_counts_what_the_sampler_calls(mode):
    from backend.guidance.cost import forwards_per_clip

    sigmas = (float("inf"), *SIGMAS[1:])
    model = GaussianVideoModel("flow", "flow", sigmas)
    cfg = config(mode=mode, renoise_rounds=3)
    out, _ = run(model, cfg)
    assert out.counters.model_evals == forwards_per_clip(model.noise_schedule(len(sigmas)), cfg)


def test_guidance_start_leaves_the_first_steps_plain():
    """The interactive preset's window: guided steps from ``guidance_start`` to the early stop,
    renoise rounds only there, and the call count the cost model predicts."""
    from backend.guidance.cost import forwards_per_clip

    sigmas = (float("inf"), *SIGMAS[1:8])
    model = GaussianVideoModel("flow", "flow", sigmas)
    cfg = config(mode="blend", num_inference_steps=8, guidance_start=0.75, early_stop=0.0,
                 renoise_rounds=2)
    assert list(cfg.guided_range) == [6, 7]
    out, _ = run(model, cfg)
    assert out.counters.guided_step_indices == [6, 7]
    assert out.counters.renoise_rounds == 4 and out.counters.unguidable_steps == 0
    assert out.counters.model_evals == 8 + 2 * 2 == forwards_per_clip(model.noise_schedule(8), cfg)
    with pytest.raises(ValueError, match="guidance_start"):
        config(guidance_start=0.9, early_stop=0.2)
