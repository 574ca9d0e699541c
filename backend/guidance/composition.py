"""Dynamic transitions: Diffusion^2's score composition (eq. 16) of DreamJourney's two stages.

At sampling step i of N (i = 0 the noisiest) the score is

    grad log p = (1 - s_i) * score_I + s_i * score_II,    s_i = 1 - 1 / (1 + exp(k (i/N - s0)))

where score_I is Stage I's camera-guided score (the rendered frames' guidance, then the network
under the transition prompt and end views) and score_II is Stage II's dynamics-prompt score (the
network under the dynamics prompt, plain image-to-video from the first frame). With i counting
from the noisiest step, the early steps, which lay out the clip, follow the camera, and the late
ones, motion and detail, the dynamics prompt: Diffusion^2 gives the geometry (multi-view) score
the weight first and hands over at s0, k setting how sharply (tested 5-30; kept s0 = 0.5, k = 20).

The stages are mixed through their clean estimates: at a fixed x_t the score
(a_t x0_hat - x_t) / s_t^2 is affine in x0_hat, so weights that sum to one mix the scores
exactly, in every parameterisation (at pure noise, a_t = 0, x0_hat still mixes). Stage I's
guidance moves x_t before its network call; its clean estimate is the one whose step from the
unmoved x_t lands where Stage I's own step lands, so its score carries the guidance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .config import GuidanceConfig
from .prior import PriorVideo
from .sampler import GuidedVideoSampler, SamplerCounters
from .schedule import NoiseSchedule

if TYPE_CHECKING:
    from backend.models.adapters.base import Conditioning, PromptEmbeds, VideoFamilyAdapter


def logistic_weight(i: int, n: int, k: float, s0: float) -> float:
    """s = 1 - 1/(1 + exp(k (i/n - s0))), written so that no k overflows (``inf``: 0 before
    s0, 1 after, 1/2 at it)."""
    offset = i / n - s0
    if offset == 0.0:
        return 0.5
    z = k * offset
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@dataclass(frozen=True)
class LogisticSchedule:
    """The dynamics-prompt score's weight per sampling step (Diffusion^2's logistic schedule)."""

    k: float = 20.0
    """Steepness; ``inf`` makes the hand-over a switch at ``s0``."""
    s0: float = 0.5
    """Share of the steps where the weight passes 1/2."""

    def __post_init__(self) -> None:
        if not self.k > 0:
            raise ValueError(f"k must be > 0, got {self.k}")
        if not 0.0 <= self.s0 <= 1.0:
            raise ValueError(f"s0 must be in [0, 1], got {self.s0}")

    @classmethod
    def from_config(cls, config: GuidanceConfig) -> LogisticSchedule:
        return cls(config.dynamics_k, config.dynamics_s0)

    def weight(self, i: int, num_steps: int) -> float:
        """s_i for step ``i`` of ``num_steps`` (0 = the noisiest)."""
        return logistic_weight(i, num_steps, self.k, self.s0)

    def weights(self, num_steps: int) -> list[float]:
        return [self.weight(i, num_steps) for i in range(num_steps)]


class ComposedVideoSampler(GuidedVideoSampler):
    """A dynamic transition: the camera flies while the scene moves.

    Runs the guided sampler's loop (prior, renoise rounds, early stop and padding as
    ``config`` says) and replaces every step's score by eq. 16: Stage I's camera-guided score
    and Stage II's dynamics-prompt score mixed by the logistic weight of
    ``config.dynamics_k`` and ``config.dynamics_s0``. A stage whose weight is exactly 0 is not
    evaluated. The callback may also ask for ``x_t`` (the step's input) and ``score`` (the
    composed score there); every callback gets ``dynamics_weight`` (s of the step).
    """

    _callback_tensor_inputs: tuple[str, ...] = ("latents", "x0_hat", "x_t", "score")

    def __init__(self, adapter: VideoFamilyAdapter, dynamics_prompt: str = "",
                 dynamics_prompt_embeds: PromptEmbeds | None = None) -> None:
        """``dynamics_prompt_embeds`` skips the text encoder for the dynamics prompt (Stage II
        then uses them and ignores ``dynamics_prompt``)."""
        super().__init__(adapter)
        if not dynamics_prompt and dynamics_prompt_embeds is None:
            raise ValueError("a dynamic transition needs a dynamics prompt or its embeddings")
        self.dynamics_prompt = dynamics_prompt
        self.dynamics_prompt_embeds = dynamics_prompt_embeds
        self._dynamics_cond: Conditioning | None = None
        self._last: tuple = ()
        """(schedule, i, x_t, composed x0_hat) of the last round, for the callback."""
        self._weight = 0.0

    def _conditioning(self, image: np.ndarray, total: int, height: int, width: int,
                      prompt_embeds: PromptEmbeds, cfg: bool, generator: torch.Generator,
                      padded: PriorVideo | None, config: GuidanceConfig) -> Conditioning:
        embeds = self.dynamics_prompt_embeds
        if embeds is None:
            embeds = self.adapter.encode_prompt(self.dynamics_prompt, config.negative_prompt, cfg,
                                                config.max_sequence_length)
        # Stage II is plain image-to-video from the first frame: no end views, no prior. It
        # draws what Stage I draws (the same first-frame latents), and the clip's noise stays
        # the camera-guided sampler's
        before = generator.get_state()
        self._dynamics_cond = self.adapter.prepare_conditioning(
            image, total, height, width, embeds, cfg, generator, prior=None)
        generator.set_state(before)
        return super()._conditioning(image, total, height, width, prompt_embeds, cfg, generator,
                                     padded, config)

    def _round(self, x: torch.Tensor, i: int, t: torch.Tensor, schedule: NoiseSchedule,
               cond: Conditioning, config: GuidanceConfig, scale: float | torch.Tensor,
               guided: bool, z_prior: torch.Tensor | None, mask: torch.Tensor | None,
               generator: torch.Generator, counters: SamplerCounters):
        s = LogisticSchedule.from_config(config).weight(i, schedule.num_steps)
        x0_camera = x0_dynamics = camera_step = loss = None
        # 1. Stage I: the prior moves x_t, the network steps from there under the transition
        #    prompt; its clean estimate is read back at the unmoved x_t
        if s < 1.0:
            x_moved, loss = self._guide(x, i, t, schedule, cond, config, scale, guided, z_prior,
                                        mask, generator, counters)
            out = self.adapter.predict(schedule.model_input(x_moved, i), t, cond, scale)
            counters.model_evals += 1
            x0_camera = schedule.to_x0(out, x_moved, i)
            camera_step = schedule.step(x0_camera, x_moved, i)
            if x_moved is not x:
                x0_camera = schedule.x0_of_step(camera_step, x, i)
        # 2. Stage II: the network under the dynamics prompt at the same x_t
        if s > 0.0:
            if self._dynamics_cond is None:
                raise RuntimeError("the dynamics conditioning is made before the first step")
            out = self.adapter.predict(schedule.model_input(x, i), t, self._dynamics_cond, scale)
            counters.model_evals += 1
            counters.dynamics_evals += 1
            x0_dynamics = schedule.to_x0(out, x, i)
        # 3. Eq. 16 on the clean estimates (the scores mix with the same weights), one step;
        #    at weight 0 Stage I's own step, to the last bit
        if x0_dynamics is None:
            x0, x_prev = x0_camera, camera_step
        else:
            x0 = x0_dynamics if x0_camera is None else (1.0 - s) * x0_camera + s * x0_dynamics
            x_prev = schedule.step(x0, x, i)
        self._weight, self._last = s, (schedule, i, x, x0)
        return x_prev, x0, loss

    def _step_tensors(self) -> dict[str, torch.Tensor]:
        schedule, i, x, x0 = self._last
        return {"x_t": x, "score": schedule.score(x0, x, i)}

    def _step_info(self) -> dict[str, Any]:
        return {"dynamics_weight": self._weight}
