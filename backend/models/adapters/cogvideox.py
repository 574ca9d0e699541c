"""CogVideoX image-to-video (THUDM/CogVideoX-5b-I2V, CogVideoX1.5-5B-I2V).

Latents: (B, F', C, h, w) natively (our canonical layout), F' = (F - 1) / 4 + 1, 8x spatial.
Parameterisation: v-prediction on a VP schedule (the DPM scheduler of the release is swapped
for its DDIM sibling, same alphas). Conditioning: the first frame's latents, zero-padded over
time, concatenated on channels; T5 text; 3D RoPE; the I2V-5B's learned positional embeddings
fix both the resolution and the frame count (49).
"""

from __future__ import annotations

import numpy as np
import torch

from backend.guidance.frames import image_to_tensor
from backend.guidance.prior import PriorVideo

from .base import Conditioning, DiffusersModel, PromptEmbeds, VideoFamilyAdapter


class CogVideoXAdapter(VideoFamilyAdapter):
    family = "cogvideox"
    pipeline_class_name = "CogVideoXImageToVideoPipeline"

    def __init__(self, pipe) -> None:
        super().__init__(pipe)
        if self.denoiser.config.patch_size_t is not None:
            # CogVideoX 1.5 pads latent frames to a multiple of patch_size_t.
            self._patch_t = int(self.denoiser.config.patch_size_t)
        else:
            self._patch_t = 1

    @property
    def denoiser(self) -> DiffusersModel:
        return self.pipe.transformer

    @property
    def default_max_sequence_length(self) -> int:
        """Text tokens the transformer was built for (226 for the released checkpoints)."""
        return int(self.denoiser.config.max_text_seq_length)

    @property
    def temporal_compression(self) -> int:
        return int(self.pipe.vae_scale_factor_temporal)

    @property
    def spatial_compression(self) -> int:
        return int(self.pipe.vae_scale_factor_spatial)

    @property
    def size_multiple(self) -> int:
        return self.spatial_compression * int(self.denoiser.config.patch_size)

    @property
    def latent_channels(self) -> int:
        return int(self.denoiser.config.in_channels) // 2

    @property
    def _learned_positions(self) -> bool:
        return bool(self.denoiser.config.use_learned_positional_embeddings)

    def default_size(self) -> tuple[int, int]:
        cfg = self.denoiser.config
        return cfg.sample_height * self.spatial_compression, cfg.sample_width * self.spatial_compression

    def check_size(self, height: int, width: int) -> None:
        super().check_size(height, width)
        if self._learned_positions and (height, width) != self.default_size():
            raise ValueError(f"cogvideox: this checkpoint's learned positional embeddings need "
                             f"{self.default_size()[0]}x{self.default_size()[1]}, got {height}x{width}")

    def is_valid_num_frames(self, num_frames: int) -> bool:
        if not super().is_valid_num_frames(num_frames):
            return False
        if self._learned_positions and num_frames != self.denoiser.config.sample_frames:
            return False
        return self.latent_frames(num_frames) % self._patch_t == 0

    @property
    def frame_rule(self) -> str:
        rule = f"{self.temporal_compression}k+1 frames"
        if self._learned_positions:
            rule += f", exactly {self.denoiser.config.sample_frames} with learned positions"
        if self._patch_t > 1:
            rule += f", latent frames a multiple of {self._patch_t}"
        return rule

    def sampling_scheduler(self):
        from diffusers import CogVideoXDDIMScheduler, DDIMScheduler

        current = self.pipe.scheduler
        if isinstance(current, DDIMScheduler | CogVideoXDDIMScheduler):
            return type(current).from_config(current.config)
        return CogVideoXDDIMScheduler.from_config(current.config)

    def _image_latent_scale(self, latents: torch.Tensor) -> torch.Tensor:
        factor = self.pipe.vae_scaling_factor_image
        if self.vae.config.get("invert_scale_latents", False):
            return latents / factor
        return latents * factor

    def prepare_conditioning(self, image: np.ndarray, num_frames: int, height: int, width: int,
                             prompt: PromptEmbeds, cfg: bool, generator: torch.Generator | None,
                             prior: PriorVideo | None = None) -> Conditioning:
        device = self.device
        pixels = image_to_tensor(image, device, self.vae.dtype).unsqueeze(2)  # B C 1 H W
        dist = self.vae.encode(pixels).latent_dist
        first = self._image_latent_scale(dist.sample(generator=generator)).permute(0, 2, 1, 3, 4)
        frames = self.latent_frames(num_frames)
        padding = first.new_zeros((1, frames - 1, *first.shape[2:]))
        image_latents = torch.cat([first, padding], dim=1).to(self.dtype)
        text = prompt.text(cfg)
        if cfg:
            image_latents = torch.cat([image_latents, image_latents])
        rotary = None
        if self.denoiser.config.use_rotary_positional_embeddings:
            rotary = self.pipe._prepare_rotary_positional_embeddings(height, width, frames, device)
        ofs = None
        if self.denoiser.config.ofs_embed_dim is not None:
            ofs = torch.full((1,), 2.0, device=device, dtype=self.dtype)
        return Conditioning(cfg, {"image_latents": image_latents, "text": text.to(self.dtype),
                                  "rotary": rotary, "ofs": ofs})

    def forward(self, model_input: torch.Tensor, timestep: torch.Tensor,
                cond: Conditioning) -> torch.Tensor:
        c = cond.tensors
        hidden = torch.cat([model_input, c["image_latents"]], dim=2)
        return self.denoiser(
            hidden_states=hidden, encoder_hidden_states=c["text"],
            timestep=timestep.to(hidden.device).expand(hidden.shape[0]),
            ofs=c["ofs"], image_rotary_emb=c["rotary"], return_dict=False,
        )[0]

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        pixels = video.to(self.device, self.vae.dtype).permute(1, 0, 2, 3).unsqueeze(0)
        latents = self.vae.encode(pixels).latent_dist.mode() * self.vae.config.scaling_factor
        return latents.permute(0, 2, 1, 3, 4).float()

    def decode_latents(self, latents: torch.Tensor,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        z = latents.to(self.device, self.vae.dtype).permute(0, 2, 1, 3, 4)
        video = self.vae.decode(z / self.vae.config.scaling_factor).sample
        return video[0].permute(1, 0, 2, 3).float()
