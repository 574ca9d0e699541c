"""Per-step cost of plain, release-guided and blend sampling, side by side, on the CPU.

Same CogVideoX-I2V model, same inputs and seed for the three modes, for a tiny (~30k
transformer parameters) and a small (~4M) config. Renoising is off, so a step is one round:
one network call plain, two in ``release`` mode (guide, then step; no backward), one in
``blend`` (renoise rounds multiply every mode by the same factor). Each mode runs
``--repeats`` times interleaved; the median step time is reported (step 0 of the
zero-terminal-SNR schedule is unguided in every mode and drops out of the median). The last
line is one JSON object with the small config's ``release_over_plain`` (goal: at most 2.1,
two forwards a round) and ``blend_over_plain``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from backend.guidance import GuidanceConfig, GuidedVideoSampler, PriorVideo  # noqa: E402
from backend.models import CogVideoXAdapter, testing  # noqa: E402

MODES = ("none", "release", "blend")


def prior_video(frames: int, size: int) -> PriorVideo:
    rng = np.random.default_rng(0)
    video = rng.integers(0, 255, (frames, size, size, 3), dtype=np.uint8)
    masks = np.ones((frames, size, size), np.float32)
    masks[1:-1, :, size // 2:] = 0.0
    return PriorVideo(video, masks)


def bench_config(size_name: str, steps: int, repeats: int) -> dict:
    pipe = testing.cogvideox_pipeline(size=size_name)
    adapter = CogVideoXAdapter(pipe)
    params = sum(p.numel() for p in adapter.denoiser.parameters())
    size, frames, pad = 32, 5, 2
    prior = prior_video(frames, size)
    sampler = GuidedVideoSampler(adapter)
    base = GuidanceConfig(num_frames=frames, pad_frames=pad, num_inference_steps=steps,
                          early_stop=0.0, renoise_rounds=0, height=size, width=size,
                          max_sequence_length=16, prompt="a camera flyover", negative_prompt="")
    times: dict[str, list[float]] = {m: [] for m in MODES}
    for r in range(repeats + 1):  # the first round warms up and is discarded
        for mode in MODES:
            out = sampler(prior.frames[0], prior, base.replace(mode=mode),
                          generator=torch.Generator().manual_seed(0))
            if r:
                times[mode].extend(out.timings.step_s)
    step = {m: statistics.median(v) for m, v in times.items()}
    return {"params": params, "step_s": step,
            "release_over_plain": step["release"] / step["none"],
            "blend_over_plain": step["blend"] / step["none"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    for name in ("tiny", "small"):
        results[name] = bench_config(name, args.steps, args.repeats)
        r = results[name]
        print(f"{name}: {r['params'] / 1e6:.2f}M params, step plain {r['step_s']['none'] * 1e3:.1f} ms,"
              f" release {r['step_s']['release'] * 1e3:.1f} ms,"
              f" blend {r['step_s']['blend'] * 1e3:.1f} ms")
    small = results["small"]
    summary = {
        "benchmark": "sampler",
        "device": "cpu",
        "model": "cogvideox-i2v (random weights)",
        "release_over_plain": round(small["release_over_plain"], 3),
        "blend_over_plain": round(small["blend_over_plain"], 3),
        "tiny_release_over_plain": round(results["tiny"]["release_over_plain"], 3),
        "tiny_blend_over_plain": round(results["tiny"]["blend_over_plain"], 3),
        "small_params": small["params"],
        "small_step_ms": {m: round(v * 1e3, 2) for m, v in small["step_s"].items()},
        "tiny_step_ms": {m: round(v * 1e3, 2) for m, v in results["tiny"]["step_s"].items()},
        "goals": {"release_over_plain": 2.1, "blend_over_plain": 1.1},
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
