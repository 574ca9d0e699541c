"""LTX-Video through ``LTXConditionPipeline`` components (Lightricks/LTX-Video-0.9.x, distilled).

Latents: (B, C, F', h, w) natively, normalised by the VAE's per-channel mean and std, packed
into one token per latent cell (patch 1); we permute to canonical (B, F', C, h, w).
F' = (F - 1) / 8 + 1 (8k+1 frames), 32x spatial for the released VAE. Parameterisation: flow
matching (the network predicts eps - x0) on the pipeline's linear-quadratic sigma schedule, or
the fixed timesteps of a distilled checkpoint (``timesteps`` option).

Conditioning, as the pipeline does it: the first frame is hard-conditioned (its latent tokens
see timestep 0 and are not denoised: the adapter reports the clean image latents as the network's
estimate there), and with a prior the end view is a condition at the last frame index (extra
clean tokens placed at that frame's video coordinates, dropped from the output).
"""

from __future__ import annotations

import numpy as np
import torch

from backend.guidance.frames import image_to_tensor
from backend.guidance.prior import PriorVideo
from backend.guidance.schedule import NoiseSchedule

from .base import CompressionRatios, Conditioning, PromptEmbeds, VideoFamilyAdapter


class LTXAdapter(CompressionRatios, VideoFamilyAdapter):
    family = "ltx"
    pipeline_class_name = "LTXConditionPipeline"
    default_max_sequence_length = 128
    supports_end_image = True

    def __init__(self, pipe, timesteps: tuple[float, ...] | list[float] | None = None,
                 frame_rate: int = 25, end_condition: bool = True) -> None:
        super().__init__(pipe)
        self.timesteps = None if timesteps is None else tuple(float(t) for t in timesteps)
        self.frame_rate = frame_rate
        self.end_condition = end_condition
        self._sigma_at: dict[float, float] = {}
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
        return 512, 768

    @property
    def frame_rule(self) -> str:
        return f"{self.temporal_compression}k+1 frames"

    # ------------------------------------------------------------------ schedule
    def sampling_scheduler(self):
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler.from_config(self.pipe.scheduler.config)

    def noise_schedule(self, num_inference_steps: int) -> NoiseSchedule:
        schedule = ltx_noise_schedule(self.sampling_scheduler(), num_inference_steps,
                                      self.timesteps)
        # Given timesteps are used as given while their sigmas may be shifted: keep the pairs.
        pairs = zip(schedule.timesteps, schedule.sigmas[:-1], strict=True)
        self._sigma_at = {float(t): float(s) for t, s in pairs}
        return schedule

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
    def _stats(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, float]:
        mean = self.vae.latents_mean.view(1, -1, 1, 1, 1).to(device, torch.float32)
        std = self.vae.latents_std.view(1, -1, 1, 1, 1).to(device, torch.float32)
        return mean, std, float(self.vae.config.scaling_factor)

    def _encode_native(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, F, H, W) in [-1, 1] -> normalised (B, C, F', h, w) float32 (posterior mode)."""
        z = self.vae.encode(pixels.to(self.device, self.vae.dtype)).latent_dist.mode().float()
        mean, std, k = self._stats(z.device)
        return (z - mean) * k / std

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        pixels = video.permute(1, 0, 2, 3).unsqueeze(0)
        return self._encode_native(pixels).permute(0, 2, 1, 3, 4)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        z = latents.to(self.device, torch.float32).permute(0, 2, 1, 3, 4)
        mean, std, k = self._stats(z.device)
        z = (z * std / k + mean).to(self.vae.dtype)
        timestep = None
        if self.vae.config.timestep_conditioning:
            timestep = torch.zeros(1, device=z.device, dtype=z.dtype)
        video = self.vae.decode(z, timestep, return_dict=False)[0]
        return video[0].permute(1, 0, 2, 3).float()

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
        first_latents = self._encode_native(first).permute(0, 2, 1, 3, 4)  # 1 1 C h w
        coords = self._coords(frames, h, w, 0)
        extra = None
        if prior is not None and self.end_condition:
            end = image_to_tensor(prior.frames[-1], device, torch.float32).unsqueeze(2)
            extra = self.pipe._pack_latents(self._encode_native(end))  # 1 hw C
            coords = torch.cat([self._coords(1, h, w, num_frames - 1), coords], dim=2)
        text, mask = prompt.positive, prompt.positive_mask
        if cfg:
            text = torch.cat([prompt.negative, prompt.positive])
            mask = torch.cat([prompt.negative_mask, prompt.positive_mask])
            coords = torch.cat([coords, coords])
        return Conditioning(cfg, {"first": first_latents, "extra": extra, "coords": coords,
                                  "text": text.to(self.dtype), "text_mask": mask,
                                  "shape": (frames, h, w)})

    def forward(self, model_input: torch.Tensor, timestep: torch.Tensor,
                cond: Conditioning) -> torch.Tensor:
        c = cond.tensors
        frames, h, w = c["shape"]
        batch = model_input.shape[0]
        tokens = self.pipe._pack_latents(model_input.permute(0, 2, 1, 3, 4))
        per_token = timestep.to(tokens.device, torch.float32).reshape(1, 1).repeat(
            batch, tokens.shape[1]).clone()
        per_token[:, : h * w] = 0.0  # the hard-conditioned first frame is clean
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
        velocity = -out[:, n_extra:]  # the pipeline steps with -noise_pred
        velocity = self.pipe._unpack_latents(velocity, frames, h, w).permute(0, 2, 1, 3, 4)
        # The first frame is not denoised: report its clean latents as the estimate there.
        s = self._sigma_at.get(float(timestep), float(timestep) / 1000.0)
        first = (model_input[:, :1].float() - c["first"].to(model_input.device)) / s
        return torch.cat([first.to(velocity.dtype), velocity[:, 1:]], dim=1)


def ltx_noise_schedule(scheduler, num_inference_steps: int,
                       timesteps: tuple[float, ...] | None = None) -> NoiseSchedule:
    """LTXConditionPipeline's schedule: linear-quadratic sigmas (or a distilled checkpoint's
    fixed timesteps), as ``set_timesteps`` leaves them on a flow-matching Euler scheduler."""
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
    retrieve_timesteps(scheduler, num_inference_steps, "cpu", values)
    sigmas = scheduler.sigmas.detach().to("cpu", torch.float64)
    return NoiseSchedule("flow", "flow", scheduler.timesteps.detach().to("cpu"), 1.0 - sigmas, sigmas)
