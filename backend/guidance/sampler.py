"""The guided video sampler: one denoising loop over an adapter's components.

Stage I (transition): the prior video steers sampling as the authors' release does it
(``release``: a normalised gradient step on x_t before each denoising step, the network output
held constant; or the cheaper ``blend``), with renoise rounds, early stopping and view padding.
Stage II (dynamics): the same loop with ``mode="none"`` is plain image-to-video.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from .config import GuidanceConfig
from .frames import tensor_to_frames, video_to_tensor
from .prior import PriorVideo, latent_masks
from .schedule import NoiseSchedule, randn_like

if TYPE_CHECKING:
    from backend.models.adapters.base import Conditioning, PromptEmbeds, VideoFamilyAdapter

logger = logging.getLogger(__name__)

StepCallback = Callable[["GuidedVideoSampler", int, torch.Tensor, dict[str, Any]], Any]


class SamplingInterrupted(RuntimeError):
    """Raised when ``interrupt()`` was called; the engine reports the job as cancelled."""


@dataclass
class SamplerCounters:
    model_evals: int = 0
    """Network calls (a CFG pair counts once): guide and step calls together."""
    guidance_evals: int = 0
    """Network calls of the guide phase (release mode: one per round)."""
    guided_steps: int = 0
    """Steps that applied the prior (before the early stop, where a_t * s_t > 0)."""
    unguidable_steps: int = 0
    """Steps before the early stop skipped because a_t * s_t = 0 (x0_hat is uninformative)."""
    renoise_rounds: int = 0
    """Times x_{t-1} was diffused back to x_t, over the whole run."""
    previews: int = 0
    guided_step_indices: list[int] = field(default_factory=list)


@dataclass
class SamplerTimings:
    """Seconds per phase; ``step_s`` has one entry per denoising step (renoise rounds included)."""

    conditioning_s: float = 0.0
    prior_encode_s: float = 0.0
    sampling_s: float = 0.0
    decode_s: float = 0.0
    total_s: float = 0.0
    step_s: list[float] = field(default_factory=list)


@dataclass
class GuidedSampleOutput:
    frames: np.ndarray | None
    """T x H x W x 3 uint8, padding removed (T = config.num_frames); None for
    ``output_type="latent"``."""
    counters: SamplerCounters
    timings: SamplerTimings
    latents: torch.Tensor
    """Final canonical latents (1, F', C, h, w), padding included, on the CPU."""
    prior_latents: torch.Tensor | None = None
    """z^p, the VAE-encoded padded prior (None without a prior), on the CPU."""
    latent_mask: torch.Tensor | None = None
    """m^p on the latent grid (1, F', 1, h, w), on the CPU."""


class GuidedVideoSampler:
    """Drive an adapter's denoiser, VAE and noise schedule through one guided loop.

    Cancel from any thread with :meth:`interrupt`; it takes effect at the next step or renoise
    round. Progress comes through ``callback_on_step_end(sampler, i, t, callback_kwargs)``
    after every step (diffusers' convention); the callback may return a dict whose
    ``latents`` replace the current ones.
    """

    _callback_tensor_inputs = ("latents", "x0_hat")

    def __init__(self, adapter: VideoFamilyAdapter) -> None:
        self.adapter = adapter
        self._interrupt = False
        self._num_timesteps = 0

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def interrupted(self) -> bool:
        return self._interrupt

    def interrupt(self) -> None:
        """Ask the running call to stop; it raises :class:`SamplingInterrupted`."""
        self._interrupt = True

    # ------------------------------------------------------------------ checks
    def check_inputs(self, image: np.ndarray, prior: PriorVideo | None,
                     config: GuidanceConfig, height: int, width: int,
                     callback_tensor_inputs: Sequence[str]) -> None:
        self.adapter.check_size(height, width)
        self.adapter.check_num_frames(config.total_frames)
        if image.shape[:2] != (height, width):
            raise ValueError(f"image is {image.shape[1]}x{image.shape[0]}, the model runs at "
                             f"{width}x{height}: render inputs at the model size")
        if config.mode != "none" and prior is None:
            raise ValueError(f"mode {config.mode!r} needs a prior video")
        if prior is not None:
            if prior.num_frames != config.num_frames:
                raise ValueError(f"prior has {prior.num_frames} frames, config.num_frames is "
                                 f"{config.num_frames}")
            if prior.frames.shape[1:3] != (height, width):
                raise ValueError(f"prior frames are {prior.frames.shape[2]}x{prior.frames.shape[1]}"
                                 f", the model runs at {width}x{height}")
        bad = [k for k in callback_tensor_inputs if k not in self._callback_tensor_inputs]
        if bad:
            raise ValueError(f"callback tensor inputs must be in {self._callback_tensor_inputs}, "
                             f"got {bad}")

    # ------------------------------------------------------------------ main entry
    @torch.no_grad()
    def __call__(
        self,
        image: np.ndarray,
        prior: PriorVideo | None = None,
        config: GuidanceConfig | None = None,
        *,
        generator: torch.Generator | None = None,
        prompt_embeds: PromptEmbeds | None = None,
        latents: torch.Tensor | None = None,
        output_type: Literal["frames", "latent"] = "frames",
        callback_on_step_end: StepCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> GuidedSampleOutput:
        """Sample a clip that starts at ``image`` (H x W x 3 uint8, model size).

        With ``config.mode`` ``release`` or ``blend``, ``prior`` holds ``config.num_frames`` rendered
        frames and masks (I_0 first, I_N last); the output has the same frame count. With
        ``mode="none"`` a given prior only conditions the network (end views, condition
        tokens), nothing moves x_t.
        ``prompt_embeds`` skips the text encoder (``config.prompt`` is then unused).
        ``latents`` is the initial noise (standard normal, canonical layout
        ``adapter.latent_shape``), scaled like drawn noise; None draws it from ``generator``
        after the conditioning (diffusers' ``latents`` argument). ``output_type="latent"``
        skips the decode (``frames`` is None): decode with :meth:`iter_frames` to stream.
        """
        config = config or GuidanceConfig()
        adapter = self.adapter
        height, width = config.height or adapter.default_size()[0], config.width or adapter.default_size()[1]
        self.check_inputs(image, prior, config, height, width, callback_on_step_end_tensor_inputs)
        self._interrupt = False
        timings, counters = SamplerTimings(), SamplerCounters()
        start = time.perf_counter()
        if generator is None:
            generator = torch.Generator(device="cpu").manual_seed(config.seed)
        cfg = config.guidance_scale > 1.0
        total = config.total_frames

        # 1. Encode the prompt and the first frame into the network's conditioning
        if prompt_embeds is None:
            prompt_embeds = adapter.encode_prompt(config.prompt, config.negative_prompt, cfg,
                                                  config.max_sequence_length)
        padded = None if prior is None else prior.padded(config.pad_frames)
        cond = adapter.prepare_conditioning(image, total, height, width, prompt_embeds, cfg,
                                            generator, prior=padded)
        scale = self._guidance_scale(config, adapter.latent_frames(total))
        timings.conditioning_s = self._lap(start)

        # 2. Encode the padded prior once (holes Telea-filled); binary masks on the latent grid
        z_prior = mask = None
        if padded is not None and (config.mode != "none" or adapter.conditions_on_prior):
            t0 = time.perf_counter()
            z_prior = adapter.encode_video(video_to_tensor(padded.filled(), adapter.device,
                                                           torch.float32))
            groups = adapter.latent_frame_groups(total)
            mask = latent_masks(padded.masks, groups, adapter.spatial_compression, adapter.device)
            adapter.attach_prior(cond, z_prior, mask)
            timings.prior_encode_s = self._lap(t0)

        # 3. Timesteps and the initial noise
        schedule = adapter.noise_schedule(config.num_inference_steps)
        self._num_timesteps = schedule.num_steps
        shape = adapter.latent_shape(total, height, width)
        if latents is None:
            x = randn_like(torch.empty(shape, device=adapter.device), generator)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents must be {shape}, got {tuple(latents.shape)}")
        else:
            x = latents.to(adapter.device, torch.float32)
        x = x * schedule.initial_noise_scale()

        # 4. Denoising loop: guided steps until the early stop, except where a_t * s_t = 0
        t_loop = time.perf_counter()
        window = config.guided_range
        for i, t in enumerate(schedule.timesteps):
            t_step = time.perf_counter()
            guided = i in window and schedule.guidance_step(i) > 0.0
            counters.unguidable_steps += int(i in window and not guided)
            x, x0, loss = self._denoise_step(x, i, t, schedule, cond, config, scale, guided,
                                             z_prior, mask, generator, counters)
            if guided:
                counters.guided_steps += 1
                counters.guided_step_indices.append(i)
            timings.step_s.append(self._lap(t_step))
            if callback_on_step_end is not None:
                x = self._run_callback(callback_on_step_end, callback_on_step_end_tensor_inputs,
                                       i, t, x, x0, guided, loss, config, counters)
        timings.sampling_s = self._lap(t_loop)

        # 5. Decode and drop the padded views (``output_type="latent"``: the caller decodes)
        frames = None
        if output_type != "latent":
            t0 = time.perf_counter()
            video = adapter.decode_latents(x, generator)
            frames = tensor_to_frames(video[config.pad_frames:config.pad_frames + config.num_frames])
            timings.decode_s = self._lap(t0)
        timings.total_s = self._lap(start)
        logger.info("sampled %d frames in %.2fs (%d guided steps, %d model evals)",
                    total, timings.total_s, counters.guided_steps, counters.model_evals)
        return GuidedSampleOutput(
            frames=frames, counters=counters, timings=timings, latents=x.cpu(),
            prior_latents=None if z_prior is None else z_prior.cpu(),
            latent_mask=None if mask is None else mask.cpu(),
        )

    # ------------------------------------------------------------------ one step
    @staticmethod
    def _guidance_scale(config: GuidanceConfig, latent_frames: int) -> float | torch.Tensor:
        """CFG scale: one number, or SVD's per-frame ramp over the latent frames."""
        if config.frame_guidance_ramp is None:
            return config.guidance_scale
        first, last = config.frame_guidance_ramp
        return torch.linspace(first, last, latent_frames).view(1, latent_frames, 1, 1, 1)

    def _denoise_step(self, x: torch.Tensor, i: int, t: torch.Tensor, schedule: NoiseSchedule,
                      cond: Conditioning, config: GuidanceConfig, scale: float | torch.Tensor,
                      guided: bool, z_prior: torch.Tensor | None, mask: torch.Tensor | None,
                      generator: torch.Generator, counters: SamplerCounters):
        """x_t -> x_{t-1}; when ``guided``, 1 + R rounds of (renoise, guide, step) as the
        release loops them (no renoise before the first round)."""
        rounds = 1 + (config.renoise_rounds if guided else 0)
        prior = (z_prior, mask) if guided and z_prior is not None and mask is not None else None
        if guided and prior is None:
            raise ValueError("a guided step needs the prior's latents and mask")
        x_prev, x0, loss = x, None, None  # round 0 sets x_prev before any renoise reads it
        for r in range(rounds):
            if self._interrupt:
                raise SamplingInterrupted(f"interrupted at step {i}")
            # 1. Renoise: diffuse the previous round's x_{t-1} back to x_t
            if r > 0:
                x = schedule.renoise(x_prev, i, generator)
                counters.renoise_rounds += 1
            # 2. Guide: blend pastes the noised prior; release moves x_t down the prior loss
            if prior is not None and config.mode == "blend":
                z, m = prior
                noised = schedule.add_noise(z, i, randn_like(z, generator))
                x = m * noised + (1.0 - m) * x
            elif prior is not None and config.mode == "release":
                out = self.adapter.predict(schedule.model_input(x, i), t, cond, scale)
                counters.model_evals += 1
                counters.guidance_evals += 1
                x, loss = release_guidance(x, out, schedule, i, *prior, config.lr)
            # 3. Step from the model's output on the (moved) x_t
            out = self.adapter.predict(schedule.model_input(x, i), t, cond, scale)
            counters.model_evals += 1
            x0 = schedule.to_x0(out, x, i)
            x_prev = schedule.step(x0, x, i)
        return x_prev, x0, loss

    # ------------------------------------------------------------------ callback / preview
    def _run_callback(self, callback: StepCallback, names: Sequence[str], i: int,
                      t: torch.Tensor, x: torch.Tensor, x0: torch.Tensor, guided: bool,
                      loss: float | None, config: GuidanceConfig,
                      counters: SamplerCounters) -> torch.Tensor:
        tensors = {"latents": x, "x0_hat": x0}
        kwargs: dict[str, Any] = {k: tensors[k] for k in names}
        kwargs.update(guided=guided, loss=loss, preview=None)
        if config.preview_every and (i + 1) % config.preview_every == 0:
            kwargs["preview"] = self.preview(x0, config)
            counters.previews += 1
        result = callback(self, i, t, kwargs)
        if isinstance(result, dict) and result.get("latents") is not None:
            return result["latents"]
        return x

    def iter_frames(self, latents: torch.Tensor, config: GuidanceConfig,
                    generator: torch.Generator | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Decode final latents piece by piece (the adapter's ``iter_decode``), padding dropped:
        (index of the first clip frame, T' x H x W x 3 uint8) as each piece is final."""
        lo, hi = config.pad_frames, config.pad_frames + config.num_frames
        for start, video in self.adapter.iter_decode(latents, generator):
            a, b = max(start, lo), min(start + video.shape[0], hi)
            if a < b:
                yield a - lo, tensor_to_frames(video[a - start:b - start])

    def preview(self, x0: torch.Tensor, config: GuidanceConfig) -> np.ndarray:
        """Low-resolution frames of a clean estimate: pool the latents, decode, drop padding."""
        k = config.preview_downscale
        z = x0
        if k > 1:
            f, c, h, w = z.shape[1:]
            z = F.avg_pool2d(z.reshape(f * c, 1, h, w), k).reshape(1, f, c, h // k, w // k)
        video = self.adapter.decode_latents(z)
        return tensor_to_frames(video[config.pad_frames:config.pad_frames + config.num_frames])

    @staticmethod
    def _lap(since: float) -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - since


def release_guidance(x: torch.Tensor, model_output: torch.Tensor, schedule: NoiseSchedule,
                     i: int, z_prior: torch.Tensor, mask: torch.Tensor,
                     lr: float) -> tuple[torch.Tensor, float]:
    """The release's prior step (``step_Interp_PriorPS``) in the schedule's coordinates.

    The network output is a constant, so x0_hat depends on x_t through its direct term only:
    L = sum(m * (x0_hat - z^p)^2) / sum(m), g = dL/dx_t, and
    x_t <- x_t - lr * sqrt(a_t * s_t) * g / std(g). Returns the moved x_t and L.
    """
    step = schedule.guidance_step(i)
    visible = mask.sum()
    if step == 0.0 or float(visible) == 0.0:
        return x, 0.0
    x_in = x.detach().requires_grad_(True)
    with torch.enable_grad():
        x0 = schedule.to_x0(model_output.detach(), x_in, i)
        loss = (mask * (x0 - z_prior).pow(2)).sum() / visible
        (grad,) = torch.autograd.grad(loss, x_in)
    std = grad.std()
    if not torch.isfinite(std) or float(std) == 0.0:
        return x, float(loss)
    return x - (lr * step) * grad / std, float(loss)
