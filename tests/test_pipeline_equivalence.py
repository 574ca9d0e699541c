"""Every adapter, run by the sampler with ``mode="none"``, against the real diffusers pipeline of
its family: same tiny random model, seed and initial noise, conditioning on (the first frame,
and the end view where the family takes it), VAE statistics that are not trivial (per-channel
latents mean and std away from 0 and 1, scaling factors away from 1). The final latents must
agree within 1e-4 of their scale.

Where a pipeline samples its VAE posterior and the adapter takes its mode, the tiny VAE's
posterior is made sharp (log-variance at its clamp, std 3e-7): a trained VAE's is nearly so,
and it keeps the comparison about the denoising, not about which draw of the posterior.
"""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

from backend.guidance import GuidanceConfig, GuidedVideoSampler, PriorVideo
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

SIZE, SEED, STEPS = 32, 7, 4
TOLERANCE = 1e-4
"""Largest allowed |ours - pipeline| over the largest |pipeline latent|."""


def images(size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (rng.integers(0, 255, (size, size, 3), dtype=np.uint8),
            rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


def end_view_prior(first: np.ndarray, last: np.ndarray, frames: int) -> PriorVideo:
    """A prior whose only role under ``mode="none"`` is to hand the end view to the adapter."""
    video = np.stack([first] * (frames - 1) + [last])
    return PriorVideo(video, np.ones(video.shape[:3], np.float32))


def noise(shape: tuple[int, ...]) -> torch.Tensor:
    """The initial noise, drawn in the pipeline's own layout (what its generator would draw)."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(SEED + 1))


def run_sampler(adapter, first, frames, steps=STEPS, prior=None, embeds=None, scale=1.0,
                size=SIZE, generator=None, native=True, **config) -> torch.Tensor:
    """Canonical final latents of the sampler, its initial noise from ``noise`` in the
    (B, C, F', h, w) layout (``native``) or the canonical one."""
    cfg = GuidanceConfig(num_frames=frames, pad_frames=0, num_inference_steps=steps,
                         mode="none", guidance_scale=scale, height=size, width=size,
                         max_sequence_length=16, prompt="a camera flyover", negative_prompt="",
                         **config)
    x_T = native_noise(adapter, frames, size).permute(0, 2, 1, 3, 4) if native else \
        noise(adapter.latent_shape(frames, size, size))
    generator = generator or torch.Generator().manual_seed(SEED)
    out = GuidedVideoSampler(adapter)(first, prior, cfg, prompt_embeds=embeds, latents=x_T,
                                      generator=generator, output_type="latent")
    return out.latents


def native_noise(adapter, frames, size=SIZE) -> torch.Tensor:
    """The initial noise of the pipelines whose latents are (B, C, F', h, w)."""
    f, c, h, w = adapter.latent_shape(frames, size, size)[1:]
    return noise((1, c, f, h, w))


def relative_gap(ours: torch.Tensor, reference: torch.Tensor) -> float:
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    return float((ours - reference).abs().max() / reference.abs().max())


def sharp_posterior(bias: torch.Tensor) -> None:
    with torch.no_grad():
        bias.fill_(-1e4)  # log-variance clamped to -30: the posterior's std is 3e-7


# ---------------------------------------------------------------------------- families
def ltx_pipeline():
    pipe = testing.ltx_pipeline()
    g = torch.Generator().manual_seed(3)
    channels = pipe.vae.config.latent_channels
    pipe.vae.latents_mean.copy_(torch.randn(channels, generator=g) * 0.5)
    pipe.vae.latents_std.copy_(torch.rand(channels, generator=g) + 0.5)
    pipe.vae.register_to_config(scaling_factor=0.8)
    sharp_posterior(pipe.vae.encoder.conv_out.conv.bias[-1:])
    return pipe


def ltx():
    pipe = ltx_pipeline()
    adapter = LTXAdapter(pipe)
    first, last = images()
    frames = 9
    embeds = adapter.encode_prompt("a camera flyover", "", False, 16)
    ours = run_sampler(adapter, first, frames, prior=end_view_prior(first, last, frames),
                       embeds=embeds)
    from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition

    conditions = [LTXVideoCondition(image=PIL.Image.fromarray(first), frame_index=0),
                  LTXVideoCondition(image=PIL.Image.fromarray(last), frame_index=frames - 1)]
    reference = pipe(conditions=conditions, prompt_embeds=embeds.positive,
                     prompt_attention_mask=embeds.positive_mask, height=SIZE, width=SIZE,
                     num_frames=frames, num_inference_steps=STEPS, guidance_scale=1.0,
                     image_cond_noise_scale=0.0, output_type="latent",
                     generator=torch.Generator().manual_seed(SEED + 1)).frames
    return ours, reference.permute(0, 2, 1, 3, 4)


def ltx_prior_tokens():
    """The prior as condition tokens: a render whose first 9 frames are seen and the rest
    hidden keeps the latent cells of those frames, as LTXConditionPipeline keeps a 9-frame
    video condition at frame 0 (the causal encoder makes their latents the same)."""
    from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition

    pipe = ltx_pipeline()
    adapter = LTXAdapter(pipe, prior_tokens=True)
    frames, seen = 17, 9
    rng = np.random.default_rng(1)
    video = rng.integers(0, 255, (frames, SIZE, SIZE, 3), dtype=np.uint8)
    masks = np.zeros((frames, SIZE, SIZE), np.float32)
    masks[:seen] = 1.0
    embeds = adapter.encode_prompt("a camera flyover", "", False, 16)
    ours = run_sampler(adapter, video[0], frames, prior=PriorVideo(video, masks), embeds=embeds)
    condition = LTXVideoCondition(video=[PIL.Image.fromarray(f) for f in video[:seen]],
                                  frame_index=0, strength=1.0)
    reference = pipe(conditions=[condition], prompt_embeds=embeds.positive,
                     prompt_attention_mask=embeds.positive_mask, height=SIZE, width=SIZE,
                     num_frames=frames, num_inference_steps=STEPS, guidance_scale=1.0,
                     image_cond_noise_scale=0.0, output_type="latent",
                     generator=torch.Generator().manual_seed(SEED + 1)).frames
    return ours, reference.permute(0, 2, 1, 3, 4)


def wan(flf2v: bool = False):
    pipe = testing.wan_pipeline(flf2v=flf2v)
    adapter = WanAdapter(pipe, last_image=flf2v)
    pipe.scheduler = adapter.sampling_scheduler()  # the first-order sampler the adapter runs
    first, last = images()
    frames = 9
    prior = end_view_prior(first, last, frames) if flf2v else None
    ours = run_sampler(adapter, first, frames, prior=prior, scale=3.0)
    reference = pipe(image=PIL.Image.fromarray(first), prompt="a camera flyover",
                     negative_prompt="", height=SIZE, width=SIZE, num_frames=frames,
                     num_inference_steps=STEPS, guidance_scale=3.0, max_sequence_length=16,
                     last_image=PIL.Image.fromarray(last) if flf2v else None,
                     latents=native_noise(adapter, frames), output_type="latent",
                     generator=torch.Generator().manual_seed(SEED)).frames
    return ours, reference.permute(0, 2, 1, 3, 4)


def wan_vace():
    pipe = testing.wan_vace_pipeline()
    adapter = WanVACEAdapter(pipe)
    pipe.scheduler = adapter.sampling_scheduler()
    first, last = images()
    frames = 9
    # A partial render: the middle frames half hidden, both end views whole.
    prior = end_view_prior(first, last, frames)
    masks = prior.masks.copy()
    masks[1:-1, :, SIZE // 2:] = 0.0
    video = prior.frames.copy()
    video[1:-1, :, SIZE // 2:] = 0
    prior = PriorVideo(video, masks)
    ours = run_sampler(adapter, first, frames, prior=prior, scale=3.0)
    control, hole = adapter.control_inputs(first, frames, SIZE, SIZE, prior)
    pil_video = [PIL.Image.fromarray(f) for f in ((control[0].permute(1, 2, 3, 0) + 1) * 127.5)
                 .round().clamp(0, 255).to(torch.uint8).numpy()]
    pil_mask = [PIL.Image.fromarray((m * 255).astype(np.uint8)) for m in hole[0, 0].numpy()]
    reference = pipe(video=pil_video, mask=pil_mask, prompt="a camera flyover",
                     negative_prompt="", height=SIZE, width=SIZE, num_frames=frames,
                     num_inference_steps=STEPS, guidance_scale=3.0, max_sequence_length=16,
                     latents=native_noise(adapter, frames), output_type="latent",
                     generator=torch.Generator().manual_seed(SEED)).frames
    return ours, reference.permute(0, 2, 1, 3, 4)


def cogvideox():
    pipe = testing.cogvideox_pipeline()
    assert pipe.vae.config.scaling_factor != 1.0
    adapter = CogVideoXAdapter(pipe)
    first, _ = images()
    frames = 9
    ours = run_sampler(adapter, first, frames, scale=3.0, native=False)
    reference = pipe(image=PIL.Image.fromarray(first), prompt="a camera flyover",
                     negative_prompt="", height=SIZE, width=SIZE, num_frames=frames,
                     num_inference_steps=STEPS, guidance_scale=3.0, max_sequence_length=16,
                     use_dynamic_cfg=False, latents=noise(adapter.latent_shape(frames, SIZE, SIZE)),
                     output_type="latent", generator=torch.Generator().manual_seed(SEED)).frames
    return ours, reference


def svd():
    pipe = testing.svd_pipeline()
    assert pipe.vae.config.scaling_factor != 1.0
    adapter = SVDAdapter(pipe)
    size, frames = 16, 4
    first = images(size)[0]
    ours = run_sampler(adapter, first, frames, size=size, scale=3.0, native=False,
                       frame_guidance_ramp=(1.0, 3.0))
    reference = pipe(PIL.Image.fromarray(first), height=size, width=size, num_frames=frames,
                     num_inference_steps=STEPS, min_guidance_scale=1.0, max_guidance_scale=3.0,
                     fps=adapter.fps, motion_bucket_id=adapter.motion_bucket_id,
                     noise_aug_strength=adapter.noise_aug_strength,
                     latents=noise(adapter.latent_shape(frames, size, size)),
                     output_type="latent", generator=torch.Generator().manual_seed(SEED)).frames
    return ours, reference


def easyanimate():
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.easyanimate.pipeline_easyanimate_inpaint import (
        get_image_to_video_latent,
    )

    pipe = testing.easyanimate_pipeline()
    # A scheduler that shifts dynamically: the pipeline passes mu = 1, so must the adapter.
    pipe.scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
    assert pipe.vae.config.scaling_factor != 1.0
    adapter = EasyAnimateAdapter(pipe)
    first, last = images()
    frames = 9
    gen = torch.Generator().manual_seed(0)
    embeds = PromptEmbeds(torch.randn(1, 8, 16, generator=gen))
    # The pipeline cannot take ``latents`` with a flow scheduler (it has no init_noise_sigma):
    # it draws the initial noise first, then the inpainting video's noise augmentation. The
    # sampler gets the same noise and a generator at the same point of its stream.
    generator = torch.Generator().manual_seed(SEED + 1)
    torch.randn(native_noise(adapter, frames).shape, generator=generator)
    ours = run_sampler(adapter, first, frames, prior=end_view_prior(first, last, frames),
                       embeds=embeds, generator=generator)
    video, mask = get_image_to_video_latent(first, last, frames, (SIZE, SIZE))
    reference = pipe(video=video, mask_video=mask, prompt_embeds=embeds.positive,
                     prompt_attention_mask=torch.ones(1, 8), height=SIZE, width=SIZE,
                     num_frames=frames, num_inference_steps=STEPS, guidance_scale=1.0,
                     noise_aug_strength=adapter.noise_aug_strength, output_type="latent",
                     generator=torch.Generator().manual_seed(SEED + 1)).frames
    return ours, reference.permute(0, 2, 1, 3, 4)


FAMILIES = {"ltx": ltx, "ltx-prior-tokens": ltx_prior_tokens, "wan": wan,
            "wan-flf2v": lambda: wan(flf2v=True), "wan-vace": wan_vace, "cogvideox": cogvideox,
            "svd": svd, "easyanimate": easyanimate}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "svd" else n
                                  for n in sorted(FAMILIES)])  # SVD's tiny UNet: the long one
def test_adapter_reproduces_its_pipeline(name):
    ours, reference = FAMILIES[name]()
    assert float(reference.abs().max()) > 0.1  # a real clip, not zeros
    gap = relative_gap(ours, reference)
    print(f"{name}: max |ours - pipeline| / max |pipeline| = {gap:.2e}")
    assert gap < TOLERANCE, f"{name}: final latents differ from the pipeline's by {gap:.2e}"
