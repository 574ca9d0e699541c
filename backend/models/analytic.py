"""An exact video model on Gaussian data, in any parameterisation (for tests and benchmarks).

Data: every clip is one random image repeated over all frames, the image's values independent
N(mean, var). For x_t = a x_0 + s eps the clean estimate has a closed form per pixel position:
E[c | x_t] = mean + a var / (F a^2 var + s^2) * sum_f (x_t[f] - a mean), the same for every
frame f. The "network" returns that estimate written as the family's output (epsilon, v or flow
velocity) on a schedule built from one grid of variance-exploding noise levels sigma = s / a,
so the same sampler run can be compared across parameterisations in VE coordinates x / a.
The "VAE" is the identity on 3 channels (1x spatial, 1x temporal).

``prompt_means`` makes the data conditional on the prompt: each prompt names its own mean (the
same variance), so two prompts are two Gaussian conditionals whose exact scores are known.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from backend.guidance.frames import image_to_tensor
from backend.guidance.prior import PriorVideo
from backend.guidance.schedule import NoiseSchedule, Prediction, ScheduleKind

from .adapters.base import Conditioning, PromptEmbeds, VideoFamilyAdapter


def schedule_on_sigmas(kind: ScheduleKind, prediction: Prediction,
                       sigmas_ve: Sequence[float]) -> NoiseSchedule:
    """(alpha, sigma) tables of a VP, flow or VE schedule through the VE levels ``sigmas_ve``
    (decreasing, > 0; ``inf`` allowed first for VP and flow: pure noise, a = 0). The table ends
    at the clean sample (a, s) = (1, 0); timesteps are the step indices."""
    ve = torch.tensor(list(sigmas_ve) + [0.0], dtype=torch.float64)
    if kind == "ve":
        if not torch.isfinite(ve).all():
            raise ValueError("a VE schedule needs finite noise levels")
        alphas, sigmas = torch.ones_like(ve), ve
    elif kind == "vp":
        alphas = torch.where(torch.isinf(ve), 0.0, 1.0 / torch.sqrt(1.0 + ve.square()))
        sigmas = torch.sqrt(1.0 - alphas.square())
    else:
        alphas = torch.where(torch.isinf(ve), 0.0, 1.0 / (1.0 + ve))
        sigmas = 1.0 - alphas
    steps = torch.arange(len(sigmas_ve), dtype=torch.float32)
    return NoiseSchedule(kind, prediction, steps, alphas, sigmas)


class GaussianVideoModel(VideoFamilyAdapter):
    """The exact denoiser of the repeated-Gaussian-image data, as a video family adapter."""

    family = "analytic"
    pipeline_class_name = ""

    def __init__(self, kind: ScheduleKind, prediction: Prediction, sigmas_ve: Sequence[float],
                 mean: float = 0.0, var: float = 0.25, size: int = 8,
                 prompt_means: Mapping[str, float] | None = None) -> None:
        super().__init__(pipe=None)
        self.kind, self.prediction = kind, prediction
        self.sigmas_ve = tuple(float(v) for v in sigmas_ve)
        self.mean, self.var, self.size = mean, var, size
        self.prompt_means = dict(prompt_means or {})
        """Prompt -> the data's mean under it (other prompts: ``mean``)."""
        self.forward_calls = 0
        self.end_images: list[np.ndarray | None] = []
        """The end frame each conditioning saw (None without a prior)."""

    def _networks(self) -> list[torch.nn.Module]:
        return []

    @property
    def denoiser(self) -> torch.nn.Module:
        raise AttributeError("the analytic model has no network")

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    @property
    def temporal_compression(self) -> int:
        return 1

    @property
    def spatial_compression(self) -> int:
        return 1

    @property
    def latent_channels(self) -> int:
        return 3

    def default_size(self) -> tuple[int, int]:
        return self.size, self.size

    def sampling_scheduler(self):
        raise NotImplementedError("the analytic model builds its schedule directly")

    def noise_schedule(self, num_inference_steps: int) -> NoiseSchedule:
        if num_inference_steps != len(self.sigmas_ve):
            raise ValueError(f"the analytic model runs {len(self.sigmas_ve)} steps")
        return schedule_on_sigmas(self.kind, self.prediction, self.sigmas_ve)

    def encode_prompt(self, prompt: str, negative_prompt: str, cfg: bool,
                      max_sequence_length: int | None = None) -> PromptEmbeds:
        if prompt not in self.prompt_means:
            return PromptEmbeds(None, None)
        return PromptEmbeds(torch.tensor(self.prompt_means[prompt], dtype=torch.float64))

    def prepare_conditioning(self, image: np.ndarray, num_frames: int, height: int, width: int,
                             prompt: PromptEmbeds, cfg: bool, generator: torch.Generator | None,
                             prior: PriorVideo | None = None) -> Conditioning:
        self.end_images.append(None if prior is None else prior.frames[-1])
        mean = self.mean if prompt.positive is None else float(prompt.positive)
        return Conditioning(False, {"mean": mean})

    def posterior_mean(self, x: torch.Tensor, a: float, s: float,
                       mean: float | None = None) -> torch.Tensor:
        """E[x_0 | x_t] for canonical (1, F, C, h, w) latents (data mean ``mean``, default
        the model's)."""
        mean = self.mean if mean is None else mean
        frames = x.shape[1]
        gain = a * self.var / (frames * a * a * self.var + s * s)
        c = mean + gain * (x - a * mean).sum(dim=1, keepdim=True)
        return c.expand_as(x)

    def forward(self, model_input: torch.Tensor, timestep: torch.Tensor,
                cond: Conditioning) -> torch.Tensor:
        self.forward_calls += 1
        schedule = schedule_on_sigmas(self.kind, self.prediction, self.sigmas_ve)
        i = int(round(float(timestep)))
        a, s = float(schedule.alphas[i]), float(schedule.sigmas[i])
        r = math.sqrt(a * a + s * s)
        x = model_input * r if self.kind == "ve" else model_input  # undo EDM's c_in
        mean = self.mean if cond is None else cond.tensors.get("mean", self.mean)
        x0 = self.posterior_mean(x, a, s, mean)
        if self.prediction == "epsilon":
            return (x - a * x0) / s
        if self.prediction == "v_prediction":
            return ((a / (r * r)) * x - x0) * (r / s)
        return (x - x0) / s  # flow: x0 = x - s v

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        return video.float().unsqueeze(0)

    def decode_latents(self, latents: torch.Tensor,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        return latents[0].float()

    def sample_image(self, generator: torch.Generator) -> np.ndarray:
        """One H x W x 3 uint8 image drawn from the data distribution (clipped to [-1, 1])."""
        c = self.mean + math.sqrt(self.var) * torch.randn(self.size, self.size, 3,
                                                          generator=generator)
        return ((c.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).numpy()


def image_latent(image: np.ndarray) -> torch.Tensor:
    """An image as the analytic model's latent values (3, H, W), in [-1, 1]."""
    return image_to_tensor(image, torch.device("cpu"), torch.float32)[0]
