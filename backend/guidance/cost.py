"""What one sampler run costs in network calls, from the schedule and the settings alone."""

from __future__ import annotations

from .composition import LogisticSchedule
from .config import GuidanceConfig
from .schedule import NoiseSchedule


def forwards_per_clip(schedule: NoiseSchedule, config: GuidanceConfig,
                      dynamic: bool = False) -> int:
    """Network calls of one run (a CFG pair counts once), as the sampler makes them.

    A guided step (before the early stop, a_t * s_t > 0) runs 1 + R rounds: two calls a round
    in ``release`` mode (guide, step), one in ``blend``. Every other step is one call.
    ``dynamic``: a dynamic transition (ComposedVideoSampler), where a round also calls the
    network under the dynamics prompt, and a stage whose weight is exactly 0 is skipped.
    """
    per_round = 2 if config.mode == "release" else 1
    weights = LogisticSchedule.from_config(config).weights(schedule.num_steps)
    total = 0
    for i in range(schedule.num_steps):
        guided = i in config.guided_range and schedule.guidance_step(i) > 0.0
        rounds = 1 + config.renoise_rounds if guided else 1
        camera = per_round if guided else 1
        if dynamic:
            camera = (camera if weights[i] < 1.0 else 0) + (1 if weights[i] > 0.0 else 0)
        total += rounds * camera
    return total
