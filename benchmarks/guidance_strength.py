"""How strongly each preset's sampler pulls hidden frames to the prior, on an exact model.

The analytic model (backend/models/analytic.py: one random image repeated over every frame,
its clean estimate in closed form) runs each preset's own noise schedule (its published
model's scheduler and step count, written as VE levels) and guidance settings (mode, guided
steps, renoise rounds, lr) on a clip of the preset's latent frame count: one padded view at
each end, the first and last frames visible, the middle frame half visible, the rest hidden,
as a render leaves them. The score is the hidden frames' mean squared error to the prior's
image, guided over unguided (``mode="none"``, same seeds): what the sampler enforces by
itself. What the network's own conditioning adds (end views kept, LTX condition tokens) is
shown by tests/test_pipeline_equivalence.py, not here.

Goals: ``paper_guided_over_unguided`` <= 0.25, ``interactive_guided_over_unguided`` <= 0.5.
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from backend.guidance import GuidanceConfig, GuidedVideoSampler, PriorVideo  # noqa: E402
from backend.models.analytic import GaussianVideoModel, image_latent  # noqa: E402
from backend.models.full_size import published_schedule  # noqa: E402
from backend.models.published import published_for  # noqa: E402
from configs import model_path  # noqa: E402

GOALS = {"paper": 0.25, "interactive": 0.5}
PAD, SIZE = 1, 8
ALTERNATIVES = {
    "release_rule_6_steps_2_rounds": dict(mode="release", guidance_start=0.0, early_stop=0.25,
                                          renoise_rounds=2, lr=0.025),
    "blend_all_steps_no_rounds": dict(mode="blend", guidance_start=0.0, early_stop=0.0,
                                      renoise_rounds=0),
    "blend_last_2_steps_no_rounds": dict(mode="blend", guidance_start=0.75, early_stop=0.0,
                                         renoise_rounds=0),
    "blend_last_2_steps_1_round": dict(mode="blend", guidance_start=0.75, early_stop=0.0,
                                       renoise_rounds=1),
    "blend_last_4_steps_2_rounds": dict(mode="blend", guidance_start=0.5, early_stop=0.0,
                                        renoise_rounds=2),
}
"""Other settings on the interactive preset's schedule, to show where rounds pay (the first
is the previous preset's rule: the release's lr on the first six distilled steps)."""


def preset_setup(name: str) -> tuple[GaussianVideoModel, GuidanceConfig, int]:
    """The analytic model on the preset's VE levels, its guidance and its latent frames."""
    with open(model_path(name), "rb") as f:
        video = tomllib.load(f)["video"]
    model = published_for(video["source"])
    guidance = GuidanceConfig.from_mapping(video.get("guidance", {}))
    schedule = published_schedule(model, guidance.num_inference_steps)
    if schedule.kind != "flow":
        raise ValueError(f"{name}: this benchmark writes flow schedules as VE levels")
    levels = [float(s / a) if a > 0 else float("inf")
              for a, s in zip(schedule.alphas[:-1].tolist(), schedule.sigmas[:-1].tolist(),
                              strict=True)]
    frames = model.latent_grid[0] - 2 * PAD
    config = guidance.replace(num_frames=frames, pad_frames=PAD, guidance_scale=1.0,
                              height=None, width=None)
    return GaussianVideoModel("flow", "flow", levels, size=SIZE), config, frames


def make_prior(model: GaussianVideoModel, frames: int, seed: int) -> tuple[PriorVideo, np.ndarray]:
    image = model.sample_image(torch.Generator().manual_seed(1000 + seed))
    masks = np.zeros((frames, SIZE, SIZE), np.float32)
    masks[0] = masks[-1] = 1.0
    masks[frames // 2, :, : SIZE // 2] = 1.0
    video = image[None].repeat(frames, 0) * (masks[..., None] > 0)
    return PriorVideo(video.astype(np.uint8), masks), image


def hidden_error(model: GaussianVideoModel, config: GuidanceConfig, frames: int,
                 seeds: int) -> tuple[float, int]:
    """Mean squared error of the fully hidden frames to the prior's image; network calls."""
    errors, calls = [], 0
    hidden = [k for k in range(1, frames - 1) if k != frames // 2]
    for seed in range(seeds):
        prior, image = make_prior(model, frames, seed)
        out = GuidedVideoSampler(model)(prior.frames[0], prior, config,
                                        generator=torch.Generator().manual_seed(seed))
        latents = out.latents[0, PAD:PAD + frames][hidden]
        errors.append(float((latents - image_latent(image)).pow(2).mean()))
        calls = out.counters.model_evals
    return float(np.mean(errors)), calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=16)
    args = parser.parse_args()
    summary: dict = {"benchmark": "guidance_strength", "model": "analytic (exact denoiser)",
                     "seeds": args.seeds}
    for name in GOALS:
        model, config, frames = preset_setup(name)
        guided, calls = hidden_error(model, config, frames, args.seeds)
        plain, _ = hidden_error(model, config.replace(mode="none"), frames, args.seeds)
        ratio = guided / plain
        print(f"{name}: {config.mode}, steps {list(config.guided_range)} guided with "
              f"{config.renoise_rounds} rounds ({calls} calls); hidden-frame MSE guided "
              f"{guided:.4f}, unguided {plain:.4f}, ratio {ratio:.3f}")
        summary[f"{name}_guided_mse"] = round(guided, 5)
        summary[f"{name}_unguided_mse"] = round(plain, 5)
        summary[f"{name}_guided_over_unguided"] = round(ratio, 4)
        summary[f"{name}_network_calls"] = calls
    model, config, frames = preset_setup("interactive")
    plain, _ = hidden_error(model, config.replace(mode="none"), frames, args.seeds)
    alternatives = {}
    for label, changes in ALTERNATIVES.items():
        error, calls = hidden_error(model, config.replace(**changes), frames, args.seeds)
        alternatives[label] = {"guided_over_unguided": round(error / plain, 4), "calls": calls}
        print(f"interactive schedule, {label}: ratio {error / plain:.3f} ({calls} calls)")
    summary["interactive_alternatives"] = alternatives
    summary["goals"] = {f"{n}_guided_over_unguided": f"<= {g}" for n, g in GOALS.items()}
    summary["goals_met"] = all(summary[f"{n}_guided_over_unguided"] <= g for n, g in GOALS.items())
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
