"""Dynamic transitions (Diffusion^2 eq. 16) on two exact Gaussian conditionals.

The analytic model (backend/models/analytic.py) with ``prompt_means`` is the repeated-image
Gaussian data conditioned on the prompt: the camera prompt has mean M1, the dynamics prompt
M2, the same variance. Each conditional's score is written here in closed form (Sherman-
Morrison on the frames' covariance s^2 I + a^2 var 1 1^T), not through the model's code, and
the logistic weight by the issue's formula in numpy.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from backend.guidance import (
    ComposedVideoSampler,
    GuidanceConfig,
    GuidedVideoSampler,
    LogisticSchedule,
    PriorVideo,
)
from backend.models.analytic import GaussianVideoModel, schedule_on_sigmas

CAMERA, DYNAMICS = "a fast camera flyover", "the river flows"
M1, M2, VAR = -0.5, 0.5, 1e-4
"""Narrow conditionals: a sample is close to its mean, so the clip's mean says which one."""
FRAMES, PAD, SIZE = 5, 1, 4
SIGMAS = tuple(float(s) for s in np.geomspace(20.0, 0.01, 30))


def issue_weight(i: int, n: int, k: float, s0: float) -> float:
    return 1.0 - 1.0 / (1.0 + np.exp(k * (i / n - s0)))


def exact_score(x: torch.Tensor, a: float, s: float, mean: float) -> torch.Tensor:
    """grad log p_t of the conditional with data mean ``mean``: -Sigma^-1 (x - a mean), Sigma =
    s^2 I + a^2 var 1 1^T over the frames of each pixel position."""
    d = (x - a * mean).double()
    frames = x.shape[1]
    coupling = a * a * VAR / (s * s + frames * a * a * VAR)
    return -(d - coupling * d.sum(dim=1, keepdim=True)) / (s * s)


def model(kind="vp", prediction="epsilon", sigmas=SIGMAS) -> GaussianVideoModel:
    return GaussianVideoModel(kind, prediction, sigmas, var=VAR, size=SIZE,
                              prompt_means={CAMERA: M1, DYNAMICS: M2})


def config(n: int, **changes) -> GuidanceConfig:
    base = GuidanceConfig(num_frames=FRAMES, pad_frames=PAD, num_inference_steps=n,
                          guidance_scale=1.0, mode="none", prompt=CAMERA, renoise_rounds=0)
    return base.replace(**changes)


def sample(m: GaussianVideoModel, cfg: GuidanceConfig, latents: torch.Tensor | None = None,
           sampler: GuidedVideoSampler | None = None, prior: PriorVideo | None = None):
    """Run the sampler; returns its output and, per step, the callback's tensors."""
    steps: list[dict] = []

    def record(_sampler, i, _t, kwargs):
        steps.append({"i": i, **{k: v for k, v in kwargs.items() if k != "preview"}})

    sampler = sampler or ComposedVideoSampler(m, DYNAMICS)
    names = ("latents", "x0_hat", "x_t", "score") if isinstance(sampler, ComposedVideoSampler) \
        else ("latents",)
    image = np.full((SIZE, SIZE, 3), 127, np.uint8)
    out = sampler(image, prior, cfg, generator=torch.Generator().manual_seed(3), latents=latents,
                  callback_on_step_end=record, callback_on_step_end_tensor_inputs=names,
                  output_type="latent")
    return out, steps


def zero_mean_noise(shape, seed=0) -> torch.Tensor:
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return noise - noise.mean()


@pytest.mark.parametrize("k,s0", [(5.0, 0.5), (20.0, 0.5), (30.0, 0.25), (12.5, 0.8)])
def test_logistic_weight_is_the_papers_schedule(k, s0):
    n = 25
    got = LogisticSchedule(k, s0).weights(n)
    want = [issue_weight(i, n, k, s0) for i in range(n)]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    assert all(b > a for a, b in zip(got, got[1:], strict=False))


@pytest.mark.parametrize("kind,prediction", [("vp", "epsilon"), ("vp", "v_prediction"),
                                             ("flow", "flow"), ("ve", "epsilon")])
def test_every_step_is_the_weighted_sum_of_the_two_exact_scores(kind, prediction):
    m = model(kind, prediction)
    n = len(SIGMAS)
    table = schedule_on_sigmas(kind, prediction, SIGMAS)
    _, steps = sample(m, config(n, dynamics_k=20.0, dynamics_s0=0.5))
    assert [st["i"] for st in steps] == list(range(n))
    for st in steps:
        i = st["i"]
        a, s = float(table.alphas[i]), float(table.sigmas[i])
        a_next, s_next = float(table.alphas[i + 1]), float(table.sigmas[i + 1])
        w = issue_weight(i, n, 20.0, 0.5)
        assert st["dynamics_weight"] == pytest.approx(w, rel=1e-12, abs=1e-15)
        x = st["x_t"].double()
        want = (1 - w) * exact_score(x, a, s, M1) + w * exact_score(x, a, s, M2)
        scale = float(want.abs().max())
        err = float((st["score"].double() - want).abs().max())
        assert err <= 1e-4 * scale, f"step {i}: score off by {err:.3g} (scale {scale:.3g})"
        # and the step taken is the first-order step on that score (Tweedie)
        x0 = (x + s * s * want) / a
        x_next = a_next * x0 + s_next * (x - a * x0) / s
        err = float((st["latents"].double() - x_next).abs().max())
        assert err <= 1e-4 * (float(x_next.abs().max()) + 1e-3), f"step {i}: x_t-1 off by {err:.3g}"


