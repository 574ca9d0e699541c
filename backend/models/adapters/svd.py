"""Stable Video Diffusion (stabilityai/stable-video-diffusion-img2vid(-xt)).

Latents: (B, F, C, h, w) natively (canonical), one latent per frame, 8x spatial; any frame
count (trained at 14 / 25). Parameterisation: v-prediction on an EDM (variance-exploding)
schedule; inputs scaled by 1 / sqrt(sigma^2 + 1). Conditioning: CLIP image embedding (zeros
for the unconditional branch), the noise-augmented first frame's latents repeated over time
on channels, and (fps, motion bucket, noise augmentation) time ids. No text: prompts are
ignored.
"""

from __future__ import annotations

import numpy as np
import PIL.Image
import torch

from backend.guidance.frames import image_to_tensor
from backend.guidance.prior import PriorVideo

from .base import Conditioning, DiffusersModel, PromptEmbeds, VideoFamilyAdapter


class SVDAdapter(VideoFamilyAdapter):
    family = "svd"
    pipeline_class_name = "StableVideoDiffusionPipeline"

    def __init__(self, pipe, fps: int = 7, motion_bucket_id: int = 127,
                 noise_aug_strength: float = 0.02, decode_chunk_size: int = 8) -> None:
        super().__init__(pipe)
        self.fps = fps
        self.motion_bucket_id = motion_bucket_id
        self.noise_aug_strength = noise_aug_strength
        self.decode_chunk_size = decode_chunk_size

    @property
    def denoiser(self) -> DiffusersModel:
        return self.pipe.unet

    @property
    def temporal_compression(self) -> int:
        return 1

    @property
    def spatial_compression(self) -> int:
        return int(self.pipe.vae_scale_factor)

    @property
    def size_multiple(self) -> int:
        return self.spatial_compression * 2 ** (len(self.denoiser.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    def default_size(self) -> tuple[int, int]:
        return 576, 1024

    def sampling_scheduler(self):
        from diffusers import EulerDiscreteScheduler

        return EulerDiscreteScheduler.from_config(self.pipe.scheduler.config)

    def encode_prompt(self, prompt: str, negative_prompt: str, cfg: bool,
                      max_sequence_length: int | None = None) -> PromptEmbeds:
        return PromptEmbeds(None, None)

    def prepare_conditioning(self, image: np.ndarray, num_frames: int, height: int, width: int,
                             prompt: PromptEmbeds, cfg: bool, generator: torch.Generator | None,
                             prior: PriorVideo | None = None) -> Conditioning:
        device = self.device
        embeds = self.pipe._encode_image(PIL.Image.fromarray(image), device, 1, cfg)
        pixels = image_to_tensor(image, device, torch.float32)
        noise = torch.randn(pixels.shape, generator=generator,
                            device=generator.device if generator is not None else device)
        pixels = pixels + self.noise_aug_strength * noise.to(device)
        image_latents = self.pipe._encode_vae_image(pixels, device, 1, cfg)
        image_latents = image_latents.unsqueeze(1).repeat(1, num_frames, 1, 1, 1)
        time_ids = self.pipe._get_add_time_ids(
            self.fps - 1, self.motion_bucket_id, self.noise_aug_strength, self.dtype, 1, 1, cfg
        ).to(device)
        return Conditioning(cfg, {"image_embeds": embeds.to(self.dtype),
                                  "image_latents": image_latents.to(self.dtype),
                                  "time_ids": time_ids})

    def forward(self, model_input: torch.Tensor, timestep: torch.Tensor,
                cond: Conditioning) -> torch.Tensor:
        c = cond.tensors
        hidden = torch.cat([model_input, c["image_latents"]], dim=2)
        return self.denoiser(
            hidden, timestep.to(hidden.device), encoder_hidden_states=c["image_embeds"],
            added_time_ids=c["time_ids"], return_dict=False,
        )[0]

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        pixels = video.to(self.device, self.vae.dtype)
        chunks = [self.vae.encode(pixels[i:i + self.decode_chunk_size]).latent_dist.mode()
                  for i in range(0, pixels.shape[0], self.decode_chunk_size)]
        return (torch.cat(chunks) * self.vae.config.scaling_factor).unsqueeze(0).float()

    def decode_latents(self, latents: torch.Tensor,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        z = latents[0].to(self.device, self.vae.dtype) / self.vae.config.scaling_factor
        frames = []
        for i in range(0, z.shape[0], self.decode_chunk_size):
            chunk = z[i:i + self.decode_chunk_size]
            frames.append(self.vae.decode(chunk, num_frames=chunk.shape[0]).sample)
        return torch.cat(frames).float()
