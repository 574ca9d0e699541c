"""Peak GPU bytes of a preset's transition under each memory profile, estimated without a GPU.

The preset's published models (:mod:`backend.models.published`) are built at full size on the
meta device in the preset's dtype. Weights are counted from the parameters (float8 storage by
diffusers' own ``enable_layerwise_casting``, applied to the meta model). Activations are the
peak a :class:`~backend.models.meta_memory.MemoryTracker` sees during each phase of a
transition: the text encoder on the prompt, the VAE encoding the padded prior, one denoiser
forward (both CFG branches in one batch), the VAE decode (tiled where the profile tiles; LTX
decodes in temporal tiles as it streams), the depth model and the inpainting UNet (with CFG).

A phase's peak is what is resident then plus its activations: every part under ``80gb``; the
running part only under model offload; under group offloading, what leaf-level hooks keep
(what non-leaf modules own, the running leaf module and the prefetched next one).

Not modelled: the CUDA context (about 0.3-0.5 GB), the caching allocator's rounding and
fragmentation, library workspaces, and the sampler's own latents and conditioning (below
0.1 GB for these clips). benchmarks/gpu_sampler.py measures the real peak when a GPU is lent.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field

import torch

from configs import model_path

from . import full_size as fs
from .adapters.base import DiffusersModel
from .memory import PROFILES, MemoryProfile, enable_vae_option
from .meta_memory import parameter_bytes, peak_of
from .published import DEPTH_ANYTHING_V2, SD2_INPAINTING, PublishedModel, published_for
from .spec import ModelSpec, load_specs

GB = 1e9


@dataclass
class Component:
    """One part's weights as placed, and the activations of the phases it runs in."""

    weights: int
    """Bytes resident while it runs (float8 where the profile stores it so)."""
    grouped: int
    """Bytes resident under leaf-level group offloading (see :func:`_grouped_bytes`)."""
    phases: dict[str, int] = field(default_factory=dict)
    """Activation peak (bytes) of each phase this part runs."""


def _grouped_bytes(module: torch.nn.Module) -> int:
    """What leaf-level group offloading with a stream keeps on the GPU: the parameters and
    buffers that non-leaf modules own directly (one group), plus the running leaf module and
    the prefetched next one (twice the largest leaf)."""
    branches = [m for m in module.modules() if list(m.children())]
    direct = sum(t.numel() * t.element_size() for m in branches
                 for t in [*m.parameters(recurse=False), *m.buffers(recurse=False)])
    largest = max((parameter_bytes(m) for m in module.modules() if not list(m.children())),
                  default=0)
    return direct + 2 * largest


def _cast(module: DiffusersModel, fp8: bool) -> DiffusersModel:
    """Float8 storage as ``apply_profile`` sets it (computed in the module's dtype)."""
    if fp8 and hasattr(module, "enable_layerwise_casting"):
        module.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn,
                                        compute_dtype=module.dtype)
    return module


def video_components(model: PublishedModel, spec: ModelSpec, fp8: bool, tiled: bool,
                     cfg: bool) -> dict[str, Component]:
    """Text encoder, denoiser and VAE of the preset's video model, measured on meta."""
    dtype = spec.torch_dtype
    with torch.device("meta"):
        # (``to("meta")``: legacy ``torch.Tensor`` parameters ignore the device context)
        denoiser = _cast(fs.build_denoiser(model).to("meta", dtype), fp8)
        vae = fs.build_vae(model).to("meta", dtype)
        text = fs.build_text_encoder(model)
    parts: dict[str, Component] = {}
    kwargs = fs.denoiser_inputs(model, batch=2 if cfg else 1, dtype=dtype)
    den = Component(parameter_bytes(denoiser), _grouped_bytes(denoiser))
    den.phases["denoise"], _ = peak_of(lambda: denoiser(**kwargs, return_dict=False))
    parts["denoiser"] = den
    if tiled:
        enable_vae_option(vae, "enable_tiling")
    if model.family == "ltx":  # the engine streams LTX clips in the VAE's temporal tiles
        vae.use_framewise_decoding = True
    v = Component(parameter_bytes(vae), _grouped_bytes(vae))
    v.phases["encode"], _ = peak_of(lambda: vae.encode(fs.vae_pixels(model, dtype=dtype)))
    v.phases["decode"], _ = peak_of(lambda: fs.vae_decode(vae, model, fs.vae_latents(model, dtype=dtype)))
    parts["vae"] = v
    if text is not None:
        text = text.to(dtype)
        t = Component(parameter_bytes(text), _grouped_bytes(text))
        ids = torch.zeros(1, model.text_tokens()[0], dtype=torch.long, device="meta")
        t.phases["text"], _ = peak_of(lambda: text(input_ids=ids))
        parts["text_encoder"] = t
    return parts


