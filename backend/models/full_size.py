"""Published video models at full size with random weights, for cost, memory and GPU benchmarks.

The denoiser, VAE and scheduler come from :mod:`backend.models.published`; the text encoder is
built only for its weights (memory), its output replaced by random embeddings of the published
shape. Build under ``torch.device("meta")`` to count FLOPs or bytes without memory, or on CUDA
to time a real run.
"""

from __future__ import annotations

from typing import Any

import torch

from .adapters.base import DiffusersModel
from .published import PublishedModel

_DENOISERS = {"cogvideox": "CogVideoXTransformer3DModel", "wan": "WanTransformer3DModel",
              "wan-vace": "WanVACETransformer3DModel", "ltx": "LTXVideoTransformer3DModel",
              "svd": "UNetSpatioTemporalConditionModel",
              "easyanimate": "EasyAnimateTransformer3DModel"}
_VAES = {"cogvideox": "AutoencoderKLCogVideoX", "wan": "AutoencoderKLWan",
         "wan-vace": "AutoencoderKLWan", "ltx": "AutoencoderKLLTXVideo",
         "svd": "AutoencoderKLTemporalDecoder", "easyanimate": "AutoencoderKLMagvit"}
_SCHEDULERS = {"cogvideox": "CogVideoXDDIMScheduler", "wan": "FlowMatchEulerDiscreteScheduler",
               "wan-vace": "FlowMatchEulerDiscreteScheduler",
               "ltx": "FlowMatchEulerDiscreteScheduler", "svd": "EulerDiscreteScheduler",
               "easyanimate": "FlowMatchEulerDiscreteScheduler"}


def _diffusers(name: str):
    import diffusers

    return getattr(diffusers, name)


def build_denoiser(model: PublishedModel) -> DiffusersModel:
    return _diffusers(_DENOISERS[model.family])(**model.denoiser)


def build_vae(model: PublishedModel) -> DiffusersModel:
    return _diffusers(_VAES[model.family])(**model.vae)


def build_scheduler(model: PublishedModel):
    return _diffusers(_SCHEDULERS[model.family])(**model.scheduler)


def build_text_encoder(model: PublishedModel) -> torch.nn.Module | None:
    """The text encoder from its published config (random weights), None without one."""
    if model.text_encoder is None:
        return None
    import transformers
    from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLVisionConfig

    cls_name, config = model.text_encoder
    cls = getattr(transformers, cls_name)
    if cls_name.startswith("Qwen2VL"):
        values = dict(config)
        vision = Qwen2VLVisionConfig(**values.pop("vision_config"))
        text = {k: v for k, v in values.items()}
        cfg = transformers.Qwen2VLConfig(vision_config=vision.to_dict(), **text)
    else:
        cfg = cls.config_class(**config)
    return cls(cfg)


def denoiser_inputs(model: PublishedModel, batch: int = 1, device: torch.device | str = "meta",
                    dtype: torch.dtype = torch.bfloat16) -> dict[str, Any]:
    """Keyword arguments of one denoiser forward on the model's native clip (``batch`` 2 is a
    classifier-free-guidance pair). LTX gets the end view's condition tokens too."""
    f, h, w = model.latent_grid
    c, d = model.channels, model.denoiser

    def empty(*shape):
        return torch.zeros(*shape, device=device, dtype=dtype)

    family = model.family
    if family == "cogvideox":
        return dict(hidden_states=empty(batch, f, 2 * c, h, w),
                    encoder_hidden_states=empty(batch, *model.text_tokens()), timestep=empty(batch))
    if family == "wan":
        return dict(hidden_states=empty(batch, d["in_channels"], f, h, w),
                    encoder_hidden_states=empty(batch, *model.text_tokens()), timestep=empty(batch),
                    encoder_hidden_states_image=empty(batch, *model.image_tokens()))
    if family == "wan-vace":
        return dict(hidden_states=empty(batch, c, f, h, w),
                    encoder_hidden_states=empty(batch, *model.text_tokens()),
                    timestep=empty(batch), control_hidden_states=empty(batch, 96, f, h, w),
                    control_hidden_states_scale=torch.ones(len(d["vace_layers"]), device=device))
    if family == "ltx":
        tokens = f * h * w + h * w  # the clip plus the end view's condition tokens
        return dict(hidden_states=empty(batch, tokens, c),
                    encoder_hidden_states=empty(batch, *model.text_tokens()),
                    timestep=empty(batch, tokens),
                    encoder_attention_mask=torch.ones(batch, model.text_tokens()[0], device=device),
                    video_coords=torch.zeros(batch, 3, tokens, device=device))
    if family == "easyanimate":
        return dict(hidden_states=empty(batch, c, f, h, w), timestep=empty(batch),
                    encoder_hidden_states=empty(batch, *model.text_tokens()),
                    inpaint_latents=empty(batch, d["in_channels"] - c, f, h, w))
    if family == "svd":
        return dict(sample=empty(batch, f, 2 * c, h, w), timestep=empty(batch),
                    encoder_hidden_states=empty(batch, *model.image_tokens()),
                    added_time_ids=empty(batch, 3))
    raise ValueError(f"unknown family {family!r}")


