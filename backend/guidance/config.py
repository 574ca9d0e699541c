"""Settings of the guided video sampler (DreamJourney Stage I, as the authors' release runs it)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

DEFAULT_TRANSITION_PROMPT = ("A fast camera flyover, cruising steadily across the scene. Clean motion, "
                             "flowing without jitters, moving fluidly through the air.")
"""The Stage I prompt of the authors' release (EasyAnimate inference script)."""
DEFAULT_NEGATIVE_PROMPT = (
    "The video has blurry area. The video is not of a high quality, it has a low resolution, "
    "and the audio quality is not clear. Strange motion trajectory, a poor composition and "
    "deformed video, low resolution, duplicate and ugly, strange body structure, long and "
    "strange neck, bad teeth, bad eyes, bad limbs, bad hands, rotating camera, blurry camera, "
    "shaking camera. Deformation, low-resolution, blurry, ugly, distortion.")
"""The release's negative prompt."""

GuidanceMode = Literal["release", "blend", "none"]
MODES: tuple[str, ...] = ("release", "blend", "none")


@dataclass(frozen=True)
class GuidanceConfig:
    """Everything the sampler needs besides the model and the inputs. Frozen: use ``replace``.

    Defaults follow the authors' release (the ``paper`` preset): 48 frames + 4 padded views at
    each end, 25 steps, classifier-free guidance 7, lr 0.025, no guidance in the last 20% of
    steps, 15 renoise rounds per guided step.
    """

    num_frames: int = 48
    """Frames of the clip the caller renders and gets back: I_0, the partial frames, I_N."""
    pad_frames: int = 4
    """View padding: copies of I_0 prepended and of I_N appended; dropped from the output."""
    num_inference_steps: int = 25
    guidance_scale: float = 7.0
    """Classifier-free guidance scale; <= 1 runs the conditional branch only."""
    mode: GuidanceMode = "release"
    """``release``: before each step move x_t down the normalised gradient of the masked prior
    loss on x0_hat, the model output held constant (no backward through the network).
    ``blend``: paste the noised prior into x_t over the mask. ``none``: plain image-to-video
    (Stage II)."""
    lr: float = 0.025
    """Release mode: x_t moves by ``lr * sqrt(a_t * s_t) * g / std(g)`` (the release's
    ``lr * sigma**0.5`` in VE coordinates)."""
    early_stop: float = 0.2
    """Fraction of the last steps that run without the prior (paper: 20%)."""
    guidance_start: float = 0.0
    """Fraction of the first steps that run without the prior's guidance (release, blend)
    and its renoise rounds: where a_t * s_t is so small that a round moves x_t by nothing
    (a distilled schedule's first steps). 0: guide from the first step, as the release does."""
    renoise_rounds: int = 15
    """Times x_{t-1} is diffused back to x_t and (guide, step) redone, per guided step. A round
    costs two model evaluations in ``release`` mode (guide, step), one in ``blend``."""
    prompt: str = DEFAULT_TRANSITION_PROMPT
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    max_sequence_length: int | None = None
    """Text tokens; None uses the family's default (CogVideoX 226, Wan 512)."""
    height: int | None = None
    """Model resolution; None uses the family's default. Inputs must already have this size."""
    width: int | None = None
    seed: int = 0
    """Used when no explicit ``torch.Generator`` is passed."""
    preview_every: int = 0
    """Decode a low-resolution preview of the clean estimate every k steps (0: never)."""
    preview_downscale: int = 2
    """Spatial factor the latents are pooled by before a preview decode."""
    frame_guidance_ramp: tuple[float, float] | None = None
    """SVD-style per-frame classifier-free guidance, linear from the first to the last frame
    (e.g. (1.0, 3.0)); None uses ``guidance_scale`` for every frame."""
    dynamics_k: float = 20.0
    """Dynamic transitions (Diffusion^2 eq. 16): steepness of the logistic weight
    s = 1 - 1/(1 + exp(k (i/N - s0))) of the dynamics-prompt score at sampling step i of N.
    The paper tests 5-30 and keeps 20; larger hands over more sharply (``inf``: a switch)."""
    dynamics_s0: float = 0.5
    """Dynamic transitions: the share of the sampling steps where the dynamics-prompt score's
    weight passes 1/2 (the camera-guided score has the rest)."""

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.pad_frames < 0:
            raise ValueError(f"pad_frames must be >= 0, got {self.pad_frames}")
        if self.num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {self.num_inference_steps}")
        if not 0.0 <= self.early_stop <= 1.0:
            raise ValueError(f"early_stop must be in [0, 1], got {self.early_stop}")
        if not 0.0 <= self.guidance_start <= 1.0 - self.early_stop:
            raise ValueError(f"guidance_start must be in [0, 1 - early_stop], got "
                             f"{self.guidance_start}")
        if self.renoise_rounds < 0:
            raise ValueError(f"renoise_rounds must be >= 0, got {self.renoise_rounds}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.lr < 0:
            raise ValueError(f"lr must be >= 0, got {self.lr}")
        if self.frame_guidance_ramp is not None and len(self.frame_guidance_ramp) != 2:
            raise ValueError("frame_guidance_ramp must be (first, last)")
        if not self.dynamics_k > 0:
            raise ValueError(f"dynamics_k must be > 0, got {self.dynamics_k}")
        if not 0.0 <= self.dynamics_s0 <= 1.0:
            raise ValueError(f"dynamics_s0 must be in [0, 1], got {self.dynamics_s0}")
        if self.preview_every < 0 or self.preview_downscale < 1:
            raise ValueError("preview_every must be >= 0 and preview_downscale >= 1")

    @property
    def total_frames(self) -> int:
        """Frames the model generates: the clip plus the padding at both ends."""
        return self.num_frames + 2 * self.pad_frames

    @property
    def guided_range(self) -> range:
        """Step indices that use the prior: after ``guidance_start``, before the early stop."""
        if self.mode == "none":
            return range(0)
        n = self.num_inference_steps
        return range(int(round(n * self.guidance_start)), int(round(n * (1.0 - self.early_stop))))

    @property
    def guided_steps(self) -> int:
        """How many steps use the prior (``guided_range``); the rest run free."""
        return len(self.guided_range)

    def replace(self, **changes: Any) -> GuidanceConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> GuidanceConfig:
        """Build from a TOML table; unknown keys are an error, not ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown guidance settings: {', '.join(unknown)}")
        values = dict(values)
        if values.get("frame_guidance_ramp") is not None:
            values["frame_guidance_ramp"] = tuple(float(v) for v in values["frame_guidance_ramp"])
        return cls(**values)
