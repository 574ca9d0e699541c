"""The guided sampler on tiny random models of every video family (real diffusers code)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from backend.guidance import GuidanceConfig, GuidedVideoSampler, PriorVideo, SamplingInterrupted
from backend.guidance.frames import tensor_to_frames
from backend.models import (
    CogVideoXAdapter,
    EasyAnimateAdapter,
    LTXAdapter,
    SVDAdapter,
    WanAdapter,
    WanVACEAdapter,
    testing,
)
from backend.models.adapters import PromptEmbeds


@dataclass
class Family:
    adapter: object
    frames: int
    pad: int
    size: int
    steps: int = 6
    early_stop: float = 0.2
    latent_ratio: float = 0.5
    """Guided / plain masked latent error must fall below this."""
    pixel_ratio: float | None = 0.8
    """The same over the decoded visible pixels (None: this tiny VAE's decode says nothing)."""
    blend_ratio: float = 0.6
    prompt_embeds: PromptEmbeds | None = None
    """Given embeddings, for families whose text encoder cannot be built offline."""


def _build(name: str) -> Family:
    if name == "cogvideox":
        return Family(CogVideoXAdapter(testing.cogvideox_pipeline()), 5, 2, 32)
    if name == "wan":
        return Family(WanAdapter(testing.wan_pipeline()), 5, 2, 32)
    if name == "ltx":
        # LTX's linear-quadratic schedule keeps a_t near 0 for its first half: a weaker pull.
        return Family(LTXAdapter(testing.ltx_pipeline()), 5, 2, 32, latent_ratio=0.7,
                      pixel_ratio=None, blend_ratio=0.9)
    if name == "wan-vace":
        return Family(WanVACEAdapter(testing.wan_vace_pipeline()), 5, 2, 32)
    if name == "easyanimate":
        gen = torch.Generator().manual_seed(0)
        embeds = PromptEmbeds(torch.randn(1, 8, 16, generator=gen), torch.randn(1, 8, 16, generator=gen))
        return Family(EasyAnimateAdapter(testing.easyanimate_pipeline()), 5, 2, 32,
                      prompt_embeds=embeds)
    return Family(SVDAdapter(testing.svd_pipeline()), 4, 1, 8, latent_ratio=0.6, pixel_ratio=None)


_CACHE: dict[str, Family] = {}


def family(name: str) -> Family:
    if name not in _CACHE:
        _CACHE[name] = _build(name)
    return _CACHE[name]


def make_prior(n: int, size: int) -> PriorVideo:
    """A smooth pattern panning right; the right half of the middle frames is a hole."""
    yy, xx = np.mgrid[0:size, 0:size]
    frames = np.stack([np.stack([(xx * 8 + 4 * k) % 256, (yy * 8) % 256, ((xx + yy) * 4) % 256],
                                -1) for k in range(n)]).astype(np.uint8)
    masks = np.ones((n, size, size), np.float32)
    masks[1:-1, :, size // 2:] = 0.0
    return PriorVideo(frames, masks)


def config_for(f: Family, **changes) -> GuidanceConfig:
    base = GuidanceConfig(num_frames=f.frames, pad_frames=f.pad, num_inference_steps=f.steps,
                          early_stop=f.early_stop, renoise_rounds=2, lr=0.5,
                          height=f.size, width=f.size, max_sequence_length=16,
                          prompt="a camera flyover", negative_prompt="")
    return base.replace(**changes)


def run(f: Family, cfg: GuidanceConfig, seed: int = 0, **kwargs):
    prior = make_prior(f.frames, f.size)
    sampler = GuidedVideoSampler(f.adapter)
    if f.prompt_embeds is not None:
        kwargs.setdefault("prompt_embeds", f.prompt_embeds)
    out = sampler(prior.frames[0], prior, cfg, generator=torch.Generator().manual_seed(seed),
                  **kwargs)
    return sampler, prior, out


def masked_latent_error(latents, z_prior, mask) -> float:
    return float(((latents - z_prior) * mask).pow(2).sum())


FAMILIES = ["cogvideox", "wan", "svd", "ltx", "wan-vace", "easyanimate"]
SLOW_FAMILIES = {"svd"}
"""Families whose tiny model takes several times the others' (SVD's UNet): ``make test-fast``
leaves them out, ``make test`` runs them."""


def families() -> list:
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_FAMILIES else n for n in FAMILIES]


@pytest.mark.parametrize("name", families())
def test_guidance_pulls_the_clip_toward_the_prior(name):
    f = family(name)
    _, prior, plain = run(f, config_for(f, mode="none"))
    _, _, guided = run(f, config_for(f, mode="release"))
    _, _, blend = run(f, config_for(f, mode="blend"))
    z_p, m = guided.prior_latents, guided.latent_mask
    plain_err = masked_latent_error(plain.latents, z_p, m)
    assert masked_latent_error(guided.latents, z_p, m) < f.latent_ratio * plain_err
    assert masked_latent_error(blend.latents, z_p, m) < f.blend_ratio * plain_err
    # Decoded clip against the prior as the VAE reproduces it, over the visible pixels.
    with torch.no_grad():
        reference = tensor_to_frames(f.adapter.decode_latents(z_p)[f.pad:f.pad + f.frames])
    visible = prior.masks[..., None]

    def pixel_error(frames: np.ndarray) -> float:
        diff = frames.astype(np.float32) - reference.astype(np.float32)
        return float((diff ** 2 * visible).sum() / visible.sum())

    if f.pixel_ratio is not None:
        assert pixel_error(guided.frames) < f.pixel_ratio * pixel_error(plain.frames)
    assert guided.frames.shape == (f.frames, f.size, f.size, 3) and guided.frames.dtype == np.uint8


def count_network_passes(module: torch.nn.Module) -> dict[str, int]:
    """Forward calls of ``module`` (and those made with autograd on), and backward passes
    that reach any of its outputs."""
    counts = {"forward": 0, "forward_with_grad": 0, "backward": 0}

    def on_backward(grad):
        counts["backward"] += 1

    def hook(mod, args, output):
        counts["forward"] += 1
        counts["forward_with_grad"] += int(torch.is_grad_enabled())
        for t in output if isinstance(output, tuple) else (output,):
            if isinstance(t, torch.Tensor) and t.requires_grad:
                t.register_hook(on_backward)

    module.register_forward_hook(hook)
    return counts


@pytest.mark.parametrize("name", families())
def test_early_stop_rounds_padding_and_no_backward(name):
    f = family(name)
    counts = count_network_passes(f.adapter.denoiser)
    steps: list[tuple[int, bool]] = []
    cfg = config_for(f, num_inference_steps=5, early_stop=0.4, renoise_rounds=2)
    _, _, out = run(f, cfg, callback_on_step_end=lambda s, i, t, kw: steps.append((i, kw["guided"])))
    c = out.counters
    guided = c.guided_steps
    # a flow or zero-terminal-SNR schedule starts at a_t = 0: no rounds there
    assert c.unguidable_steps + guided == 3  # round(5 * 0.6) before the early stop
    assert c.guided_step_indices == list(range(c.unguidable_steps, 3))
    assert c.renoise_rounds == guided * 2
    # release mode: (guide, step) per round, one call per other step, never a backward pass
    assert c.model_evals == counts["forward"] == guided * 3 * 2 + (5 - guided)
    assert counts["forward_with_grad"] == 0 and counts["backward"] == 0
    assert [i for i, _ in steps] == list(range(5))
    # Padded views are generated, then dropped.
    assert out.frames.shape[0] == f.frames
    with torch.no_grad():
        full = f.adapter.decode_latents(out.latents.to(f.adapter.device))
    assert full.shape[0] == f.frames + 2 * f.pad
    np.testing.assert_array_equal(out.frames, tensor_to_frames(full[f.pad:f.pad + f.frames]))


def test_seed_reproducible_and_cancel():
    f = family("cogvideox")
    cfg = config_for(f, num_inference_steps=2, renoise_rounds=0)
    _, _, a = run(f, cfg, seed=3)
    _, _, b = run(f, cfg, seed=3)
    _, _, c = run(f, cfg, seed=4)
    np.testing.assert_array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames, c.frames)

    def cancel_after_first(sampler, i, t, kwargs):
        sampler.interrupt()

    with pytest.raises(SamplingInterrupted, match="step 1"):
        run(f, cfg, callback_on_step_end=cancel_after_first)


