"""Seconds per generated frame and peak memory of the guided sampler at full size, on a GPU.

Builds the published architectures with random weights from their published configs
(numbers written below): CogVideoX-5B-I2V (49 frames, 480 x 720) and Wan2.1-I2V-14B-480P
(81 frames, 480 x 832). The text encoders (T5-XXL / UMT5-XXL) and Wan's CLIP image encoder
are replaced by random embeddings of their published output shapes; everything else (VAE
encode of the prior and the first frame, the denoiser with CFG, the gradient through it,
the VAE decode) runs for real. Per mode (plain, dps, blend) a short run of ``--steps`` steps
is timed, all steps guided and no renoising; the full default run (25 steps, 20 guided,
``--renoise`` rounds) is projected from those per-step times. Last line: one JSON object.
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

# Published configs (transformer/config.json, vae/config.json, scheduler of each release).
COGVIDEOX_5B_I2V = {
    "transformer": dict(
        num_attention_heads=48, attention_head_dim=64, in_channels=32, out_channels=16,
        flip_sin_to_cos=True, freq_shift=0, time_embed_dim=512, text_embed_dim=4096,
        num_layers=42, dropout=0.0, attention_bias=True, sample_width=90, sample_height=60,
        sample_frames=49, patch_size=2, temporal_compression_ratio=4, max_text_seq_length=226,
        activation_fn="gelu-approximate", timestep_activation_fn="silu",
        norm_elementwise_affine=True, norm_eps=1e-5, spatial_interpolation_scale=1.875,
        temporal_interpolation_scale=1.0, use_rotary_positional_embeddings=True,
        use_learned_positional_embeddings=True,
    ),
    "vae": dict(
        in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(128, 256, 256, 512),
        latent_channels=16, layers_per_block=3, act_fn="silu", norm_eps=1e-6,
        norm_num_groups=32, temporal_compression_ratio=4, sample_height=480, sample_width=720,
        scaling_factor=0.7,
    ),
    "scheduler": dict(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        num_train_timesteps=1000, prediction_type="v_prediction", rescale_betas_zero_snr=True,
        set_alpha_to_one=True, snr_shift_scale=1.0, steps_offset=0, timestep_spacing="trailing",
    ),
    "text_shape": (226, 4096),
    "frames": 49, "height": 480, "width": 720,
}

WAN21_I2V_14B_480P = {
    "transformer": dict(
        patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=36,
        out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=1280,
        added_kv_proj_dim=5120, rope_max_seq_len=1024,
    ),
    "vae": dict(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                temperal_downsample=[False, True, True], dropout=0.0),
    "scheduler": dict(num_train_timesteps=1000, shift=3.0),
    "text_shape": (512, 4096),
    "image_shape": (257, 1280),
    "frames": 81, "height": 480, "width": 832,
}


def build_cogvideox(device: torch.device):
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDDIMScheduler,
        CogVideoXImageToVideoPipeline,
        CogVideoXTransformer3DModel,
    )

    from backend.models import CogVideoXAdapter

    spec = COGVIDEOX_5B_I2V
    with torch.device(device):
        transformer = CogVideoXTransformer3DModel(**spec["transformer"]).to(torch.bfloat16)
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

    spec = WAN21_I2V_14B_480P
    with torch.device(device):
        transformer = WanTransformer3DModel(**spec["transformer"]).to(torch.bfloat16)
        vae = AutoencoderKLWan(**spec["vae"]).to(torch.float32)
    pipe = WanImageToVideoPipeline(tokenizer=None, text_encoder=None, vae=vae,
                                   transformer=transformer, image_encoder=None,
                                   image_processor=None,
                                   scheduler=FlowMatchEulerDiscreteScheduler(**spec["scheduler"]))
    image_shape = spec["image_shape"]
    # CLIP ViT-H/14 replaced by random penultimate hidden states of its published shape.
    pipe.encode_image = lambda image, dev=None: torch.randn(1, *image_shape, device=device)
    return WanAdapter(pipe), spec


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
    embeds = PromptEmbeds(text, torch.zeros_like(text))
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


def project(result: dict, renoise: int, steps: int = 25, early_stop: float = 0.2) -> float:
    """Seconds per frame of a full default dps run from the measured per-step times."""
    guided = round(steps * (1 - early_stop))
    plain = result["none"]["step_s"] * (steps - guided)
    dps = result["dps"]["step_s"] * guided * (1 + renoise)
    return (result["dps"]["fixed_s"] + plain + dps) / result["dps"]["frames"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cogvideox,wan")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--renoise", type=int, default=15, help="rounds used in the projection")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_sampler: no CUDA device here; this benchmark builds CogVideoX-5B-I2V and "
              "Wan2.1-I2V-14B at native resolution and needs a large GPU. Skipped.")
        print(json.dumps({"benchmark": "gpu_sampler", "skipped": "no CUDA device"}))
        sys.exit(0)
    device = torch.device(args.device)
    builders = {"cogvideox": build_cogvideox, "wan": build_wan}
    summary: dict = {"benchmark": "gpu_sampler", "device": torch.cuda.get_device_name(device)}
    for name in args.models.split(","):
        adapter, spec = builders[name](device)
        result = {m: run_mode(adapter, spec, m, args.steps, device) for m in ("none", "dps", "blend")}
        for mode, r in result.items():
            print(f"{name} {mode}: {r['step_s']:.2f} s/step, {r['seconds_per_frame']:.2f} s/frame "
                  f"({args.steps} steps), peak {r['peak_gib']:.1f} GiB")
        summary[name] = {
            "resolution": f"{spec['width']}x{spec['height']}x{spec['frames']}",
            "step_s": {m: round(r["step_s"], 3) for m, r in result.items()},
            "peak_gib": {m: round(r["peak_gib"], 2) for m, r in result.items()},
            "dps_over_plain": round(result["dps"]["step_s"] / result["none"]["step_s"], 3),
            "blend_over_plain": round(result["blend"]["step_s"] / result["none"]["step_s"], 3),
            "projected_s_per_frame_default": round(project(result, args.renoise), 2),
            "projected_s_per_frame_no_renoise": round(project(result, 0), 2),
        }
        del adapter
        torch.cuda.empty_cache()
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
