"""Seconds per generated frame and peak memory of the guided sampler at full size, on a GPU.

Builds the published architectures with random weights from their published configs
(backend/models/published.py): CogVideoX-5B-I2V (49 frames, 480 x 720), Wan2.1-I2V-14B-480P
and Wan2.1-VACE-1.3B (81 frames, 480 x 832) and LTX-Video-13B (49 frames, 512 x 768). The text
encoders and Wan's CLIP image encoder are replaced by random embeddings of their published
output shapes; everything else (VAE encodes of the prior and the first frame, the denoiser
with CFG, the VAE decode) runs for real. Per mode (plain, release, blend) a short run of
``--steps`` steps is timed, all steps guided and no renoising; each preset's full run
(configs/models/paper.toml, interactive.toml: steps, rounds, CFG) is projected from those
per-step times with the sampler's own call count. Without CUDA it says so and exits 0.
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from backend.models.published import PUBLISHED  # noqa: E402

PRESETS = ("paper", "interactive")


def build_cogvideox(device: torch.device):
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDDIMScheduler,
        CogVideoXImageToVideoPipeline,
        CogVideoXTransformer3DModel,
    )

    from backend.models import CogVideoXAdapter

    spec = PUBLISHED["cogvideox"]
    with torch.device(device):
        transformer = CogVideoXTransformer3DModel(**spec["denoiser"]).to(torch.bfloat16)
        vae = AutoencoderKLCogVideoX(**spec["vae"]).to(torch.bfloat16)
    vae.enable_tiling()
    pipe = CogVideoXImageToVideoPipeline(tokenizer=None, text_encoder=None, vae=vae,
                                         transformer=transformer,
                                         scheduler=CogVideoXDDIMScheduler(**spec["scheduler"]))
    return CogVideoXAdapter(pipe), spec


def build_wan(device: torch.device):
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        WanImageToVideoPipeline,
        WanTransformer3DModel,
    )

    from backend.models import WanAdapter

    spec = PUBLISHED["wan"]
    with torch.device(device):
        transformer = WanTransformer3DModel(**spec["denoiser"]).to(torch.bfloat16)
        vae = AutoencoderKLWan(**spec["vae"]).to(torch.float32)
    pipe = WanImageToVideoPipeline(tokenizer=None, text_encoder=None, vae=vae,
                                   transformer=transformer, image_encoder=None,
                                   image_processor=None,
                                   scheduler=FlowMatchEulerDiscreteScheduler(**spec["scheduler"]))
    image_shape = spec["image_shape"]
    # CLIP ViT-H/14 replaced by random penultimate hidden states of its published shape.
    pipe.encode_image = lambda image, dev=None: torch.randn(1, *image_shape, device=device)
    return WanAdapter(pipe), spec


def build_wan_vace(device: torch.device):
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        WanVACEPipeline,
        WanVACETransformer3DModel,
    )

    from backend.models import WanVACEAdapter

    spec = PUBLISHED["wan-vace"]
    with torch.device(device):
        transformer = WanVACETransformer3DModel(**spec["denoiser"]).to(torch.bfloat16)
        vae = AutoencoderKLWan(**spec["vae"]).to(torch.float32)
    pipe = WanVACEPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=transformer,
                           scheduler=FlowMatchEulerDiscreteScheduler(**spec["scheduler"]))
    return WanVACEAdapter(pipe), spec


def build_ltx(device: torch.device):
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXConditionPipeline,
        LTXVideoTransformer3DModel,
    )

    from backend.models import LTXAdapter

    spec = PUBLISHED["ltx"]
    with torch.device(device):
        transformer = LTXVideoTransformer3DModel(**spec["denoiser"]).to(torch.bfloat16)
        vae = AutoencoderKLLTXVideo(**spec["vae"]).to(torch.bfloat16)
    pipe = LTXConditionPipeline(tokenizer=None, text_encoder=None, vae=vae,
                                transformer=transformer,
                                scheduler=FlowMatchEulerDiscreteScheduler(**spec["scheduler"]))
    return LTXAdapter(pipe, timesteps=spec["timesteps"]), spec


BUILDERS = {"cogvideox": build_cogvideox, "wan": build_wan, "wan-vace": build_wan_vace,
            "ltx": build_ltx}


def run_mode(adapter, spec, mode: str, steps: int, device: torch.device) -> dict:
    from backend.guidance import GuidanceConfig, GuidedVideoSampler, PriorVideo
    from backend.models.adapters import PromptEmbeds

    pad = 4
    frames = spec["frames"] - 2 * pad
    h, w = spec["height"], spec["width"]
    rng = np.random.default_rng(0)
    video = rng.integers(0, 255, (frames, h, w, 3), dtype=np.uint8)
    masks = np.ones((frames, h, w), np.float32)
    masks[1:-1, :, w // 2:] = 0.0
    text = torch.randn(1, *spec["text_shape"], device=device, dtype=torch.bfloat16)
    ones = torch.ones(1, spec["text_shape"][0], device=device)
    embeds = PromptEmbeds(text, torch.zeros_like(text), ones, ones)
    cfg = GuidanceConfig(num_frames=frames, pad_frames=pad, num_inference_steps=steps,
                         early_stop=0.0, renoise_rounds=0, height=h, width=w, mode=mode)
    torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    out = GuidedVideoSampler(adapter)(video[0], PriorVideo(video, masks), cfg,
                                      generator=torch.Generator(device="cpu").manual_seed(0),
                                      prompt_embeds=embeds)
    total = time.perf_counter() - start
    t = out.timings
    return {
        "step_s": float(np.median(t.step_s)), "fixed_s": total - sum(t.step_s),
        "seconds_per_frame": total / frames, "frames": frames,
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30,
    }


def project(adapter, result: dict, preset: str) -> float:
    """Seconds per delivered frame of a preset's full run from the measured times: the plain
    step time (one CFG-batched call) times the sampler's call count, plus the fixed costs."""
    import tomllib

    from backend.guidance import GuidanceConfig
    from backend.guidance.cost import forwards_per_clip
    from backend.models.spec import CONFIG_DIR

    with open(CONFIG_DIR / f"{preset}.toml", "rb") as f:
        cfg = GuidanceConfig.from_mapping(tomllib.load(f)["video"].get("guidance", {}))
    calls = forwards_per_clip(adapter.noise_schedule(cfg.num_inference_steps), cfg)
    per_call = result["none"]["step_s"]  # measured with CFG on (both branches)
    if cfg.guidance_scale <= 1.0:
        per_call /= 2
    return (result["release"]["fixed_s"] + calls * per_call) / result["release"]["frames"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cogvideox,wan,wan-vace,ltx")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_sampler: no CUDA device here; this benchmark builds CogVideoX-5B-I2V, "
              "Wan2.1-I2V-14B, Wan2.1-VACE-1.3B and LTX-Video-13B at native resolution and "
              "needs a large GPU. Skipped (benchmarks/sampler_cost.py counts FLOPs without one).")
        print(json.dumps({"benchmark": "gpu_sampler", "skipped": "no CUDA device"}))
        sys.exit(0)
    device = torch.device(args.device)
    summary: dict = {"benchmark": "gpu_sampler", "device": torch.cuda.get_device_name(device)}
    for name in args.models.split(","):
        adapter, spec = BUILDERS[name](device)
        result = {m: run_mode(adapter, spec, m, args.steps, device)
                  for m in ("none", "release", "blend")}
        for mode, r in result.items():
            print(f"{name} {mode}: {r['step_s']:.2f} s/step, {r['seconds_per_frame']:.2f} s/frame "
                  f"({args.steps} steps), peak {r['peak_gib']:.1f} GiB")
        summary[name] = {
            "resolution": f"{spec['width']}x{spec['height']}x{spec['frames']}",
            "step_s": {m: round(r["step_s"], 3) for m, r in result.items()},
            "peak_gib": {m: round(r["peak_gib"], 2) for m, r in result.items()},
            "release_over_plain": round(result["release"]["step_s"] / result["none"]["step_s"], 3),
            "blend_over_plain": round(result["blend"]["step_s"] / result["none"]["step_s"], 3),
            "projected_s_per_frame": {p: round(project(adapter, result, p), 2) for p in PRESETS},
        }
        del adapter
        torch.cuda.empty_cache()
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
