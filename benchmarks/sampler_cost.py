"""FLOPs per delivered frame of the ``paper`` and ``interactive`` presets, and of every published
video model under both presets' guidance settings.

No GPU and no weights: each published denoiser and VAE (backend/models/published.py) is built
on the meta device and counted with ``torch.utils.flop_counter.FlopCounterMode`` (matmuls,
convolutions, attention) at its native clip. A clip costs: the denoiser forward times the
sampler's network calls under the preset (``forwards_per_clip`` on the model's own schedule:
release rounds are two calls, blend rounds one, steps with a_t * s_t = 0 one) times 2 under
classifier-free guidance; plus the VAE encoding the padded prior (when the preset guides or
conditions on it) and the first frame, and decoding the clip (LTX decodes in the VAE's temporal
tiles, as the engine streams them). Divided by the frames delivered (padding excluded).

A dynamic transition (Diffusion^2's composed score) adds a network call under the dynamics
prompt to every round whose logistic weight is not exactly 0 (``*_dynamic_tflops_per_frame``,
``interactive_dynamic_over_static``).

``interactive_ttff_forwards``: denoiser forwards before the first frame can be shown (every
step of the clip: frames exist only once the last step is done; then one VAE tile).
Goals: ``interactive_tflops_per_frame`` <= 16 at >= 704 x 480 and >= 41 frames (real time on
one H100 at about half its dense bf16 peak). Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from diffusers.utils import logging as diffusers_logging  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from backend.guidance import GuidanceConfig  # noqa: E402
from backend.guidance.cost import forwards_per_clip  # noqa: E402
from backend.models import full_size as fs  # noqa: E402
from backend.models.published import PUBLISHED, PublishedModel, published_for  # noqa: E402
from configs import model_path  # noqa: E402

PRESETS = ("paper", "interactive")
GOAL_TFLOPS_PER_FRAME = 16.0
MIN_SIZE, MIN_FRAMES = (704, 480), 41


def tflops(fn) -> float:
    with torch.no_grad(), torch.device("meta"), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e12


def preset(name: str) -> tuple[PublishedModel, GuidanceConfig, dict]:
    """The preset's published model, guidance settings and adapter options."""
    with open(model_path(name), "rb") as f:
        video = tomllib.load(f)["video"]
    return (published_for(video["source"]), GuidanceConfig.from_mapping(video.get("guidance", {})),
            video.get("options", {}))


class ModelCost:
    """TFLOPs of one denoiser forward and of the VAE's passes, for one published model."""

    def __init__(self, model: PublishedModel) -> None:
        self.model = model
        with torch.device("meta"):  # legacy torch.Tensor parameters (SVD) need the .to
            self.denoiser = fs.build_denoiser(model).to("meta", torch.bfloat16)
            self.vae = fs.build_vae(model).to("meta", torch.bfloat16)
        self.params_b = sum(p.numel() for p in self.denoiser.parameters()) / 1e9
        self._forward: dict[bool, float] = {}

    def forward(self, extra_tokens: bool = True) -> float:
        if extra_tokens not in self._forward:
            kwargs = fs.denoiser_inputs(self.model)
            if self.model.family == "ltx" and not extra_tokens:
                f, h, w = self.model.latent_grid
                n = f * h * w
                kwargs = dict(kwargs, hidden_states=kwargs["hidden_states"][:, :n],
                              timestep=kwargs["timestep"][:, :n],
                              video_coords=kwargs["video_coords"][:, :, :n])
            self._forward[extra_tokens] = tflops(lambda: self.denoiser(**kwargs, return_dict=False))
        return self._forward[extra_tokens]

    def encode(self, frames: int | None = None) -> float:
        pixels = fs.vae_pixels(self.model)
        if frames is not None:
            pixels = pixels[:frames] if self.model.family == "svd" else pixels[:, :, :frames]
        return tflops(lambda: self.vae.encode(pixels))

    def decode(self, streamed: bool) -> float:
        self.vae.use_framewise_decoding = streamed and self.model.family == "ltx"
        return tflops(lambda: fs.vae_decode(self.vae, self.model, fs.vae_latents(self.model)))

    def first_tile(self) -> float:
        """The decode before the first frame is shown: one temporal tile (LTX), else all."""
        if self.model.family != "ltx":
            return self.decode(streamed=False)
        vae = self.vae
        tile = vae.tile_sample_min_num_frames // self.model.temporal + 1
        z = fs.vae_latents(self.model)[:, :, :tile]
        temb = torch.zeros(1, device="meta", dtype=z.dtype)
        return tflops(lambda: vae.decoder(z, temb))


