"""Guided video sampling (DreamJourney Stage I), plain image-to-video (Stage II) and their
per-step composition for dynamic transitions (Diffusion^2 eq. 16)."""

from .composition import ComposedVideoSampler, LogisticSchedule, logistic_weight
from .config import DEFAULT_TRANSITION_PROMPT, GuidanceConfig
from .prior import PriorVideo, latent_masks
from .sampler import (
    GuidedSampleOutput,
    GuidedVideoSampler,
    SamplerCounters,
    SamplerTimings,
    SamplingInterrupted,
)
from .schedule import NoiseSchedule, schedule_from_scheduler

__all__ = ["DEFAULT_TRANSITION_PROMPT", "ComposedVideoSampler", "GuidanceConfig",
           "GuidedSampleOutput", "GuidedVideoSampler", "LogisticSchedule", "NoiseSchedule",
           "PriorVideo", "SamplerCounters", "SamplerTimings", "SamplingInterrupted",
           "latent_masks", "logistic_weight", "schedule_from_scheduler"]
