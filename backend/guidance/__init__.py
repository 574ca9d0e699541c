"""Guided video sampling (DreamJourney Stage I) and plain image-to-video (Stage II)."""

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

__all__ = ["DEFAULT_TRANSITION_PROMPT", "GuidanceConfig", "GuidedSampleOutput",
           "GuidedVideoSampler", "NoiseSchedule", "PriorVideo", "SamplerCounters",
           "SamplerTimings", "SamplingInterrupted", "latent_masks", "schedule_from_scheduler"]
