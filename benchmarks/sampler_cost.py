"""FLOPs per generated frame of every video family under the ``paper`` and ``interactive`` presets.

No GPU and no weights: each family's published denoiser (backend/models/published.py) is built
on the meta device and one forward at its native resolution and clip length is counted with
``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions, attention). A clip costs
that times the network calls the sampler makes under a preset (``forwards_per_clip`` on the
family's own schedule: release rounds are two calls, steps with a_t * s_t = 0 are one) times 2
under classifier-free guidance; divided by the frames delivered (padding excluded).

``paper_tflops_per_frame`` is CogVideoX-5B-I2V under the paper preset (the release's schedule;
EasyAnimate itself is not built here). Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from backend.guidance import GuidanceConfig, NoiseSchedule, schedule_from_scheduler  # noqa: E402
from backend.guidance.cost import forwards_per_clip  # noqa: E402
from backend.models.adapters.ltx import ltx_noise_schedule  # noqa: E402
from backend.models.published import PUBLISHED  # noqa: E402
from backend.models.spec import CONFIG_DIR  # noqa: E402

PRESETS = ("paper", "interactive")
GOALS = {"interactive_tflops_per_frame": 200.0, "interactive_over_paper": 1 / 20}


def preset_guidance(name: str) -> tuple[str, GuidanceConfig]:
    """The preset file's video family and its guidance settings."""
    with open(CONFIG_DIR / f"{name}.toml", "rb") as f:
        video = tomllib.load(f)["video"]
    return video["family"], GuidanceConfig.from_mapping(video.get("guidance", {}))


def latent_grid(spec: dict) -> tuple[int, int, int]:
    frames = (spec["frames"] - 1) // spec["temporal"] + 1
    return frames, spec["height"] // spec["spatial"], spec["width"] // spec["spatial"]


def meta_forward(family: str, spec: dict) -> tuple[torch.nn.Module, dict]:
    """The family's denoiser on the meta device and the keyword arguments of one forward."""
    import diffusers

    f, h, w = latent_grid(spec)
    c = spec["channels"]
    meta = torch.device("meta")

    def empty(*shape):
        return torch.empty(*shape, device=meta)

    text = spec.get("text_shape")
    with meta:
        if family == "cogvideox":
            net = diffusers.CogVideoXTransformer3DModel(**spec["denoiser"])
            kwargs = dict(hidden_states=empty(1, f, 2 * c, h, w), encoder_hidden_states=empty(1, *text),
                          timestep=empty(1))
        elif family == "wan":
            net = diffusers.WanTransformer3DModel(**spec["denoiser"])
            kwargs = dict(hidden_states=empty(1, spec["denoiser"]["in_channels"], f, h, w),
                          encoder_hidden_states=empty(1, *text), timestep=empty(1),
                          encoder_hidden_states_image=empty(1, *spec["image_shape"]))
        elif family == "wan-vace":
            net = diffusers.WanVACETransformer3DModel(**spec["denoiser"])
            layers = len(spec["denoiser"]["vace_layers"])
            kwargs = dict(hidden_states=empty(1, c, f, h, w), encoder_hidden_states=empty(1, *text),
                          timestep=empty(1), control_hidden_states=empty(1, 96, f, h, w),
                          control_hidden_states_scale=torch.ones(layers))
        elif family == "ltx":
            net = diffusers.LTXVideoTransformer3DModel(**spec["denoiser"])
            tokens = f * h * w + h * w  # the clip plus the end view's condition tokens
            kwargs = dict(hidden_states=empty(1, tokens, c), encoder_hidden_states=empty(1, *text),
                          timestep=empty(1, tokens), encoder_attention_mask=torch.ones(1, text[0]),
                          video_coords=empty(1, 3, tokens))
        elif family == "svd":
            net = diffusers.UNetSpatioTemporalConditionModel(**spec["denoiser"])
            kwargs = dict(sample=empty(1, f, 2 * c, h, w), timestep=empty(1),
                          encoder_hidden_states=empty(1, *spec["image_shape"]),
                          added_time_ids=empty(1, 3))
        else:
            raise ValueError(f"unknown family {family!r}")
    # Legacy ``torch.Tensor([...])`` parameters (SVD's mixing factors) ignore the device context.
    return net.to(meta), kwargs


