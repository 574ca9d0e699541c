"""LTX-Video through ``LTXConditionPipeline`` components (Lightricks/LTX-Video 0.9.x, distilled).

Latents: (B, C, F', h, w) natively, normalised by the VAE's per-channel mean and std, packed
into one token per latent cell (patch 1); we permute to canonical (B, F', C, h, w).
F' = (F - 1) / 8 + 1 (8k+1 frames), 32x spatial for the released VAE. Parameterisation: flow
matching; the network's output is the velocity eps - x0 (the pipeline hands ``-noise_pred`` to
a per-token scheduler branch that steps by sigma - sigma_next, which is the same Euler step).

Conditioning, as the pipeline does it: kept latent cells carry clean values at timestep 0 and
are never updated. The first frame is kept (its tokens are the image's latents); the end view
of a transition is extra tokens at the last frame's video coordinates, dropped from the output.
With ``prior_tokens`` every latent cell the rendered prior sees is kept too: the prior rides in
the network's own forward, a step stays one forward. The sampler sees x0_hat = z on a kept cell,
which holds its x_t on the noised condition with the run's own initial noise.
``prior_strength`` k < 1 feeds a kept cell as (1 - (1 - k)) z + (1 - k) eps at timestep
(1 - k) * 1000 while the step's sigma is at least 1 - k, then denoises it with the rest from the
step's own noise level (the pipeline instead keeps its value at level 1 - k for that step);
k = 1, the default, is exactly the pipeline's. Encoded latents are normalised without the VAE's
``scaling_factor`` and decoded with it, as the pipeline does (1.0 in every released VAE).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import numpy as np
import torch

from backend.guidance.frames import image_to_tensor
from backend.guidance.prior import PriorVideo
from backend.guidance.schedule import NoiseSchedule, randn_like

from .base import CompressionRatios, Conditioning, PromptEmbeds, VideoFamilyAdapter


class LTXAdapter(CompressionRatios, VideoFamilyAdapter):
    family = "ltx"
    pipeline_class_name = "LTXConditionPipeline"
    default_max_sequence_length = 128
    supports_end_image = True

    def __init__(self, pipe, timesteps: tuple[float, ...] | list[float] | None = None,
                 frame_rate: int = 25, end_condition: bool = True, decode_timestep: float = 0.0,
                 decode_noise_scale: float | None = None, prior_tokens: bool = False,
                 prior_strength: float = 1.0) -> None:
        super().__init__(pipe)
        self.timesteps = None if timesteps is None else tuple(float(t) for t in timesteps)
        self.frame_rate = frame_rate
        self.end_condition = end_condition
        self.decode_timestep = float(decode_timestep)
        self.decode_noise_scale = (self.decode_timestep if decode_noise_scale is None
                                   else float(decode_noise_scale))
        self.prior_tokens = prior_tokens
        if not 0.0 < prior_strength <= 1.0:
            raise ValueError(f"ltx: prior_strength must be in (0, 1], got {prior_strength}")
        self.prior_strength = float(prior_strength)
        if self._patch != (1, 1):
            raise ValueError("ltx: only patch size 1 transformers (the released ones) are supported")

    @property
    def _patch(self) -> tuple[int, int]:
        return (int(self.pipe.transformer_spatial_patch_size),
                int(self.pipe.transformer_temporal_patch_size))

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    def default_size(self) -> tuple[int, int]:
        return 480, 704

    @property
    def frame_rule(self) -> str:
        return f"{self.temporal_compression}k+1 frames"

    # ------------------------------------------------------------------ schedule
    def sampling_scheduler(self):
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler.from_config(self.pipe.scheduler.config)

    def noise_schedule(self, num_inference_steps: int) -> NoiseSchedule:
        return ltx_noise_schedule(self.sampling_scheduler(), num_inference_steps, self.timesteps)

    # ------------------------------------------------------------------ text
    def encode_prompt(self, prompt: str, negative_prompt: str, cfg: bool,
                      max_sequence_length: int | None = None) -> PromptEmbeds:
        length = max_sequence_length or self.default_max_sequence_length
        pos, pos_mask, neg, neg_mask = self.pipe.encode_prompt(
            prompt=prompt, negative_prompt=negative_prompt, do_classifier_free_guidance=cfg,
            num_videos_per_prompt=1, max_sequence_length=length, device=self.device,
        )
        return PromptEmbeds(pos, neg if cfg else None, pos_mask, neg_mask if cfg else None)

    # ------------------------------------------------------------------ latents
    def _stats(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.vae.latents_mean.view(1, -1, 1, 1, 1).to(device, torch.float32)
        std = self.vae.latents_std.view(1, -1, 1, 1, 1).to(device, torch.float32)
        return mean, std

    def _encode_native(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, F, H, W) in [-1, 1] -> normalised (B, C, F', h, w) float32 (posterior mode)."""
        z = self.vae.encode(pixels.to(self.device, self.vae.dtype)).latent_dist.mode().float()
        mean, std = self._stats(z.device)
        return (z - mean) / std

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        pixels = video.permute(1, 0, 2, 3).unsqueeze(0)
        return self._encode_native(pixels).permute(0, 2, 1, 3, 4)

    def _to_vae(self, latents: torch.Tensor, generator: torch.Generator | None) -> tuple:
        """Canonical latents -> the decoder's input and timestep (decode noise mixed in)."""
        z = latents.to(self.device, torch.float32).permute(0, 2, 1, 3, 4)
        mean, std = self._stats(z.device)
        z = z * std / float(self.vae.config.scaling_factor) + mean
        timestep = None
        if self.vae.config.timestep_conditioning:
            noise = randn_like(z, generator)
            z = (1.0 - self.decode_noise_scale) * z + self.decode_noise_scale * noise
            timestep = torch.full((1,), self.decode_timestep, device=z.device, dtype=self.vae.dtype)
        return z.to(self.vae.dtype), timestep

    def decode_latents(self, latents: torch.Tensor,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        z, timestep = self._to_vae(latents, generator)
        video = self.vae.decode(z, timestep, return_dict=False)[0]
        return video[0].permute(1, 0, 2, 3).float()

    def iter_decode(self, latents: torch.Tensor, generator: torch.Generator | None = None
                    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Decode in the VAE's temporal tiles, yielding (first frame, frames) as each piece is
        final. The pieces concatenate to what the VAE's own framewise decoding returns (its
        tiles and blending, diffusers' ``_temporal_tiled_decode``), so the first frames are
        shown after one tile instead of the whole clip."""
        z, temb = self._to_vae(latents, generator)
        vae = self.vae
        t_ratio = self.temporal_compression
        tile = vae.tile_sample_min_num_frames // t_ratio
        stride = vae.tile_sample_stride_num_frames // t_ratio
        blend = vae.tile_sample_min_num_frames - vae.tile_sample_stride_num_frames
        frames = z.shape[2]
        total = (frames - 1) * t_ratio + 1
        if frames <= tile:  # the VAE decodes short clips in one piece
            yield 0, self.decode_latents(latents, generator)
            return
        previous, start = None, 0
        for i in range(0, frames, stride):
            piece = z[:, :, i:i + tile + 1]
            decoded = vae.decoder(piece, temb) if not vae.use_tiling else \
                vae.tiled_decode(piece, temb, return_dict=True).sample
            if i > 0:
                decoded = decoded[:, :, :-1]
            if previous is None:
                out = decoded[:, :, :vae.tile_sample_stride_num_frames + 1]
            else:  # blend_t writes into ``decoded``, which the next tile then blends with
                out = vae.blend_t(previous, decoded, blend)[:, :, :vae.tile_sample_stride_num_frames]
            previous = decoded
            out = out[:, :, :max(0, total - start)]
            if out.shape[2]:
                yield start, out[0].permute(1, 0, 2, 3).float()
                start += out.shape[2]

    def _coords(self, frames: int, h: int, w: int, frame_index: int) -> torch.Tensor:
        ids = self.pipe._prepare_video_ids(1, frames, h, w, device=self.device)
        ids = self.pipe._scale_video_ids(ids, self.spatial_compression, self.temporal_compression,
                                         frame_index, self.device).float()
        ids[:, 0] = ids[:, 0] / self.frame_rate
        return ids

    # ------------------------------------------------------------------ conditioning
    def prepare_conditioning(self, image: np.ndarray, num_frames: int, height: int, width: int,
                             prompt: PromptEmbeds, cfg: bool, generator: torch.Generator | None,
                             prior: PriorVideo | None = None) -> Conditioning:
        device = self.device
        frames = self.latent_frames(num_frames)
        h, w = height // self.spatial_compression, width // self.spatial_compression
        first = image_to_tensor(image, device, torch.float32).unsqueeze(2)
        kept = torch.zeros(1, frames, self.latent_channels, h, w, device=device)
        kept[:, :1] = self._encode_native(first).permute(0, 2, 1, 3, 4)
        strength = torch.zeros(1, frames, 1, h, w, device=device)
        strength[:, :1] = 1.0
        coords = self._coords(frames, h, w, 0)
        extra = None
        if prior is not None and self.end_condition and not self.prior_tokens:
            end = image_to_tensor(prior.frames[-1], device, torch.float32).unsqueeze(2)
            extra = self.pipe._pack_latents(self._encode_native(end))  # 1 hw C
            coords = torch.cat([self._coords(1, h, w, num_frames - 1), coords], dim=2)
        text, mask = prompt.text(cfg), prompt.mask(cfg)
        if cfg:
            coords = torch.cat([coords, coords])
        return Conditioning(cfg, {"kept": kept, "strength": strength, "extra": extra,
                                  "coords": coords, "text": text.to(self.dtype),
                                  "text_mask": mask, "shape": (frames, h, w)})

    @property
    def conditions_on_prior(self) -> bool:
        return self.prior_tokens

    def attach_prior(self, cond: Conditioning, prior_latents: torch.Tensor,
                     mask: torch.Tensor) -> None:
        """With ``prior_tokens``: the prior's visible latent cells become kept cells."""
        if not self.prior_tokens:
            return
        c = cond.tensors
        visible = (mask > 0.5) & (c["strength"] < self.prior_strength)
        c["strength"] = torch.where(visible, torch.full_like(c["strength"], self.prior_strength),
                                    c["strength"])
        c["kept"] = torch.where(visible, prior_latents.to(c["kept"]), c["kept"])

    def forward(self, model_input: torch.Tensor, timestep: torch.Tensor,
                cond: Conditioning) -> torch.Tensor:
        c = cond.tensors
        frames, h, w = c["shape"]
        batch = model_input.shape[0]
        sigma = float(timestep) / 1000.0
        kept, strength = c["kept"].to(model_input.device), c["strength"].to(model_input.device)
        # 1. Kept cells still frozen at this sigma: their condition, noised to (1 - k)
        frozen = (strength > 0) & (sigma - 1e-6 >= 1.0 - strength)
        x = model_input.float()
        eps = (x - (1.0 - sigma) * kept) / max(sigma, 1e-12)
        level = 1.0 - strength
        fed = torch.where(frozen, (1.0 - level) * kept + level * eps, x)
        per_cell = torch.where(frozen, level * 1000.0, torch.full_like(level, float(timestep)))
        # 2. Tokens, with the extra (end view) tokens first, as the pipeline orders them
        tokens = self.pipe._pack_latents(fed.to(model_input.dtype).permute(0, 2, 1, 3, 4))
        per_token = self.pipe._pack_latents(per_cell.permute(0, 2, 1, 3, 4))[..., 0]
        per_token = per_token.expand(batch, -1)
        n_extra = 0
        if c["extra"] is not None:
            extra = c["extra"].to(tokens.dtype).expand(batch, -1, -1)
            n_extra = extra.shape[1]
            tokens = torch.cat([extra, tokens], dim=1)
            per_token = torch.cat([per_token.new_zeros(batch, n_extra), per_token], dim=1)
        out = self.denoiser(
            hidden_states=tokens, encoder_hidden_states=c["text"], timestep=per_token,
            encoder_attention_mask=c["text_mask"], video_coords=c["coords"], return_dict=False,
        )[0]
        velocity = self.pipe._unpack_latents(out[:, n_extra:], frames, h, w).permute(0, 2, 1, 3, 4)
        # 3. Frozen cells report x0_hat = their condition: v = (x_t - z) / sigma
        held = (x - kept) / max(sigma, 1e-12)
        return torch.where(frozen, held.to(velocity.dtype), velocity)


def ltx_noise_schedule(scheduler, num_inference_steps: int,
                       timesteps: tuple[float, ...] | None = None) -> NoiseSchedule:
    """LTXConditionPipeline's schedule: linear-quadratic sigmas (or a distilled checkpoint's
    fixed timesteps). The pipeline steps every token from sigma = t / 1000 to the largest
    scheduler sigma below it (its per-token branch); that chain is the schedule, and a
    scheduler whose sigmas break it (shifted sigmas) is refused rather than silently changed."""
    from diffusers.pipelines.ltx.pipeline_ltx_condition import (
        linear_quadratic_schedule,
        retrieve_timesteps,
    )

    if timesteps is not None:
        if len(timesteps) != num_inference_steps:
            raise ValueError(f"ltx: this checkpoint runs {len(timesteps)} steps (its distilled "
                             f"timesteps), got {num_inference_steps}")
        values = list(timesteps)
    else:
        values = (linear_quadratic_schedule(num_inference_steps) * 1000).tolist()
    with scheduler_logger_quiet():  # the chain is checked below: its consistency warning is moot
        # diffusers annotates timesteps as ints; the LTX pipeline itself passes floats
        retrieve_timesteps(scheduler, num_inference_steps, "cpu", values)  # type: ignore[arg-type]
    table = scheduler.sigmas.detach().to("cpu", torch.float64)
    steps = scheduler.timesteps.detach().to("cpu")
    current = steps.to(torch.float64) / float(scheduler.config.num_train_timesteps)
    following = [float(torch.where(table < s - 1e-6, table, table.new_zeros(())).max())
                 for s in current.tolist()]
    if any(abs(n - s) > 1e-6 for n, s in zip(following[:-1], current[1:].tolist(), strict=True)):
        raise ValueError("ltx: the scheduler shifts its sigmas away from t / 1000; "
                         "LTXConditionPipeline steps tokens at t / 1000, use an unshifted "
                         "FlowMatchEulerDiscreteScheduler (the released configs are)")
    sigmas = torch.cat([current, torch.tensor([following[-1]], dtype=torch.float64)])
    return NoiseSchedule("flow", "flow", steps, 1.0 - sigmas, sigmas)


@contextlib.contextmanager
def scheduler_logger_quiet():
    """Silence diffusers' flow-match scheduler warnings for the duration."""
    log = logging.getLogger("diffusers.schedulers.scheduling_flow_match_euler_discrete")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)