def predicted_means(sigmas, k: float, s0: float) -> tuple[list[float], float]:
    """Mean over the clip of x0_hat per step and of the sample, from the schedule alone: with
    zero-mean starting noise every quantity is affine in the noise, so the means follow a
    scalar recursion driven by s_i (VP, first level pure noise)."""
    ve = np.array(list(sigmas) + [0.0])
    a = np.where(np.isinf(ve), 0.0, 1.0 / np.sqrt(1.0 + np.where(np.isinf(ve), 0.0, ve) ** 2))
    s = np.sqrt(1.0 - a * a)
    frames, n, mu, x0_means = FRAMES + 2 * PAD, len(sigmas), 0.0, []
    for i in range(n):
        w = issue_weight(i, n, k, s0)
        target = (1 - w) * M1 + w * M2
        gain = a[i] * VAR / (frames * a[i] ** 2 * VAR + s[i] ** 2)
        x0 = target + gain * frames * (mu - a[i] * target)
        x0_means.append(x0)
        mu = a[i + 1] * x0 + s[i + 1] * (mu - a[i] * x0) / s[i]
    return x0_means, mu


def test_the_clips_mean_moves_from_the_first_conditional_to_the_second_as_s_predicts():
    sigmas = (math.inf, *SIGMAS)
    m = model("vp", "v_prediction", sigmas)  # epsilon cannot say x0 at pure noise
    n = len(sigmas)
    noise = zero_mean_noise((1, FRAMES + 2 * PAD, 3, SIZE, SIZE))
    want_x0, want_final = predicted_means(sigmas, 20.0, 0.5)
    out, steps = sample(m, config(n, dynamics_k=20.0, dynamics_s0=0.5), latents=noise)
    got_x0 = [float(st["x0_hat"].mean()) for st in steps]
    np.testing.assert_allclose(got_x0, want_x0, atol=1e-3)
    assert float(out.latents.mean()) == pytest.approx(want_final, abs=1e-3)
    # it starts on the first conditional's mean and crosses over to the second's side
    assert got_x0[0] == pytest.approx(M1, abs=1e-3)
    assert min(got_x0[int(0.6 * n):]) > (M1 + M2) / 2
    assert float(out.latents.mean()) > M1 + 0.9 * (M2 - M1)
    # the same noise with s = 0 throughout stays on the first conditional
    out0, _ = sample(m, config(n, dynamics_k=math.inf, dynamics_s0=1.0), latents=noise)
    assert float(out0.latents.mean()) == pytest.approx(M1, abs=1e-3)


def test_a_large_k_is_a_switch_at_s0():
    n, s0 = len(SIGMAS), 0.45  # s0 * n = 13.5: no step sits on s0
    weights = LogisticSchedule(1e6, s0).weights(n)
    assert weights == [0.0 if i / n < s0 else 1.0 for i in range(n)]
    m = model("ve", "epsilon")
    noise = zero_mean_noise((1, FRAMES + 2 * PAD, 3, SIZE, SIZE), seed=4)
    out, _ = sample(m, config(n, dynamics_k=1e6, dynamics_s0=s0), latents=noise)
    assert out.counters.model_evals == n  # the stage weighted 0 is never evaluated
    assert out.counters.dynamics_evals == sum(i / n > s0 for i in range(n))
    # by hand: Euler on the camera conditional's exact denoiser, then on the dynamics one
    x = noise.double() * math.sqrt(SIGMAS[0] ** 2 + 1)
    levels = [*SIGMAS, 0.0]
    for i in range(n):
        mean = M1 if i / n < s0 else M2
        x0 = x + levels[i] ** 2 * exact_score(x, 1.0, levels[i], mean)
        x = x0 + levels[i + 1] * (x - x0) / levels[i]
    err = float((out.latents.double() - x).abs().max())
    assert err < 1e-4, f"k = 1e6 differs from the switch by {err:.3g}"


def test_weight_zero_throughout_is_the_camera_guided_sampler():
    """s0 = 1 with k = inf never weights the dynamics score: the composed sampler is then the
    existing camera-guided (release) sampler, guidance, renoise rounds and all."""
    m = model("flow", "flow", SIGMAS[::3])
    n = len(SIGMAS[::3])
    image = m.sample_image(torch.Generator().manual_seed(1))
    masks = np.zeros((FRAMES, SIZE, SIZE), np.float32)
    masks[0] = masks[-1] = 1.0
    prior = PriorVideo(image[None].repeat(FRAMES, 0), masks)
    cfg = config(n, mode="release", renoise_rounds=2, dynamics_k=math.inf, dynamics_s0=1.0)
    composed, _ = sample(m, cfg, prior=prior)
    plain, _ = sample(m, cfg, prior=prior, sampler=GuidedVideoSampler(m))
    assert composed.counters.dynamics_evals == 0
    assert composed.counters.model_evals == plain.counters.model_evals
    torch.testing.assert_close(composed.latents, plain.latents, rtol=0, atol=1e-6)