def forward_tflops(family: str, spec: dict) -> tuple[float, float]:
    """(TFLOPs of one batch-1 forward, parameters in billions)."""
    net, kwargs = meta_forward(family, spec)
    params = sum(p.numel() for p in net.parameters()) / 1e9
    # Tensors the forward makes without a device (SVD's mixing weights) go to meta too.
    with torch.no_grad(), torch.device("meta"), FlopCounterMode(display=False) as counter:
        net(**kwargs, return_dict=False)
    return counter.get_total_flops() / 1e12, params


def family_schedule(family: str, spec: dict, steps: int, distilled: bool) -> NoiseSchedule:
    import diffusers

    if family == "cogvideox":
        return schedule_from_scheduler(diffusers.CogVideoXDDIMScheduler(**spec["scheduler"]), steps)
    if family in ("wan", "wan-vace"):
        return schedule_from_scheduler(
            diffusers.FlowMatchEulerDiscreteScheduler(**spec["scheduler"]), steps)
    if family == "svd":
        return schedule_from_scheduler(diffusers.EulerDiscreteScheduler(**spec["scheduler"]), steps)
    timesteps = spec["timesteps"] if distilled and steps == len(spec["timesteps"]) else None
    return ltx_noise_schedule(diffusers.FlowMatchEulerDiscreteScheduler(**spec["scheduler"]),
                              steps, timesteps)


def clip_cost(family: str, spec: dict, forward_tf: float, cfg: GuidanceConfig) -> dict:
    delivered = spec["frames"] - 2 * cfg.pad_frames
    cfg = cfg.replace(num_frames=delivered)
    schedule = family_schedule(family, spec, cfg.num_inference_steps, distilled=True)
    calls = forwards_per_clip(schedule, cfg)
    branches = 2 if cfg.guidance_scale > 1.0 else 1
    total = forward_tf * calls * branches
    return {"forwards": calls, "cfg_branches": branches, "frames": delivered,
            "tflops_per_clip": round(total, 1), "tflops_per_frame": round(total / delivered, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(PUBLISHED))
    args = parser.parse_args()
    presets = {name: preset_guidance(name) for name in PRESETS}
    table: dict[str, dict] = {}
    for family in args.families.split(","):
        spec = PUBLISHED[family]
        forward_tf, params = forward_tflops(family, spec)
        table[family] = {"params_b": round(params, 2), "forward_tflops": round(forward_tf, 1),
                         "resolution": f"{spec['width']}x{spec['height']}x{spec['frames']}"}
        for name, (_, cfg) in presets.items():
            table[family][name] = clip_cost(family, spec, forward_tf, cfg)
        row = table[family]
        print(f"{family}: {params:.2f}B params, {forward_tf:.1f} TFLOPs/forward at "
              f"{row['resolution']}; paper {row['paper']['tflops_per_frame']} TFLOPs/frame "
              f"({row['paper']['forwards']} calls x{row['paper']['cfg_branches']}), interactive "
              f"{row['interactive']['tflops_per_frame']} TFLOPs/frame "
              f"({row['interactive']['forwards']} calls x{row['interactive']['cfg_branches']})")
    paper_family, interactive_family = presets["paper"][0], presets["interactive"][0]
    paper = table[paper_family]["paper"]["tflops_per_frame"]
    interactive = table[interactive_family]["interactive"]["tflops_per_frame"]
    summary = {
        "benchmark": "sampler_cost",
        "device": "meta (FLOP count, no GPU)",
        "tflops_per_frame": {f: {p: row[p]["tflops_per_frame"] for p in PRESETS}
                             for f, row in table.items()},
        "forwards_per_clip": {f: {p: row[p]["forwards"] * row[p]["cfg_branches"] for p in PRESETS}
                              for f, row in table.items()},
        "forward_tflops": {f: row["forward_tflops"] for f, row in table.items()},
        "paper_model": paper_family,
        "interactive_model": interactive_family,
        "paper_tflops_per_frame": paper,
        "interactive_tflops_per_frame": interactive,
        "interactive_over_paper": round(interactive / paper, 5),
        "goals": {"interactive_tflops_per_frame": "< 200", "interactive_over_paper": "< 0.05"},
        "goals_met": interactive < GOALS["interactive_tflops_per_frame"]
        and interactive / paper < GOALS["interactive_over_paper"],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