def test_previews_and_callback_tensors():
    f = family("cogvideox")
    seen = []

    def callback(sampler, i, t, kwargs):
        seen.append((i, sorted(kwargs), None if kwargs["preview"] is None else kwargs["preview"].shape))
        return {"latents": kwargs["latents"]}

    cfg = config_for(f, num_inference_steps=2, renoise_rounds=0, preview_every=2)
    _, _, out = run(f, cfg, callback_on_step_end=callback,
                    callback_on_step_end_tensor_inputs=("latents", "x0_hat"))
    keys = ["guided", "latents", "loss", "preview", "x0_hat"]
    assert seen == [(0, keys, None), (1, keys, (f.frames, f.size // 2, f.size // 2, 3))]
    assert out.counters.previews == 1
    with pytest.raises(ValueError, match="callback tensor inputs"):
        run(f, cfg, callback_on_step_end=callback, callback_on_step_end_tensor_inputs=("noise",))


def test_dynamics_mode_needs_no_prior_and_checks_inputs():
    f = family("wan")
    sampler = GuidedVideoSampler(f.adapter)
    image = make_prior(1, f.size).frames[0]
    out = sampler(image, None, config_for(f, mode="none", num_inference_steps=2))
    assert out.frames.shape == (f.frames, f.size, f.size, 3)
    assert out.counters.guidance_evals == 0 and out.prior_latents is None
    with pytest.raises(ValueError, match="needs a prior"):
        sampler(image, None, config_for(f, mode="release"))
    with pytest.raises(ValueError, match=r"4k\+1 frames\); nearest valid: 9 or 13"):
        sampler(image, None, config_for(f, mode="none", num_frames=6))
    with pytest.raises(ValueError, match="render inputs at the model size"):
        sampler(image[:16], None, config_for(f, mode="none"))


def test_frame_rules():
    cog = family("cogvideox").adapter
    assert cog.is_valid_num_frames(9) and not cog.is_valid_num_frames(10)
    assert cog.latent_frame_groups(9) == [range(0, 1), range(1, 5), range(5, 9)]
    svd = family("svd").adapter
    assert all(svd.is_valid_num_frames(n) for n in (2, 7, 25))
    learned = CogVideoXAdapter(testing.cogvideox_pipeline(learned_positions=True))
    assert learned.is_valid_num_frames(9) and not learned.is_valid_num_frames(13)
    with pytest.raises(ValueError, match="learned positional embeddings"):
        learned.check_size(64, 64)