@pytest.mark.parametrize("preset", ["paper", "interactive"])
def test_presets_set_k_and_s0_and_unknown_or_bad_values_are_errors(preset, tmp_path):
    from backend.models.spec import load_specs, named_config

    table = dict(load_specs(named_config(preset))["video"].guidance)
    cfg = GuidanceConfig.from_mapping(table)
    assert (cfg.dynamics_k, cfg.dynamics_s0) == (20.0, 0.5)
    assert 5.0 <= cfg.dynamics_k <= 30.0
    with pytest.raises(ValueError, match="unknown guidance settings: dynamics_kk"):
        GuidanceConfig.from_mapping({**table, "dynamics_kk": 10.0})
    with pytest.raises(ValueError, match="dynamics_k must be > 0"):
        GuidanceConfig.from_mapping({**table, "dynamics_k": 0.0})
    with pytest.raises(ValueError, match="dynamics_s0 must be in"):
        GuidanceConfig.from_mapping({**table, "dynamics_s0": 1.5})


@pytest.mark.parametrize("mode", ["release", "blend", "none"])
@pytest.mark.parametrize("k,s0", [(20.0, 0.5), (1e6, 0.45), (math.inf, 1.0)])
def test_forwards_per_clip_counts_what_the_composed_sampler_calls(mode, k, s0):
    from backend.guidance.cost import forwards_per_clip

    sigmas = (math.inf, *SIGMAS[::3])
    m = model("flow", "flow", sigmas)
    image = m.sample_image(torch.Generator().manual_seed(2))
    masks = np.zeros((FRAMES, SIZE, SIZE), np.float32)
    masks[0] = masks[-1] = 1.0
    prior = PriorVideo(image[None].repeat(FRAMES, 0), masks)
    cfg = config(len(sigmas), mode=mode, renoise_rounds=2, dynamics_k=k, dynamics_s0=s0)
    out, _ = sample(m, cfg, prior=prior)
    schedule = m.noise_schedule(len(sigmas))
    assert out.counters.model_evals == forwards_per_clip(schedule, cfg, dynamic=True)
    if s0 == 1.0:  # never weighted: the camera-guided sampler's count
        assert out.counters.model_evals == forwards_per_clip(schedule, cfg)


def test_with_release_guidance_each_step_mixes_the_guided_step_and_the_dynamics_step():
    """Stage I's score includes its guidance move: every composed step lands on
    (1 - s) * (release guide, then step, under the camera prompt) + s * (step under the
    dynamics prompt), both from the same x_t (here recomputed by hand from the sampler's
    encoded prior and latent mask)."""
    from backend.guidance.sampler import release_guidance
    from backend.models.adapters.base import Conditioning

    sigmas = SIGMAS[::3]
    m = model("ve", "epsilon", sigmas)
    n = len(sigmas)
    image = m.sample_image(torch.Generator().manual_seed(1))
    masks = np.zeros((FRAMES, SIZE, SIZE), np.float32)
    masks[0] = masks[-1] = 1.0
    masks[FRAMES // 2, :, : SIZE // 2] = 1.0
    prior = PriorVideo(image[None].repeat(FRAMES, 0), masks)
    cfg = config(n, mode="release", lr=0.3, renoise_rounds=0, early_stop=0.2)
    out, steps = sample(m, cfg, prior=prior)
    schedule = m.noise_schedule(n)
    z_prior, mask = out.prior_latents, out.latent_mask

    def x0(x, i, mean):
        eps = m.forward(schedule.model_input(x, i), schedule.timesteps[i],
                        Conditioning(False, {"mean": mean}))
        return schedule.to_x0(eps, x, i)

    moved = 0
    for st in steps:
        i, x = st["i"], st["x_t"]
        w = issue_weight(i, n, cfg.dynamics_k, cfg.dynamics_s0)
        x_cam = x
        if i in cfg.guided_range:
            eps = m.forward(schedule.model_input(x, i), schedule.timesteps[i],
                            Conditioning(False, {"mean": M1}))
            with torch.no_grad():  # as the sampler calls it
                x_cam, _ = release_guidance(x, eps, schedule, i, z_prior, mask, cfg.lr)
            moved += int(not torch.equal(x_cam, x))
        camera_step = schedule.step(x0(x_cam, i, M1), x_cam, i)
        dynamics_step = schedule.step(x0(x, i, M2), x, i)
        want = (1 - w) * camera_step + w * dynamics_step
        err = float((st["latents"] - want).abs().max())
        assert err <= 1e-4 * float(want.abs().max()), f"step {i}: off by {err:.3g}"
    assert moved == len(cfg.guided_range)  # the guidance really moved x_t on those steps
