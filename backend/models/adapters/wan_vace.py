"""Wan-VACE (Wan-AI/Wan2.1-VACE-1.3B-diffusers, -14B) through ``WanVACEPipeline`` components.

The same VAE, latent layout and flow schedule as Wan I2V (see wan.py); the network is the
text-to-video Wan transformer with VACE's control blocks. DreamJourney's prior is exactly
VACE's input: the partial render is the control video and its hole mask the control mask
(1 = generate). Hole pixels are set to 0 (mid grey in [-1, 1]) first, and the first and last
views are fully kept, so VACE conditions on both ends; latent guidance runs on top. Without a
prior (plain image-to-video) the control video is the first frame then grey, masked after it.
"""

from __future__ import annotations

import numpy as np
import torch

from backend.guidance.frames import image_to_tensor, video_to_tensor
from backend.guidance.prior import PriorVideo

from .base import Conditioning, PromptEmbeds
from .wan import WanAdapter


class WanVACEAdapter(WanAdapter):
    family = "wan-vace"
    pipeline_class_name = "WanVACEPipeline"
    supports_end_image = True

    def __init__(self, pipe, conditioning_scale: float = 1.0) -> None:
        super().__init__(pipe)
        self.conditioning_scale = conditioning_scale

    def control_inputs(self, image: np.ndarray, num_frames: int, height: int, width: int,
                       prior: PriorVideo | None) -> tuple[torch.Tensor, torch.Tensor]:
        """VACE's video (1, 3, F, H, W) in [-1, 1] and mask (1, 1, F, H, W), 1 = generate."""
        device = self.device
        if prior is None:
            video = torch.zeros(num_frames, 3, height, width, device=device)
            video[0] = image_to_tensor(image, device, torch.float32)[0]
            hole = torch.ones(num_frames, 1, height, width, device=device)
            hole[0] = 0.0
        else:
            video = video_to_tensor(prior.frames, device, torch.float32)
            hole = torch.as_tensor(np.asarray(prior.masks) <= 0.5, device=device,
                                   dtype=torch.float32)[:, None]
            video = video * (1.0 - hole)
        return video.permute(1, 0, 2, 3)[None], hole.permute(1, 0, 2, 3)[None]

    def prepare_conditioning(self, image: np.ndarray, num_frames: int, height: int, width: int,
                             prompt: PromptEmbeds, cfg: bool, generator: torch.Generator | None,
                             prior: PriorVideo | None = None) -> Conditioning:
        video, hole = self.control_inputs(image, num_frames, height, width, prior)
        video_latents = self.pipe.prepare_video_latents(video, hole, [[]], generator, self.device)
        mask_latents = self.pipe.prepare_masks(hole, [[]], generator)
        control = torch.cat([video_latents, mask_latents.to(video_latents.dtype)], dim=1)
        control = control.to(self.dtype)
        text = prompt.text(cfg)
        if cfg:
            control = torch.cat([control, control])
        layers = len(self.denoiser.config.vace_layers)
        scale = torch.full((layers,), float(self.conditioning_scale), device=self.device)
        return Conditioning(cfg, {"control": control, "text": text.to(self.dtype),
                                  "scale": scale})

    def forward(self, model_input: torch.Tensor, timestep: torch.Tensor,
                cond: Conditioning) -> torch.Tensor:
        c = cond.tensors
        hidden = model_input.permute(0, 2, 1, 3, 4)
        out = self.denoiser(
            hidden_states=hidden, timestep=timestep.to(hidden.device).expand(hidden.shape[0]),
            encoder_hidden_states=c["text"], control_hidden_states=c["control"],
            control_hidden_states_scale=c["scale"], return_dict=False,
        )[0]
        return out.permute(0, 2, 1, 3, 4)
