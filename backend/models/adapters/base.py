"""What the guided sampler needs to know about an image-to-video family.

An adapter wraps a loaded diffusers pipeline and exposes its parts in one canonical latent
layout, ``(batch, latent_frames, channels, height, width)``, whatever the family stores
internally. The sampler never touches family specifics: latent layout and normalisation,
temporal compression, parameterisation, conditioning and frame-count rules live here.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from backend.guidance.prior import PriorVideo
from backend.guidance.schedule import NoiseSchedule, schedule_from_scheduler

logger = logging.getLogger(__name__)


@dataclass
class PromptEmbeds:
    """Text embeddings for the conditional and the unconditional branch (None: no text)."""

    positive: torch.Tensor | None
    negative: torch.Tensor | None = None
    positive_mask: torch.Tensor | None = None
    """Attention masks of the text tokens, for families that take them (LTX)."""
    negative_mask: torch.Tensor | None = None

    def text(self, cfg: bool) -> torch.Tensor:
        """The embeddings a network takes: [negative, positive] along the batch with
        classifier-free guidance, else the positive alone."""
        return _pair(self.negative, self.positive, cfg, "prompt embeddings")

    def mask(self, cfg: bool) -> torch.Tensor:
        """The attention masks laid out like :meth:`text`."""
        return _pair(self.negative_mask, self.positive_mask, cfg, "prompt attention masks")


def _pair(negative: torch.Tensor | None, positive: torch.Tensor | None, cfg: bool,
          what: str) -> torch.Tensor:
    if positive is None or (cfg and negative is None):
        raise ValueError(f"{what} missing (classifier-free guidance needs both branches)")
    return torch.cat([negative, positive]) if cfg and negative is not None else positive


DiffusersModel = Any
"""A diffusers network (``ModelMixin``: a torch Module). Typed loosely on purpose: its
``config`` is read by attribute (``config.patch_size``), which diffusers annotates as a dict."""


@dataclass
class Conditioning:
    """Everything besides x_t that a family's network takes, prepared once per clip.

    ``batched`` tensors already hold [uncond, cond] along the batch axis when ``cfg`` is True.
    """

    cfg: bool
    tensors: dict[str, Any] = field(default_factory=dict)


class VideoFamilyAdapter(ABC):
    """Base of CogVideoX-I2V, Wan I2V and SVD adapters."""

    family: ClassVar[str]
    pipeline_class_name: ClassVar[str]

    @property
    def default_max_sequence_length(self) -> int | None:
        """Text tokens the prompt is encoded to (None: the pipeline's own default)."""
        return None

    def __init__(self, pipe) -> None:
        self.pipe = pipe
        for module in self._networks():
            module.requires_grad_(False)
            module.eval()

    # ------------------------------------------------------------------ properties
    @property
    @abstractmethod
    def denoiser(self) -> DiffusersModel:
        """The transformer or UNet."""

    @property
    def vae(self) -> DiffusersModel:
        return self.pipe.vae

    @property
    def device(self) -> torch.device:
        """Where inputs go (the pipeline's execution device; offload-aware)."""
        return self.pipe._execution_device

    @property
    def dtype(self) -> torch.dtype:
        return self.denoiser.dtype

    @property
    @abstractmethod
    def temporal_compression(self) -> int:
        """Pixel frames per latent frame (after the first, for causal VAEs)."""

    @property
    @abstractmethod
    def spatial_compression(self) -> int:
        """Pixels per latent cell along each axis."""

    @property
    def size_multiple(self) -> int:
        """Height and width must be multiples of this."""
        return self.spatial_compression

    # ------------------------------------------------------------------ rules
    @abstractmethod
    def default_size(self) -> tuple[int, int]:
        """(height, width) the model was trained at."""

    def check_size(self, height: int, width: int) -> None:
        m = self.size_multiple
        if height % m or width % m:
            raise ValueError(f"{self.family}: height and width must be multiples of {m}, "
                             f"got {height}x{width}")

    def is_valid_num_frames(self, num_frames: int) -> bool:
        t = self.temporal_compression
        return num_frames >= 1 and (num_frames - 1) % t == 0

    def valid_num_frames_near(self, num_frames: int) -> list[int]:
        """The nearest valid frame counts below and above (for error messages)."""
        lower = next((n for n in range(num_frames, 0, -1) if self.is_valid_num_frames(n)), None)
        upper = next(n for n in range(num_frames, num_frames + 1024) if self.is_valid_num_frames(n))
        return sorted({n for n in (lower, upper) if n is not None})

    def check_num_frames(self, num_frames: int) -> None:
        if not self.is_valid_num_frames(num_frames):
            near = " or ".join(str(n) for n in self.valid_num_frames_near(num_frames))
            raise ValueError(f"{self.family} cannot generate {num_frames} frames "
                             f"({self.frame_rule}); nearest valid: {near}")

    @property
    def frame_rule(self) -> str:
        t = self.temporal_compression
        return "any count" if t == 1 else f"{t}k+1 frames"

    def latent_frames(self, num_frames: int) -> int:
        return (num_frames - 1) // self.temporal_compression + 1

    def latent_frame_groups(self, num_frames: int) -> list[range]:
        """Pixel frames each latent frame encodes: [0], then runs of ``temporal_compression``."""
        t = self.temporal_compression
        if t == 1:
            return [range(i, i + 1) for i in range(num_frames)]
        return [range(0, 1)] + [range(1 + t * j, 1 + t * (j + 1))
                                for j in range(self.latent_frames(num_frames) - 1)]

    # ------------------------------------------------------------------ schedule
    @abstractmethod
    def sampling_scheduler(self):
        """A first-order scheduler built ``from_config`` of the pipeline's scheduler."""

    def noise_schedule(self, num_inference_steps: int) -> NoiseSchedule:
        return schedule_from_scheduler(self.sampling_scheduler(), num_inference_steps)

    # ------------------------------------------------------------------ text
    def encode_prompt(self, prompt: str, negative_prompt: str, cfg: bool,
                      max_sequence_length: int | None = None) -> PromptEmbeds:
        """Run the pipeline's text encoder; families without text return empty embeddings."""
        length = max_sequence_length or self.default_max_sequence_length
        positive, negative = self.pipe.encode_prompt(
            prompt=prompt, negative_prompt=negative_prompt, do_classifier_free_guidance=cfg,
            num_videos_per_prompt=1, max_sequence_length=length, device=self.device,
        )
        return PromptEmbeds(positive, negative if cfg else None)

    # ------------------------------------------------------------------ conditioning
    supports_end_image: ClassVar[bool] = False
    """Whether the network can be conditioned on the last frame too (FLF2V, LTX, VACE)."""

    @abstractmethod
    def prepare_conditioning(self, image: np.ndarray, num_frames: int, height: int, width: int,
                             prompt: PromptEmbeds, cfg: bool, generator: torch.Generator | None,
                             prior: PriorVideo | None = None) -> Conditioning:
        """Image (H x W x 3 uint8, already model size) and text into network inputs.

        ``prior`` is the padded prior video of a transition (None for plain image-to-video):
        families that take an end frame or a partial video (VACE) condition on it.
        """

    @property
    def conditions_on_prior(self) -> bool:
        """Whether :meth:`attach_prior` uses the encoded prior (then it is encoded even when
        the sampler does no latent guidance)."""
        return False

    def attach_prior(self, cond: Conditioning, prior_latents: torch.Tensor,
                     mask: torch.Tensor) -> None:
        """Carry the encoded prior (canonical latents) and its latent mask (1, F', 1, h, w) in
        the network's own inputs, for families that can (LTX condition tokens). Default: no."""
        return None

    @abstractmethod
    def forward(self, model_input: torch.Tensor, timestep: torch.Tensor,
                cond: Conditioning) -> torch.Tensor:
        """One network call on canonical latents (batch 2 under CFG); canonical output."""

    def predict(self, model_input: torch.Tensor, timestep: torch.Tensor, cond: Conditioning,
                guidance_scale: float | torch.Tensor) -> torch.Tensor:
        """Network output for canonical ``model_input`` (batch 1), CFG applied, float32.

        ``guidance_scale`` may be a tensor broadcasting over (1, F', C, h, w) (per-frame CFG).
        """
        x = model_input.to(self.dtype)
        if cond.cfg:
            x = torch.cat([x, x])
        out = self.forward(x, timestep, cond).float()
        if cond.cfg:
            uncond, text = out.chunk(2)
            if isinstance(guidance_scale, torch.Tensor):
                guidance_scale = guidance_scale.to(out.device)
            out = uncond + guidance_scale * (text - uncond)
        return out

    # ------------------------------------------------------------------ VAE
    @abstractmethod
    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """(F, 3, H, W) in [-1, 1] -> canonical normalised latents (1, F', C, h, w), float32."""

    @abstractmethod
    def decode_latents(self, latents: torch.Tensor,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """Canonical latents (1, F', C, h, w) -> (F, 3, H, W) in [-1, 1], float32.
        ``generator`` draws the decode noise of timestep-conditioned VAEs (LTX)."""

    def iter_decode(self, latents: torch.Tensor, generator: torch.Generator | None = None
                    ) -> Iterator[tuple[int, torch.Tensor]]:
        """(first frame index, frames) pieces of the decoded clip, each as soon as it is
        final. Default: the whole clip in one piece."""
        yield 0, self.decode_latents(latents, generator)

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, ...]:
        s = self.spatial_compression
        return (1, self.latent_frames(num_frames), self.latent_channels, height // s, width // s)

    @property
    @abstractmethod
    def latent_channels(self) -> int:
        """Channels of x_t."""

    # ------------------------------------------------------------------ helpers
    def _networks(self) -> list[torch.nn.Module]:
        names = ("transformer", "unet", "vae", "text_encoder", "image_encoder")
        return [m for n in names if isinstance(m := getattr(self.pipe, n, None), torch.nn.Module)]


class CompressionRatios:
    """The denoiser and VAE compression of pipelines that name them ``transformer``,
    ``vae_temporal_compression_ratio`` and ``vae_spatial_compression_ratio`` (LTX,
    EasyAnimate); put before :class:`VideoFamilyAdapter` in the bases."""

    pipe: Any

    @property
    def denoiser(self) -> DiffusersModel:
        return self.pipe.transformer

    @property
    def temporal_compression(self) -> int:
        return int(self.pipe.vae_temporal_compression_ratio)

    @property
    def spatial_compression(self) -> int:
        return int(self.pipe.vae_spatial_compression_ratio)
