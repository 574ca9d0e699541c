"""The diffusion engine's Stage II prompt, and the sampler of a dynamic transition.

A dynamics clip and a dynamic transition both need the dynamics prompt Y_D (the request's, or
the MLLM's three steps: check the candidate entities, describe their motion, write the prompt).
A dynamic transition then samples with :class:`~backend.guidance.ComposedVideoSampler`: the
camera-guided score of Stage I and the dynamics prompt's score of Stage II mixed per step
(Diffusion^2 eq. 16) with the preset's logistic schedule, or the request's k and s0.
"""

from __future__ import annotations

from collections.abc import Generator

import numpy as np

from backend.engines.base import ProgressOut
from backend.guidance import GuidanceConfig
from backend.mllm import EntitiesResult, PromptAgent
from protocol.messages import SceneText, TransitionDynamics


def dynamics_prompt(agent: PromptAgent, image: np.ndarray, candidates: EntitiesResult | None,
                    text: SceneText, given: str | None,
                    stage: str = "prompt") -> Generator[ProgressOut, None, str]:
    """Y_D for ``image`` (H x W x 3 uint8): ``given`` as is, else the MLLM's (``candidates``:
    the entities to check; None asks the MLLM for them first). Progress lines under
    ``stage``; the prompt is the generator's return value."""
    if given:
        yield ProgressOut(stage, 2, 2, "prompt from the request")
        return given
    if candidates is None:
        yield ProgressOut(stage, 0, 2, "asking the MLLM which entities are in view")
        candidates = agent.entities(image, text)
    yield ProgressOut(stage, 1, 2, "asking the MLLM how they move")
    result = agent.dynamics_prompt(image, candidates, text)
    yield ProgressOut(stage, 2, 2, result.message if result.is_fallback
                   else f"dynamics prompt: {result.prompt}")
    return result.prompt


def with_schedule(config: GuidanceConfig, dynamics: TransitionDynamics) -> GuidanceConfig:
    """The clip's settings with the request's k and s0 where it sets them."""
    return config.replace(
        dynamics_k=config.dynamics_k if dynamics.k is None else dynamics.k,
        dynamics_s0=config.dynamics_s0 if dynamics.s0 is None else dynamics.s0)

