"""EasyAnimate InP (alibaba-pai/EasyAnimateV5.1-*-InP-diffusers), the paper's model family.

Latents: (B, C, F', h, w) natively, scaled by the MagVIT VAE's ``scaling_factor``; we permute
to canonical (B, F', C, h, w). F' = (F - 1) / 4 + 1, 8x spatial. Parameterisation: flow
matching (V5.1; the release ran V3 on a VE Euler schedule, which the sampler's rule covers
too). Conditioning as in the release's interpolation mode: an inpainting video whose first
frame is I_0 and, with a prior, whose last frame is the end view I_N, every other frame to be
generated (mask 1, pixels -1); its VAE latents and the mask resized onto the latent grid are
the transformer's ``inpaint_latents``.
"""

from __future__ import annotations

import numpy as np
import torch

from backend.guidance.frames import image_to_tensor
from backend.guidance.prior import PriorVideo
from backend.guidance.schedule import NoiseSchedule, schedule_from_scheduler

from .base import CompressionRatios, Conditioning, PromptEmbeds, VideoFamilyAdapter


class EasyAnimateAdapter(CompressionRatios, VideoFamilyAdapter):
    family = "easyanimate"
    pipeline_class_name = "EasyAnimateInpaintPipeline"
    default_max_sequence_length = 256
    supports_end_image = True

    def __init__(self, pipe, noise_aug_strength: float = 0.0563) -> None:
        super().__init__(pipe)
        self.noise_aug_strength = noise_aug_strength

    @property
    def size_multiple(self) -> int:
        return self.spatial_compression * int(self.denoiser.config.patch_size)

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    def default_size(self) -> tuple[int, int]:
        return 512, 512

    def sampling_scheduler(self):
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler.from_config(self.pipe.scheduler.config)

    def noise_schedule(self, num_inference_steps: int) -> NoiseSchedule:
        # EasyAnimateInpaintPipeline sets a flow scheduler's timesteps with mu = 1 (used when
        # the scheduler shifts dynamically, ignored otherwise).
        return schedule_from_scheduler(self.sampling_scheduler(), num_inference_steps, mu=1.0)

    def encode_prompt(self, prompt: str, negative_prompt: str, cfg: bool,
                      max_sequence_length: int | None = None) -> PromptEmbeds:
        length = max_sequence_length or self.default_max_sequence_length
        pos, neg, _, _ = self.pipe.encode_prompt(
            prompt=prompt, negative_prompt=negative_prompt, do_classifier_free_guidance=cfg,
            device=self.device, max_sequence_length=length,
        )
        return PromptEmbeds(pos, neg if cfg else None)

    def _encode_native(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, F, H, W) in [-1, 1] -> scaled (B, C, F', h, w) float32 (posterior mode)."""
        z = self.vae.encode(pixels.to(self.device, self.vae.dtype))[0].mode()
        return z.float() * float(self.vae.config.scaling_factor)

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        return self._encode_native(video.permute(1, 0, 2, 3).unsqueeze(0)).permute(0, 2, 1, 3, 4)

    def decode_latents(self, latents: torch.Tensor,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        z = latents.to(self.device, torch.float32).permute(0, 2, 1, 3, 4)
        z = (z / float(self.vae.config.scaling_factor)).to(self.vae.dtype)
        video = self.vae.decode(z, return_dict=False)[0]
        return video[0].permute(1, 0, 2, 3).float()

    def inpaint_inputs(self, image: np.ndarray, num_frames: int, height: int, width: int,
                       prior: PriorVideo | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The inpainting video (1, 3, F, H, W), -1 where generated, and its mask (1 = generate)."""
        device = self.device
        video = -torch.ones(1, 3, num_frames, height, width, device=device)
        mask = torch.ones(1, 1, num_frames, height, width, device=device)
        video[:, :, 0] = image_to_tensor(image, device, torch.float32)[0]
        mask[:, :, 0] = 0.0
        if prior is not None:
            video[:, :, -1] = image_to_tensor(prior.frames[-1], device, torch.float32)[0]
            mask[:, :, -1] = 0.0
        return video, mask

    def prepare_conditioning(self, image: np.ndarray, num_frames: int, height: int, width: int,
                             prompt: PromptEmbeds, cfg: bool, generator: torch.Generator | None,
                             prior: PriorVideo | None = None) -> Conditioning:
        from diffusers.pipelines.easyanimate.pipeline_easyanimate_inpaint import (
            add_noise_to_reference_video,
            resize_mask,
        )

        video, mask = self.inpaint_inputs(image, num_frames, height, width, prior)
        if self.denoiser.config.add_noise_in_inpaint_model:
            video = add_noise_to_reference_video(video, self.noise_aug_strength, generator)
        video_latents = self._encode_native(video)
        scale = float(self.vae.config.scaling_factor)
        if self.denoiser.config.resize_inpaint_mask_directly:
            # The first frame has its own latent frame (causal VAE); released configs say so
            # with ``cache_mag_vae``, which the diffusers class does not declare.
            first_alone = self.vae.config.get("cache_mag_vae", True)
            mask_latents = resize_mask(1.0 - mask, video_latents, first_alone)
            mask_latents = mask_latents * scale
        else:
            mask_latents = self._encode_native(torch.tile(mask, (1, 3, 1, 1, 1)))
        inpaint = torch.cat([mask_latents, video_latents], dim=1).to(self.dtype)
        text = prompt.text(cfg)
        if cfg:
            inpaint = torch.cat([inpaint, inpaint])
        return Conditioning(cfg, {"inpaint": inpaint, "text": text.to(self.dtype)})

    def forward(self, model_input: torch.Tensor, timestep: torch.Tensor,
                cond: Conditioning) -> torch.Tensor:
        c = cond.tensors
        hidden = model_input.permute(0, 2, 1, 3, 4)
        t = timestep.to(hidden.device, hidden.dtype).reshape(1).expand(hidden.shape[0])
        out = self.denoiser(hidden, t, encoder_hidden_states=c["text"],
                            inpaint_latents=c["inpaint"], return_dict=False)[0]
        if out.shape[1] != self.latent_channels:
            out = out.chunk(2, dim=1)[0]
        return out.permute(0, 2, 1, 3, 4)