def other_components(specs: dict[str, ModelSpec], height: int, width: int,
                     skipped: list[str]) -> dict[str, Component]:
    """The depth model and the inpainting pipeline of a preset (one call each per transition);
    sources without a published architecture here are named in ``skipped``."""
    import diffusers
    import transformers

    parts: dict[str, Component] = {}
    depth = specs.get("depth")
    if depth is not None and depth.source in DEPTH_ANYTHING_V2:
        c = DEPTH_ANYTHING_V2[depth.source]
        # Library-stub gaps below: Dinov2Config takes out_indices through **kwargs; the
        # models' ``to`` is decorated (transformers) or hidden by ModelMixin (diffusers).
        backbone = transformers.Dinov2Config(**c["backbone"], patch_size=14, image_size=518,  # type: ignore[call-arg]
                                             out_indices=_out_indices(c["backbone"]),
                                             reshape_hidden_states=False)
        config = transformers.DepthAnythingConfig(
            backbone_config=backbone, neck_hidden_sizes=c["neck_hidden_sizes"],
            fusion_hidden_size=c["fusion_hidden_size"], reassemble_hidden_size=c["backbone"]["hidden_size"])
        with torch.device("meta"):
            net = transformers.DepthAnythingForDepthEstimation(config).to(depth.torch_dtype)  # type: ignore[arg-type]
        side = 518 * max(height, width) // min(height, width) // 14 * 14
        pixels = torch.zeros(1, 3, 518, side, device="meta", dtype=depth.torch_dtype)
        part = Component(parameter_bytes(net), parameter_bytes(net))
        part.phases["depth"], _ = peak_of(lambda: net(pixel_values=pixels))
        parts["depth"] = part
    elif depth is not None:
        skipped.append(f"depth {depth.source}")
    inpaint = specs.get("inpaint")
    if inpaint is not None and "stable-diffusion-2-inpainting" in inpaint.source:
        with torch.device("meta"):
            unet: DiffusersModel = diffusers.UNet2DConditionModel(**SD2_INPAINTING["unet"])
            unet = unet.to(inpaint.torch_dtype)
            text = transformers.CLIPTextModel(transformers.CLIPTextConfig(**SD2_INPAINTING["text_encoder"]))
            vae: DiffusersModel = diffusers.AutoencoderKL(**SD2_INPAINTING["vae"])
            vae = vae.to(inpaint.torch_dtype)
        h, w = height // 8, width // 8
        sample = torch.zeros(2, 9, h, w, device="meta", dtype=inpaint.torch_dtype)
        context = torch.zeros(2, 77, 1024, device="meta", dtype=inpaint.torch_dtype)
        text = text.to(inpaint.torch_dtype)  # type: ignore[arg-type]
        weights = parameter_bytes(unet) + parameter_bytes(text) + parameter_bytes(vae)
        part = Component(weights, weights)
        part.phases["inpaint"], _ = peak_of(lambda: unet(sample, 500, encoder_hidden_states=context))
        parts["inpaint"] = part
    elif inpaint is not None:
        skipped.append(f"inpaint {inpaint.source}")
    return parts


def _out_indices(backbone: dict) -> list[int]:
    n = backbone["num_hidden_layers"]
    return [n // 4 * k for k in (1, 2, 3)] + [n]


@dataclass
class PresetEstimate:
    preset: str
    model: str
    peak_gb: dict[str, float]
    """Estimated peak per profile."""
    phases_gb: dict[str, dict[str, float]]
    """Per profile, each phase's resident plus activation bytes."""
    skipped: list[str] = field(default_factory=list)
    """Roles left out (no published architecture for their source here)."""


def phase_peaks(profile: MemoryProfile, parts: dict[str, Component]) -> dict[str, int]:
    """Each phase's peak under a profile: resident weights plus that phase's activations."""
    def held(c: Component) -> int:
        return c.grouped if profile.placement == "group_offload" else c.weights

    everything = sum(c.weights for c in parts.values())
    peaks = {}
    for part in parts.values():
        for phase, activations in part.phases.items():
            resident = everything if profile.placement == "resident" else held(part)
            peaks[phase] = resident + activations
    return peaks


def load_preset(name: str) -> dict[str, ModelSpec]:
    return load_specs(model_path(name))


def estimate_preset(name: str, profiles: tuple[str, ...] = tuple(PROFILES)) -> PresetEstimate:
    """Peak GPU memory of one transition of ``configs/models/<name>.toml`` per profile."""
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # casting random meta models is not news
    try:
        return _estimate(name, profiles)
    finally:
        diffusers_logging.set_verbosity(level)


def _estimate(name: str, profiles: tuple[str, ...]) -> PresetEstimate:
    specs = load_preset(name)
    video = specs["video"]
    model = published_for(video.source)
    with open(model_path(name), "rb") as f:
        guidance = tomllib.load(f)["video"].get("guidance", {})
    cfg = float(guidance.get("guidance_scale", 1.0)) > 1.0
    measured: dict[tuple[bool, bool], dict[str, Component]] = {}
    skipped: list[str] = []
    others = other_components(specs, model.height, model.width, skipped)
    peaks, phases = {}, {}
    for profile_name in profiles:
        profile = PROFILES[profile_name]
        key = (profile.fp8_storage, profile.vae_tiling)
        if key not in measured:
            measured[key] = video_components(model, video, *key, cfg=cfg) | others
        per_phase = phase_peaks(profile, measured[key])
        peaks[profile_name] = round(max(per_phase.values()) / GB, 2)
        phases[profile_name] = {k: round(v / GB, 2) for k, v in per_phase.items()}
    return PresetEstimate(name, model.name, peaks, phases, skipped)