def clip_cost(cost: ModelCost, cfg: GuidanceConfig, options: dict, dynamic: bool = False) -> dict:
    model = cost.model
    delivered = model.frames - 2 * cfg.pad_frames
    cfg = cfg.replace(num_frames=delivered)
    schedule = fs.published_schedule(model, cfg.num_inference_steps)
    calls = forwards_per_clip(schedule, cfg, dynamic)
    branches = 2 if cfg.guidance_scale > 1.0 else 1
    prior_tokens = bool(options.get("prior_tokens", False))
    forward = cost.forward(extra_tokens=not prior_tokens)
    denoise = forward * calls * branches
    encode = cost.encode(frames=1)  # the first frame (conditioning)
    if cfg.mode != "none" or prior_tokens:
        encode += cost.encode()  # the padded prior, once
    if model.family == "ltx" and not prior_tokens:
        encode += cost.encode(frames=1)  # the end view's condition tokens
    decode = cost.decode(streamed=True)
    total = denoise + encode + decode
    return {
        "forwards": calls, "cfg_branches": branches, "frames": delivered,
        "resolution": f"{model.width}x{model.height}",
        "forward_tflops": round(forward, 2), "denoise_tflops": round(denoise, 1),
        "vae_tflops": round(encode + decode, 1), "tflops_per_clip": round(total, 1),
        "tflops_per_frame": round(total / delivered, 2),
        "denoiser_tflops_per_frame": round(denoise / delivered, 2),
        "ttff_forwards": calls * branches,
        "ttff_tflops": round(denoise + encode + cost.first_tile(), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(PUBLISHED),
                        help="published models to tabulate under both presets' settings")
    args = parser.parse_args()
    diffusers_logging.set_verbosity_error()  # casting random meta models is not news
    presets = {name: preset(name) for name in PRESETS}
    costs: dict[str, ModelCost] = {}

    def cost_of(model: PublishedModel) -> ModelCost:
        if model.name not in costs:
            costs[model.name] = ModelCost(model)
        return costs[model.name]

    runs = {name: clip_cost(cost_of(model), cfg, options)
            for name, (model, cfg, options) in presets.items()}
    dynamic = {name: clip_cost(cost_of(model), cfg, options, dynamic=True)
               for name, (model, cfg, options) in presets.items()}
    for name, row in dynamic.items():
        print(f"preset {name}, dynamic transition: {row['forwards']} calls x"
              f"{row['cfg_branches']}, {row['tflops_per_frame']} TFLOPs/frame")
    for name, row in runs.items():
        model = presets[name][0]
        print(f"preset {name}: {model.name} ({cost_of(model).params_b:.2f}B) at "
              f"{row['resolution']}x{row['frames']}: {row['forwards']} calls x"
              f"{row['cfg_branches']}, {row['tflops_per_frame']} TFLOPs/frame "
              f"(denoiser {row['denoiser_tflops_per_frame']}, VAE {row['vae_tflops']} per clip)")
    table = {}
    for name in args.models.split(","):
        model = PUBLISHED[name]
        cost = cost_of(model)
        table[name] = {"params_b": round(cost.params_b, 2),
                       "forward_tflops": round(cost.forward(), 1),
                       **{p: clip_cost(cost, cfg, {})["tflops_per_frame"]
                          for p, (_, cfg, _) in presets.items()}}
        print(f"{name}: {cost.params_b:.2f}B, {table[name]['forward_tflops']} TFLOPs/forward; "
              f"per frame under paper settings {table[name]['paper']}, "
              f"interactive settings {table[name]['interactive']}")
    inter, paper = runs["interactive"], runs["paper"]
    width, height = (int(v) for v in inter["resolution"].split("x"))
    summary = {
        "benchmark": "sampler_cost",
        "device": "meta (FLOP count, no GPU)",
        "presets": runs,
        "models_tflops_per_frame": table,
        "paper_model": presets["paper"][0].name,
        "interactive_model": presets["interactive"][0].name,
        "paper_tflops_per_frame": paper["tflops_per_frame"],
        "interactive_tflops_per_frame": inter["tflops_per_frame"],
        "interactive_resolution": f"{inter['resolution']}x{inter['frames']}",
        "interactive_ttff_forwards": inter["ttff_forwards"],
        "interactive_ttff_tflops": inter["ttff_tflops"],
        "interactive_over_paper": round(inter["tflops_per_frame"] / paper["tflops_per_frame"], 5),
        "dynamic_presets": dynamic,
        "paper_dynamic_tflops_per_frame": dynamic["paper"]["tflops_per_frame"],
        "interactive_dynamic_tflops_per_frame": dynamic["interactive"]["tflops_per_frame"],
        "interactive_dynamic_over_static": round(
            dynamic["interactive"]["tflops_per_frame"] / inter["tflops_per_frame"], 3),
        "goals": {"interactive_tflops_per_frame": f"<= {GOAL_TFLOPS_PER_FRAME}",
                  "interactive_resolution": f">= {MIN_SIZE[0]}x{MIN_SIZE[1]}x{MIN_FRAMES}"},
        "goals_met": inter["tflops_per_frame"] <= GOAL_TFLOPS_PER_FRAME
        and width >= MIN_SIZE[0] and height >= MIN_SIZE[1] and inter["frames"] >= MIN_FRAMES,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
