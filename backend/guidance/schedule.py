"""One noise schedule for every family: x_t = alpha_t * x_0 + sigma_t * eps.

The guided sampler needs four things a diffusers scheduler does not offer together: the clean
estimate x0_hat as a differentiable function of x_t, a step it can repeat (RePaint renoising
goes back to the same t), the forward transition q(x_t | x_{t-1}) and the release's guidance
step size sqrt(a_t * s_t). We read the timesteps
and the (alpha, sigma) tables from a first-order diffusers scheduler after ``set_timesteps``
and write the update in closed form. The update equals ``scheduler.step`` of DDIM (eta = 0,
variance-preserving), Euler (variance-exploding, EDM-style, SVD) and flow-matching Euler (Wan);
tests/test_guidance_schedule.py checks this against diffusers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

ScheduleKind = Literal["vp", "ve", "flow"]
Prediction = Literal["epsilon", "v_prediction", "flow"]


@dataclass(frozen=True)
class NoiseSchedule:
    """Per-step tables. Index i runs 0..N-1 over the steps; tables have N + 1 entries, the last
    one being the clean end (alpha, sigma) = (final alpha, 0)."""

    kind: ScheduleKind
    prediction: Prediction
    timesteps: torch.Tensor
    """(N,) the values fed to the model as its timestep."""
    alphas: torch.Tensor
    """(N + 1,) float64 signal scale."""
    sigmas: torch.Tensor
    """(N + 1,) float64 noise scale."""

    def __post_init__(self) -> None:
        n = self.timesteps.shape[0]
        if self.alphas.shape != (n + 1,) or self.sigmas.shape != (n + 1,):
            raise ValueError("alphas and sigmas need one entry more than timesteps")
        if self.prediction == "flow" and self.kind != "flow":
            raise ValueError("flow prediction needs a flow schedule")

    @property
    def num_steps(self) -> int:
        return int(self.timesteps.shape[0])

    def _a(self, i: int) -> float:
        return float(self.alphas[i])

    def _s(self, i: int) -> float:
        return float(self.sigmas[i])

    def initial_noise_scale(self) -> float:
        """Std of x_T: sqrt(alpha^2 + sigma^2) at the first step (1 for VP and flow at t = 1)."""
        return self.unit_scale(0)

    def unit_scale(self, i: int) -> float:
        """r_i = sqrt(alpha^2 + sigma^2): x_t / r_i has unit variance (1 for VP)."""
        return (self._a(i) ** 2 + self._s(i) ** 2) ** 0.5

    def guidance_step(self, i: int) -> float:
        """sqrt(a_t * s_t): the release's ``sigma**0.5`` move in VE coordinates x / a_t, carried
        to x_t (a move d on x / a_t is a_t * d on x_t, and sigma_VE = s_t / a_t). Zero where
        x0_hat carries no information about x_t (a_t = 0) or nothing is left to guide."""
        return max(self._a(i) * self._s(i), 0.0) ** 0.5

    def model_input(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """What the network sees: VE inputs are scaled to unit variance (EDM c_in)."""
        if self.kind == "ve":
            return x / (self._a(i) ** 2 + self._s(i) ** 2) ** 0.5
        return x

    def to_x0(self, model_output: torch.Tensor, x: torch.Tensor, i: int) -> torch.Tensor:
        """Clean estimate x0_hat(x_t) from the network output (eq. 10), differentiable."""
        a, s = self._a(i), self._s(i)
        if self.prediction == "epsilon":
            return (x - s * model_output) / a
        if self.prediction == "v_prediction":
            r2 = a * a + s * s
            return (a / r2) * x - (s / r2**0.5) * model_output
        return x - s * model_output  # flow: v = eps - x0, x_t = (1 - s) x0 + s eps

    def step(self, x0: torch.Tensor, x: torch.Tensor, i: int) -> torch.Tensor:
        """x_{t-1} from x_t and x0_hat: the deterministic first-order (DDIM / Euler) update."""
        a, s = self._a(i), self._s(i)
        a_prev, s_prev = self._a(i + 1), self._s(i + 1)
        eps = (x - a * x0) / s
        return a_prev * x0 + s_prev * eps

    def x0_of_step(self, x_prev: torch.Tensor, x: torch.Tensor, i: int) -> torch.Tensor:
        """The clean estimate whose :meth:`step` from ``x`` lands on ``x_prev`` (the step is
        affine in x0_hat: x_{t-1} = (s'/s) x_t + (a' - s' a / s) x0_hat)."""
        a, s = self._a(i), self._s(i)
        a_prev, s_prev = self._a(i + 1), self._s(i + 1)
        return (x_prev - (s_prev / s) * x) / (a_prev - s_prev * a / s)

    def score(self, x0: torch.Tensor, x: torch.Tensor, i: int) -> torch.Tensor:
        """grad log p_t(x_t) implied by x0_hat (Tweedie): (a_t x0_hat - x_t) / s_t^2."""
        a, s = self._a(i), self._s(i)
        return (a * x0 - x) / (s * s)

    def renoise(self, x_prev: torch.Tensor, i: int, generator: torch.Generator | None) -> torch.Tensor:
        """Sample q(x_t | x_{t-1}): diffuse x_{t-1} back to step i (RePaint, paper eq. 2)."""
        a, s = self._a(i), self._s(i)
        a_prev, s_prev = self._a(i + 1), self._s(i + 1)
        ratio = a / a_prev
        std = max(s * s - ratio * ratio * s_prev * s_prev, 0.0) ** 0.5
        noise = randn_like(x_prev, generator)
        return ratio * x_prev + std * noise

    def add_noise(self, x0: torch.Tensor, i: int, noise: torch.Tensor) -> torch.Tensor:
        """Sample q(x_t | x_0) at step i with the given noise."""
        return self._a(i) * x0 + self._s(i) * noise


def randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like ``x``, drawn on the generator's device."""
    device = generator.device if generator is not None else x.device
    noise = torch.randn(x.shape, generator=generator, device=device, dtype=torch.float32)
    return noise.to(device=x.device, dtype=x.dtype)


def schedule_from_scheduler(
    scheduler, num_inference_steps: int, prediction: Prediction | None = None,
    mu: float | None = None,
) -> NoiseSchedule:
    """Read a :class:`NoiseSchedule` from a first-order diffusers scheduler.

    Supported: schedulers with ``alphas_cumprod`` and no sigmas (DDIM, CogVideoXDDIM; VP),
    ``EulerDiscreteScheduler`` (VE sigmas) and ``FlowMatchEulerDiscreteScheduler`` (flow).
    ``prediction`` defaults to the scheduler's ``prediction_type`` (``flow`` for flow matching).
    ``mu`` is the shift a dynamically shifting flow scheduler needs, as the pipeline passes it.
    """
    extra = {} if mu is None else {"mu": mu}
    scheduler.set_timesteps(num_inference_steps, device="cpu", **extra)
    name = type(scheduler).__name__
    timesteps = scheduler.timesteps.detach().to("cpu")
    if name.startswith("FlowMatch"):
        sigmas = scheduler.sigmas.detach().to("cpu", torch.float64)
        return NoiseSchedule("flow", prediction or "flow", timesteps, 1.0 - sigmas, sigmas)
    if name == "EulerDiscreteScheduler":
        sigmas = scheduler.sigmas.detach().to("cpu", torch.float64)
        return NoiseSchedule(
            "ve", prediction or scheduler.config.prediction_type, timesteps,
            torch.ones_like(sigmas), sigmas,
        )
    if hasattr(scheduler, "alphas_cumprod") and not hasattr(scheduler, "sigmas"):
        acp = scheduler.alphas_cumprod.detach().to("cpu", torch.float64)
        steps = timesteps.long()
        final = torch.as_tensor(scheduler.final_alpha_cumprod, dtype=torch.float64).reshape(1)
        acp_steps = torch.cat([acp[steps], final])
        return NoiseSchedule(
            "vp", prediction or scheduler.config.prediction_type, timesteps,
            acp_steps.sqrt(), (1.0 - acp_steps).sqrt(),
        )
    raise ValueError(
        f"{name} is not a first-order scheduler the guided sampler can drive; "
        "use DDIM, EulerDiscrete or FlowMatchEulerDiscrete (from_config of the model's one)"
    )
