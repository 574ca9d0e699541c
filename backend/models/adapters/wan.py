"""Wan 2.1 image-to-video (Wan-AI/Wan2.1-I2V-14B-480P-Diffusers and its 720P sibling).

Latents: (B, C, F', h, w) natively, normalised by the VAE's per-channel mean and std; we
permute to canonical (B, F', C, h, w). F' = (F - 1) / 4 + 1, 8x spatial, 1x2x2 patches.
Parameterisation: flow matching (the network predicts eps - x0), shift from the scheduler
config (UniPC's ``flow_shift`` in the release). Conditioning: a video of the first frame then
zeros, VAE-encoded, with a 4-channel first-frame mask, concatenated on channels; CLIP image
hidden states; UMT5 text. With ``last_image`` (the FLF2V checkpoints,
Wan-AI/Wan2.1-FLF2V-14B-720P-Diffusers) the end view I_N fills the last frame of that video,
its mask and a second CLIP embedding, as diffusers' ``last_image`` does.
"""

from __future__ import annotations

import numpy as np
import torch

from backend.guidance.frames import image_to_tensor
from backend.guidance.prior import PriorVideo

from .base import Conditioning, DiffusersModel, PromptEmbeds, VideoFamilyAdapter


class WanAdapter(VideoFamilyAdapter):
    family = "wan"
    pipeline_class_name = "WanImageToVideoPipeline"
    default_max_sequence_length = 512

    def __init__(self, pipe, last_image: bool = False) -> None:
        super().__init__(pipe)
        self.last_image = last_image
        if pipe.config.get("expand_timesteps", False):
            raise ValueError("wan: Wan 2.2 TI2V (expand_timesteps) is not supported by this adapter")
        if getattr(pipe, "transformer_2", None) is not None:
            raise ValueError("wan: two-expert Wan 2.2 checkpoints are not supported by this adapter")

    @property
    def denoiser(self) -> DiffusersModel:
        return self.pipe.transformer

    @property
    def temporal_compression(self) -> int:
        return int(self.pipe.vae_scale_factor_temporal)

    @property
    def spatial_compression(self) -> int:
        return int(self.pipe.vae_scale_factor_spatial)

    @property
    def size_multiple(self) -> int:
        return self.spatial_compression * int(self.denoiser.config.patch_size[1])

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.z_dim)

    def default_size(self) -> tuple[int, int]:
        return 480, 832

    def sampling_scheduler(self):
        from diffusers import FlowMatchEulerDiscreteScheduler

        cfg = self.pipe.scheduler.config
        shift = cfg.get("flow_shift", None) or cfg.get("shift", 1.0)
        return FlowMatchEulerDiscreteScheduler(
            num_train_timesteps=cfg.get("num_train_timesteps", 1000), shift=float(shift)
        )

    def _stats(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.vae.config
        shape = (1, cfg.z_dim, 1, 1, 1)
        mean = torch.tensor(cfg.latents_mean, device=device, dtype=torch.float32).view(shape)
        std = torch.tensor(cfg.latents_std, device=device, dtype=torch.float32).view(shape)
        return mean, std

    def _encode_native(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, F, H, W) -> normalised (B, C, F', h, w) float32 (posterior mode)."""
        z = self.vae.encode(pixels.to(self.device, self.vae.dtype)).latent_dist.mode().float()
        mean, std = self._stats(z.device)
        return (z - mean) / std

    def prepare_conditioning(self, image: np.ndarray, num_frames: int, height: int, width: int,
                             prompt: PromptEmbeds, cfg: bool, generator: torch.Generator | None,
                             prior: PriorVideo | None = None) -> Conditioning:
        device = self.device
        end = prior.frames[-1] if (self.last_image and prior is not None) else None
        first = image_to_tensor(image, device, torch.float32).unsqueeze(2)  # 1 3 1 H W
        middle = first.new_zeros(1, 3, num_frames - 1 - (end is not None), height, width)
        parts = [first, middle] + ([] if end is None else
                                   [image_to_tensor(end, device, torch.float32).unsqueeze(2)])
        latent_condition = self._encode_native(torch.cat(parts, dim=2))
        frames, h, w = latent_condition.shape[2:]
        t = self.temporal_compression
        mask = torch.zeros(1, 1, num_frames + t - 1, h, w, device=device)
        mask[:, :, :t] = 1.0  # the first pixel frame, repeated to fill the first latent frame
        if end is not None:
            mask[:, :, -1] = 1.0
        mask = mask.view(1, frames, t, h, w).transpose(1, 2)
        condition = torch.cat([mask, latent_condition], dim=1).to(self.dtype)
        image_embeds = None
        if self.denoiser.config.image_dim is not None:
            images = image if end is None else [image, end]
            image_embeds = self.pipe.encode_image(images, device).to(self.dtype)
        text = prompt.text(cfg)
        if cfg:
            condition = torch.cat([condition, condition])
            if image_embeds is not None:
                image_embeds = torch.cat([image_embeds, image_embeds])
        return Conditioning(cfg, {"condition": condition, "text": text.to(self.dtype),
                                  "image_embeds": image_embeds})

    def forward(self, model_input: torch.Tensor, timestep: torch.Tensor,
                cond: Conditioning) -> torch.Tensor:
        c = cond.tensors
        hidden = torch.cat([model_input.permute(0, 2, 1, 3, 4), c["condition"]], dim=1)
        out = self.denoiser(
            hidden_states=hidden, timestep=timestep.to(hidden.device).expand(hidden.shape[0]),
            encoder_hidden_states=c["text"], encoder_hidden_states_image=c["image_embeds"],
            return_dict=False,
        )[0]
        return out.permute(0, 2, 1, 3, 4)

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        pixels = video.permute(1, 0, 2, 3).unsqueeze(0)
        return self._encode_native(pixels).permute(0, 2, 1, 3, 4)

    def decode_latents(self, latents: torch.Tensor,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        z = latents.to(self.device, torch.float32).permute(0, 2, 1, 3, 4)
        mean, std = self._stats(z.device)
        video = self.vae.decode((z * std + mean).to(self.vae.dtype)).sample
        return video[0].permute(1, 0, 2, 3).float()
