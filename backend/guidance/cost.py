"""What one sampler run costs in network calls, from the schedule and the settings alone."""

from __future__ import annotations

from .config import GuidanceConfig
from .schedule import NoiseSchedule


def forwards_per_clip(schedule: NoiseSchedule, config: GuidanceConfig) -> int:
    """Network calls of one run (a CFG pair counts once), as the sampler makes them.

    A guided step (before the early stop, a_t * s_t > 0) runs 1 + R rounds: two calls a round
    in ``release`` mode (guide, step), one in ``blend``. Every other step is one call.
    """
    per_round = 2 if config.mode == "release" else 1
    rounds = 1 + config.renoise_rounds
    total = 0
    for i in range(schedule.num_steps):
        guided = i in config.guided_range and schedule.guidance_step(i) > 0.0
        total += per_round * rounds if guided else 1
    return total