def vae_pixels(model: PublishedModel, device: torch.device | str = "meta",
               dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """The clip's pixels as the VAE encodes them (SVD: frames on the batch axis)."""
    if model.family == "svd":
        return torch.zeros(model.frames, 3, model.height, model.width, device=device, dtype=dtype)
    return torch.zeros(1, 3, model.frames, model.height, model.width, device=device, dtype=dtype)


def vae_latents(model: PublishedModel, device: torch.device | str = "meta",
                dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """The clip's latents as the VAE decodes them."""
    f, h, w = model.latent_grid
    if model.family == "svd":
        return torch.zeros(f, model.channels, h, w, device=device, dtype=dtype)
    return torch.zeros(1, model.channels, f, h, w, device=device, dtype=dtype)


SVD_DECODE_CHUNK = 8
"""Frames SVD's temporal decoder decodes at once (the adapter's ``decode_chunk_size``)."""


def vae_decode(vae: DiffusersModel, model: PublishedModel, latents: torch.Tensor) -> torch.Tensor:
    """Decode the clip as the family's adapter does (SVD in chunks of frames)."""
    if model.family == "svd":
        chunks = [latents[i:i + SVD_DECODE_CHUNK] for i in range(0, latents.shape[0], SVD_DECODE_CHUNK)]
        return torch.cat([vae.decode(c, num_frames=c.shape[0]).sample for c in chunks])
    if model.family == "ltx" and vae.config.timestep_conditioning:
        temb = torch.zeros(1, device=latents.device, dtype=latents.dtype)
        return vae.decode(latents, temb).sample
    return vae.decode(latents).sample


def published_schedule(model: PublishedModel, steps: int):
    """The noise schedule the family's adapter runs for ``model`` (no weights needed)."""
    from backend.guidance.schedule import schedule_from_scheduler

    scheduler = build_scheduler(model)
    if model.family == "ltx":
        from .adapters.ltx import ltx_noise_schedule

        timesteps = model.timesteps if model.timesteps and len(model.timesteps) == steps else None
        return ltx_noise_schedule(scheduler, steps, timesteps)
    if model.family == "easyanimate":
        return schedule_from_scheduler(scheduler, steps, mu=1.0)
    return schedule_from_scheduler(scheduler, steps)


_PIPELINES = {"cogvideox": "CogVideoXImageToVideoPipeline", "wan": "WanImageToVideoPipeline",
              "wan-vace": "WanVACEPipeline", "ltx": "LTXConditionPipeline",
              "svd": "StableVideoDiffusionPipeline", "easyanimate": "EasyAnimateInpaintPipeline"}


def build_pipeline(model: PublishedModel, device: torch.device, dtype: torch.dtype):
    """The family's diffusers pipeline with random weights made on ``device`` (no text or image
    encoders: callers pass their outputs; Wan I2V's CLIP output is random of its shape)."""
    with torch.device("meta"):
        denoiser, vae = build_denoiser(model), build_vae(model)
    parts = {}
    for name, module in (("transformer", denoiser), ("vae", vae)):
        module = module.to_empty(device=device).to(dtype)
        with torch.no_grad():
            for p in module.parameters():
                p.normal_(0.0, 0.02)
        parts[name] = module
    if model.family == "svd":
        parts["unet"] = parts.pop("transformer")
        return _diffusers(_PIPELINES["svd"])(image_encoder=None, feature_extractor=None,
                                             scheduler=build_scheduler(model), **parts)
    extra = {"tokenizer": None, "text_encoder": None}
    if model.family == "wan":
        extra.update(image_encoder=None, image_processor=None)
    pipe = _diffusers(_PIPELINES[model.family])(scheduler=build_scheduler(model), **parts, **extra)
    if model.family == "wan":
        shape = model.image_tokens()
        pipe.encode_image = lambda image, dev=None: torch.randn(1, *shape, device=device, dtype=dtype)
    return pipe
