"""Seconds per delivered frame and peak GPU memory of every preset under every memory profile,
at full size with random weights, on a CUDA device.

Each preset's published model (backend/models/published.py) is built with random weights, its
adapter made with the preset's options, and placed by each profile (backend/models/memory.py:
resident, model offload, float8 storage, group offloading with streams, VAE tiling). The text
encoders are not built (their outputs are random of the published shape; the ``text`` phase
of benchmarks/memory.py is not measured here). A preset whose full clip runs in under
``--full-under`` seconds (projected) runs whole, its frames streamed as the engine does:
seconds per frame and time to the first frame are measured. Slower ones (``paper``) run
``--steps`` guided steps, one round each, and project the full clip from the per-call time and
the sampler's call count. Without CUDA it says so and exits 0. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

PRESETS = ("interactive", "paper")


def load_preset(name: str):
    from backend.guidance import GuidanceConfig
    from backend.models.published import published_for
    from configs import model_path

    with open(model_path(name), "rb") as f:
        video = tomllib.load(f)["video"]
    return (published_for(video["source"]), GuidanceConfig.from_mapping(video.get("guidance", {})),
            video.get("options", {}))


def inputs(model, cfg, device):
    """A random prior (right half of the middle frames hidden), embeddings and initial noise."""
    from backend.guidance import PriorVideo
    from backend.models.adapters import PromptEmbeds

    frames, h, w = cfg.num_frames, cfg.height or model.height, cfg.width or model.width
    rng = np.random.default_rng(0)
    video = rng.integers(0, 255, (frames, h, w, 3), dtype=np.uint8)
    masks = np.ones((frames, h, w), np.float32)
    masks[1:-1, :, w // 2:] = 0.0
    text = torch.randn(1, *model.text_shape, device=device, dtype=torch.bfloat16) \
        if model.text_shape else None
    ones = torch.ones(1, model.text_shape[0], device=device) if model.text_shape else None
    embeds = PromptEmbeds(text, None if text is None else torch.zeros_like(text), ones, ones)
    return PriorVideo(video, masks), embeds


class CallClock:
    """Counts and times the adapter's network calls; interrupts the sampler after ``limit``."""

    def __init__(self, sampler, limit: int | None) -> None:
        self.sampler, self.limit, self.times = sampler, limit, []
        adapter = sampler.adapter
        self._predict = adapter.predict
        adapter.predict = self._timed

    def _timed(self, *args, **kwargs):
        out = self._predict(*args, **kwargs)
        torch.cuda.synchronize()
        self.times.append(time.perf_counter())
        if self.limit is not None and len(self.times) >= self.limit:
            self.sampler.interrupt()
        return out

    def close(self) -> None:
        self.sampler.adapter.predict = self._predict


def run(adapter, model, cfg, device, calls: int | None) -> dict:
    """The whole clip streamed as the engine does (``calls`` None), or the first ``calls``
    network calls and one decode, projected to the clip with the sampler's call count."""
    from backend.guidance import GuidedVideoSampler, SamplingInterrupted
    from backend.guidance.cost import forwards_per_clip

    prior, embeds = inputs(model, cfg, device)
    sampler = GuidedVideoSampler(adapter)
    clock = CallClock(sampler, calls)
    generator = torch.Generator(device="cpu").manual_seed(0)
    forwards = forwards_per_clip(adapter.noise_schedule(cfg.num_inference_steps), cfg)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    try:
        out = sampler(prior.frames[0], prior, cfg, generator=generator, prompt_embeds=embeds,
                      output_type="latent")
        latents = out.latents
    except SamplingInterrupted:
        latents = torch.randn(adapter.latent_shape(cfg.total_frames, cfg.height, cfg.width))
    finally:
        clock.close()
    sampled = time.perf_counter()
    first, delivered = None, 0
    for _, frames in sampler.iter_frames(latents, cfg, generator):
        torch.cuda.synchronize(device)
        first = first or time.perf_counter() - sampled
        delivered += len(frames)
    decode = time.perf_counter() - sampled
    row = {"peak_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2),
           "forwards_full_clip": forwards, "frames": delivered, "projected": calls is not None}
    if calls is None:
        total = time.perf_counter() - start
        row.update(s_per_frame=round(total / delivered, 4), total_s=round(total, 2),
                   ttff_s=round(sampled - start + first, 3))
    else:
        per_call = (clock.times[-1] - clock.times[0]) / max(len(clock.times) - 1, 1)
        before = clock.times[0] - start - per_call  # conditioning and prior encoding
        total = before + per_call * forwards + decode
        row.update(per_call_s=round(per_call, 3), s_per_frame=round(total / delivered, 3),
                   ttff_s=round(before + per_call * forwards + first, 2))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--profiles", default="80gb,48gb,24gb,16gb")
    parser.add_argument("--calls", type=int, default=4,
                        help="network calls timed when a clip is projected rather than run")
    parser.add_argument("--full-under", type=int, default=64,
                        help="run the whole clip when it makes at most this many network calls")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_sampler: no CUDA device here; this benchmark builds the presets' models at "
              "full size and needs a GPU. Skipped (benchmarks/sampler_cost.py and "
              "benchmarks/memory.py count FLOPs and bytes without one).")
        print(json.dumps({"benchmark": "gpu_sampler", "skipped": "no CUDA device"}))
        sys.exit(0)
    from backend.guidance.cost import forwards_per_clip
    from backend.models.adapters import ADAPTERS
    from backend.models.full_size import build_pipeline, published_schedule
    from backend.models.memory import PROFILES, apply_profile

    device = torch.device(args.device)
    summary: dict = {"benchmark": "gpu_sampler", "device": torch.cuda.get_device_name(device),
                     "s_per_frame": {}, "peak_gib": {}, "presets": {}}
    for name in args.presets.split(","):
        model, cfg, options = load_preset(name)
        cfg = cfg.replace(height=cfg.height or model.height, width=cfg.width or model.width)
        full = forwards_per_clip(published_schedule(model, cfg.num_inference_steps), cfg)
        calls = None if full <= args.full_under else args.calls
        rows = summary["presets"][name] = {}
        for profile_name in args.profiles.split(","):
            profile = PROFILES[profile_name]
            pipe = adapter = None
            try:
                home = device if profile.placement == "resident" else torch.device("cpu")
                pipe = build_pipeline(model, home, torch.bfloat16)
                pipe.set_progress_bar_config(disable=True)
                apply_profile(pipe, profile, device)
                adapter = ADAPTERS[model.family](pipe, **options)
                row = run(adapter, model, cfg, device, calls)
            except Exception as exc:  # one profile's failure must not hide the others
                row = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
            rows[profile_name] = row
            summary["s_per_frame"][f"{name}_{profile_name}"] = row.get("s_per_frame")
            summary["peak_gib"][f"{name}_{profile_name}"] = row.get("peak_gib")
            print(f"{name} {profile_name}: {row}", flush=True)
            del pipe, adapter
            torch.cuda.empty_cache()
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
