"""The diffusion engine (DreamJourney) on tiny random models, through a real Backend on loopback.

Models are the tiny diffusers / transformers builds of backend.models.testing saved to a
temporary folder and loaded by path; the MLLM is the local OpenAI-compatible test server of
test_mllm_agent, talked to by the real openai client.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from test_mllm_agent import DYNAMICS_REPLY, ENTITIES_REPLY, FakeChatServer

from backend.engines.base import (
    DynamicsRequest,
    EngineError,
    FrameOut,
    OpenRequest,
    PointsOut,
    TransitionRequest,
)
from backend.engines.diffusion import DiffusionEngine, align_prediction
from backend.engines.diffusion_video import Letterbox, resample_poses, resize_masks, time_indices
from backend.guidance import DEFAULT_TRANSITION_PROMPT, logistic_weight
from backend.mllm import fallback_dynamics, fallback_entities
from backend.models import DepthPrediction, testing
from backend.server import Backend, BackendConfig
from protocol import codec
from protocol.messages import (
    Cancel,
    Frame,
    JobDone,
    JobFailed,
    Progress,
    SceneText,
    Transition,
    TransitionDynamics,
)
from protocol.scripted import ScriptedClient
from protocol.trajectory import stock_path

W, H = 48, 40  # scene size; the tiny CogVideoX runs at 32 x 32, so frames are resized both ways
TEXT = SceneText(style="watercolour", content="gorge, river, bridge")
FAST = {"num_inference_steps": 3, "renoise_rounds": 1, "early_stop": 0.34}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny depth, inpaint and CogVideoX-I2V models saved once; a models TOML pointing at them."""
    root = tmp_path_factory.mktemp("diffusion-models")
    model, processor = testing.depth_model()
    model.save_pretrained(root / "depth")
    processor.save_pretrained(root / "depth")
    testing.inpaint_pipeline().save_pretrained(root / "inpaint")
    testing.cogvideox_pipeline().save_pretrained(root / "cogvideox")
    video = (f'[video]\nfamily = "cogvideox"\nsource = "{root / "cogvideox"}"\ndevice = "cpu"\n'
             '[video.guidance]\nnum_frames = 5\npad_frames = 2\nmax_sequence_length = 16\n')
    full = root / "tiny.toml"
    full.write_text(f'[depth]\nsource = "{root / "depth"}"\ndevice = "cpu"\n\n'
                    f'[inpaint]\nsource = "{root / "inpaint"}"\ndevice = "cpu"\n\n' + video)
    video_only = root / "video_only.toml"
    video_only.write_text(video)
    testing.ltx_pipeline().save_pretrained(root / "ltx")
    ltx = root / "ltx.toml"
    ltx.write_text(f'[video]\nfamily = "ltx"\nsource = "{root / "ltx"}"\ndevice = "cpu"\n'
                   '[video.guidance]\nnum_frames = 5\npad_frames = 2\nmax_sequence_length = 16\n'
                   'num_inference_steps = 2\nrenoise_rounds = 1\nguidance_scale = 1.0\n'
                   'height = 32\nwidth = 32\n')
    return {"full": full, "video_only": video_only, "ltx": ltx}


@pytest.fixture()
def chat():
    server = FakeChatServer()
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def make_backend(tmp_path, models_toml, mllm=None, presets=None, **guidance) -> Backend:
    options = {"models": str(models_toml), "mllm": mllm, "guidance": {**FAST, **guidance},
               "inpaint_steps": 2, "presets": presets}
    config = BackendConfig(bind="tcp://127.0.0.1:0", sessions=tmp_path / "sessions",
                           heartbeat_s=0.2, peer_timeout_s=5.0, engine="diffusion",
                           engine_options={"diffusion": options})
    return Backend(config)


def scene_image(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    base = np.stack([xx * 5, yy * 6, (xx + yy) * 3], -1) % 256
    return np.clip(base + rng.integers(-20, 20, (H, W, 3)), 0, 255).astype(np.uint8)


class CallSpy:
    """Wraps a callable, records the keyword arguments of every call, forwards attributes."""

    def __init__(self, fn) -> None:
        self.fn = fn
        self.calls: list[dict] = []

    def __call__(self, *args, **kwargs):
        self.calls.append({"args": args, **kwargs})
        return self.fn(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.fn, name)


def spy_models(backend: Backend, monkeypatch) -> tuple[CallSpy, CallSpy, CallSpy]:
    """Spies on the video model's prompt encoder and network, and the inpainting pipeline."""
    engine = backend.engine("diffusion")
    adapter = engine.registry.video()
    encode = CallSpy(adapter.encode_prompt)
    predict = CallSpy(adapter.predict)
    monkeypatch.setattr(adapter, "encode_prompt", encode)
    monkeypatch.setattr(adapter, "predict", predict)
    inpainter = engine.registry.inpainter()
    pipe = CallSpy(inpainter.pipe)
    monkeypatch.setattr(inpainter, "pipe", pipe)
    return encode, predict, pipe


def prompts(spy: CallSpy) -> list[str]:
    return [c["args"][0] for c in spy.calls]


def test_transition_then_dynamics_with_mllm(tmp_path, models, chat, monkeypatch):
    chat.replies += [ENTITIES_REPLY, DYNAMICS_REPLY]
    mllm = {"base_url": chat.base_url, "model": "test-vlm", "max_retries": 0}
    with make_backend(tmp_path, models["full"], mllm) as backend:
        encode, predict, pipe = spy_models(backend, monkeypatch)
        with ScriptedClient(backend.address, credits=4) as client:
            image = scene_image()
            opened = client.open_scene(image, scene_id="gorge", text=TEXT)
            assert opened.scene.engine == "diffusion" and opened.scene.width == W
            poses = stock_path("backward", n_frames=7, median_depth=opened.scene.median_depth)
            job = client.transition("gorge", poses)

            # Stage I: 7 frames for 7 poses (the model made 5), decoded at the scene's size
            assert isinstance(job.outcome, JobDone), job.outcome
            assert len(job.frames) == 7 and job.outcome.num_frames == 7
            assert all(f.shape == (H, W, 3) for f in job.frames)
            for sent, got in zip(poses, job.poses, strict=True):
                np.testing.assert_allclose(got, sent, atol=1e-5)
            assert all(f.std() > 1 for f in job.frames)  # real decoded pixels
            assert np.abs(job.frames[-1].astype(int) - job.frames[0]).mean() > 1
            # one Progress per sampling step; step 1 of CogVideoX's zero-terminal-SNR schedule
            # (a_t = 0) cannot be guided, step 2 is
            sample = [p for p in job.progress if p.stage == "sample"]
            assert [p.step for p in sample] == [1, 2, 3] and "guided" in sample[1].message
            assert "free" in sample[0].message
            # the MLLM saw the current view; its entities prompted the end-view inpainting
            assert chat.sent_image(0)[0] == "image/png"
            assert pipe.calls[0]["prompt"] == "River Gorge: waterfall, boat, heron, watercolour"
            assert prompts(encode) == [DEFAULT_TRANSITION_PROMPT]
            # the cloud grew by the end view's unseen pixels (and the last frame's)
            assert job.points.count() > 0
            assert job.points.total == opened.points.count() + job.points.count()
            assert any(p.stage == "inpaint" and "aligned" in p.message for p in job.progress)

            # Stage II at the end pose: the three-step prompt reaches the video model verbatim
            steps_before = len(predict.calls)
            dyn = client.dynamics("gorge", poses[-1], num_frames=6)
            assert isinstance(dyn.outcome, JobDone), dyn.outcome
            assert len(dyn.frames) == 6 and all(f.shape == (H, W, 3) for f in dyn.frames)
            for got in dyn.poses:
                np.testing.assert_allclose(got, poses[-1], atol=1e-5)
            final = json.loads(DYNAMICS_REPLY.strip("`").removeprefix("json"))["prompt"]
            assert prompts(encode)[-1] == final
            assert any(p.stage == "prompt" and final in p.message for p in dyn.progress)
            assert len(predict.calls) - steps_before == 3  # plain sampling: no guided rounds
            # the Stage I entities were the candidates of the dynamics request
            user_text = chat.requests[-1]["body"]["messages"][1]["content"][0]["text"]
            assert "1. waterfall" in user_text and "2. boat" in user_text
            assert len(chat.requests) == 2


def test_no_mllm_endpoint_uses_templates(tmp_path, models, monkeypatch):
    with make_backend(tmp_path, models["full"], mllm=None) as backend:
        encode, _, pipe = spy_models(backend, monkeypatch)
        with ScriptedClient(backend.address, credits=4) as client:
            opened = client.open_scene(scene_image(1), scene_id="tpl", text=TEXT)
            poses = stock_path("rotate_left", n_frames=5, median_depth=opened.scene.median_depth)
            job = client.transition("tpl", poses)
            assert isinstance(job.outcome, JobDone) and len(job.frames) == 5
            said = [p.message for p in job.progress if p.stage == "prompt"]
            assert any("no MLLM endpoint configured" in m and "template" in m for m in said)
            entities = fallback_entities(TEXT, "")
            assert pipe.calls[0]["prompt"] == f"{entities.inpaint_prompt}, watercolour"

            dyn = client.dynamics("tpl", poses[-1], num_frames=4)
            assert isinstance(dyn.outcome, JobDone) and len(dyn.frames) == 4
            said = [p.message for p in dyn.progress if p.stage == "prompt"]
            assert any("no MLLM endpoint configured" in m for m in said)
            names = [e.name for e in entities.entities]
            assert prompts(encode)[-1] == fallback_dynamics(TEXT, names, "").prompt


def test_cancel_stops_sampling_midway(tmp_path, models, monkeypatch):
    steps = 40
    with make_backend(tmp_path, models["full"], num_inference_steps=steps,
                      renoise_rounds=0) as backend:
        _, predict, _ = spy_models(backend, monkeypatch)
        # From its second step the network waits until the Cancel has reached the job: the
        # test then counts the steps the sampler takes after it, whatever the machine's speed
        # (a loaded machine once let 11 tiny steps run while the Cancel was on its way).
        reached = threading.Event()
        cancel = backend.jobs.cancel
        monkeypatch.setattr(backend.jobs, "cancel",
                            lambda *a: (cancel(*a), reached.set())[0])
        step = predict.fn

        def gated(*args, **kwargs):
            if len(predict.calls) >= 2:
                reached.wait(60)
            return step(*args, **kwargs)

        predict.fn = gated
        with ScriptedClient(backend.address, credits=4) as client:
            opened = client.open_scene(scene_image(2), scene_id="stop")
            poses = stock_path("forward", n_frames=5, median_depth=opened.scene.median_depth)
            ref, buf = codec.array_blob(poses.astype(np.float32), 0)
            client.client.send(Transition(job_id="stop-job", scene_id="stop", poses=ref), [buf])
            sampled, frames, outcome = [], 0, None
            deadline = time.monotonic() + 60
            while outcome is None and time.monotonic() < deadline:
                ev = client.client.poll(timeout=1.0)
                msg = getattr(ev, "msg", None)
                if isinstance(msg, Progress) and msg.stage == "sample":
                    if not sampled:
                        client.client.send(Cancel(job_id="stop-job"))
                    sampled.append(msg.step)
                elif isinstance(msg, Frame):
                    frames += 1
                elif isinstance(msg, (JobDone, JobFailed)):
                    outcome = msg
            assert isinstance(outcome, JobFailed) and outcome.code == "cancelled"
            assert reached.is_set() and frames == 0 and 1 <= len(sampled) <= 3, sampled
            # the sampler was interrupted and joined before JobFailed: the model is idle,
            # a few steps after the Cancel reached the job, not 40 steps (80 evaluations; a
            # guided step evaluates the network twice). How few depends on the machine: the
            # job's thread stops the run when it takes the next event, and the sampler's
            # worker runs on meanwhile (5 evaluations quiet, 7 once beside 8 busy processes)
            calls = len(predict.calls)
            assert calls <= 2 * 4, (calls, sampled)
            time.sleep(0.3)
            assert len(predict.calls) == calls
            # and free for the next job
            dyn = client.dynamics("stop", poses[0], num_frames=3, prompt="a river flows")
            assert isinstance(dyn.outcome, JobDone) and len(dyn.frames) == 3


# -- the engine without a server --


@pytest.fixture(scope="module")
def engine(models):
    return DiffusionEngine(models=str(models["full"]), guidance=FAST, inpaint_steps=2)


def test_open_scene_depth_sources(models, engine):
    image = scene_image(3)
    given = np.full((H, W), 3.0, np.float32)
    scene, cloud = engine.open_scene(OpenRequest("d1", image, depth=given))
    assert len(cloud) >= H * W and scene.engine == "diffusion"
    assert scene.median_depth != pytest.approx(3.0)  # the depth model, not the client's map
    no_depth = DiffusionEngine(models=str(models["video_only"]))
    scene2, _ = no_depth.open_scene(OpenRequest("d2", image, depth=given))
    assert scene2.median_depth == pytest.approx(3.0)
    scene3, _ = no_depth.open_scene(OpenRequest("d3", image))  # horizon prior
    assert scene3.median_depth > 0 and np.isfinite(scene3.median_depth)


def test_bad_settings_are_engine_errors(models, engine):
    scene, _ = engine.open_scene(OpenRequest("bad", scene_image(4)))
    poses = stock_path("backward", n_frames=5, median_depth=scene.median_depth)
    wrong_frames = DiffusionEngine(models=str(models["full"]), guidance={"num_frames": 4})
    with pytest.raises(EngineError, match="cannot generate 8 frames.*nearest valid: 5 or 9"):
        list(wrong_frames.transition(scene, TransitionRequest(poses)))
    wrong_size = DiffusionEngine(models=str(models["full"]), guidance={"height": 24})
    with pytest.raises(EngineError, match="multiples of 16"):
        list(wrong_size.transition(scene, TransitionRequest(poses)))
    with pytest.raises(ValueError, match="unknown guidance settings: steps"):
        DiffusionEngine(models=str(models["full"]), guidance={"steps": 3})
    with pytest.raises(FileNotFoundError, match="no model config 'sora'"):
        DiffusionEngine(models="sora")


def test_align_prediction_recovers_depth_in_holes():
    rng = np.random.default_rng(0)
    truth = rng.uniform(2.0, 20.0, (24, 32))
    known = np.ones_like(truth, bool)
    known[:, 20:] = False
    reference = np.where(known, truth, 0.0)
    disparity = DepthPrediction((0.5 / truth + 0.2).astype(np.float32), "disparity")
    out = align_prediction(disparity, reference, known)
    np.testing.assert_allclose(out[~known], truth[~known], rtol=1e-3)
    depth = DepthPrediction((truth / 4 - 0.3).astype(np.float32), "depth")
    np.testing.assert_allclose(align_prediction(depth, reference, known)[~known], truth[~known],
                               rtol=1e-3)
    with pytest.raises(ValueError, match="non-positive scale"):
        align_prediction(DepthPrediction((-truth).astype(np.float32), "depth"), reference, known)


def test_time_and_pose_resampling():
    np.testing.assert_array_equal(time_indices(7, 5), [0, 1, 1, 2, 3, 3, 4])
    np.testing.assert_array_equal(time_indices(3, 9), [0, 4, 8])
    poses = stock_path("backward", n_frames=4, median_depth=1.0)
    out = resample_poses(poses, 7)
    assert out.shape == (7, 4, 4)
    np.testing.assert_allclose(out[[0, 2, 4, 6]], poses, atol=1e-9)  # on the original times
    np.testing.assert_allclose(out[1, :3, 3], (poses[0, :3, 3] + poses[1, :3, 3]) / 2, atol=1e-9)
    masks = np.zeros((1, 4, 4), bool)
    masks[0, :, :2] = True
    np.testing.assert_allclose(resize_masks(masks, 2, 2)[0], [[1, 0], [1, 0]])


def test_wan_family_runs_both_stages(models, tmp_path):
    """A flow-matching family (Wan 2.1 I2V) through both stages, engine called directly."""
    testing.wan_pipeline().save_pretrained(tmp_path / "wan")
    toml = tmp_path / "wan.toml"
    toml.write_text(models["full"].read_text().split("[video]")[0]
                    + f'[video]\nfamily = "wan"\nsource = "{tmp_path / "wan"}"\ndevice = "cpu"\n'
                    '[video.guidance]\nnum_frames = 5\npad_frames = 2\nmax_sequence_length = 16\n'
                    'height = 32\nwidth = 32\n')
    wan = DiffusionEngine(models=str(toml), guidance=FAST, inpaint_steps=2)
    scene, cloud = wan.open_scene(OpenRequest("wan", scene_image(5), text=TEXT))
    poses = stock_path("rotate_right", n_frames=6, median_depth=scene.median_depth)
    events = list(wan.transition(scene, TransitionRequest(poses)))
    frames = [e for e in events if isinstance(e, FrameOut)]
    assert [f.index for f in frames] == list(range(6))
    assert all(f.image.shape == (H, W, 3) and f.image.std() > 1 for f in frames)
    grown = sum(len(e.cloud) for e in events if isinstance(e, PointsOut))
    assert grown > 0 and len(scene.cloud) == len(cloud) + grown
    np.testing.assert_allclose(scene.pose, poses[-1])
    clip = [e for e in wan.dynamics(scene, DynamicsRequest(poses[-1], num_frames=4))
            if isinstance(e, FrameOut)]
    assert len(clip) == 4 and clip[0].image.shape == (H, W, 3)


def test_transition_preset_picks_the_video_model_and_settings(models, monkeypatch):
    engine = DiffusionEngine(models=str(models["full"]), guidance=FAST, inpaint_steps=2,
                             presets={"fast": str(models["ltx"])})
    scene, _ = engine.open_scene(OpenRequest("preset", scene_image(6)))
    poses = stock_path("backward", n_frames=4, median_depth=scene.median_depth)
    events = list(engine.transition(scene, TransitionRequest(poses, preset="fast")))
    frames = [e for e in events if isinstance(e, FrameOut)]
    assert len(frames) == 4 and all(f.image.shape == (H, W, 3) for f in frames)
    registry, guidance = engine._video_setup("fast")
    assert registry.video().family == "ltx" and guidance.num_inference_steps == 2
    assert engine.registry.video().family == "cogvideox"  # the default stays the default
    sample = [e for e in events if getattr(e, "stage", "") == "sample"]
    assert [e.total for e in sample] == [2, 2]  # the preset's steps, not the engine's 3
    with pytest.raises(EngineError, match="preset 'sora'.*no model config 'sora'"):
        list(engine.transition(scene, TransitionRequest(poses, preset="sora")))


def test_letterbox_keeps_the_aspect_and_marks_padding_unseen():
    box = Letterbox.fit(48, 40, 32, 32)  # the scene is wider than the model's square
    assert box.box == (0, 2, 32, 27)
    frames = np.stack([scene_image(7)] * 2)
    masks = np.ones((2, H, W), np.float32)
    inside, m = box.frames_in(frames), box.masks_in(masks)
    assert inside.shape == (2, 32, 32, 3) and m.shape == (2, 32, 32)
    assert m[:, :2].max() == 0 and m[:, 29:].max() == 0 and m[:, 2:29].min() == 1
    back = box.frames_out(inside)
    assert back.shape == (2, H, W, 3)
    err = np.abs(back.astype(int) - frames).mean()
    assert err < 12, f"round trip through the model size lost too much ({err:.1f})"
    # squashing would have scaled x and y differently: the content keeps 48:40 to a pixel
    x, y, w, h = box.box
    assert abs(w / h - W / H) < 1 / h


def test_preset_travels_from_the_transition_message(tmp_path, models):
    presets = {"fast": str(models["ltx"])}
    with (make_backend(tmp_path, models["full"], presets=presets) as backend,
          ScriptedClient(backend.address, credits=4) as client):
        opened = client.open_scene(scene_image(8), scene_id="p")
        poses = stock_path("backward", n_frames=3, median_depth=opened.scene.median_depth)
        job = client.transition("p", poses, preset="fast")
        assert isinstance(job.outcome, JobDone), job.outcome
        assert len(job.frames) == 3
        sample = [p for p in job.progress if p.stage == "sample"]
        assert [p.total for p in sample] == [2, 2]  # the preset's steps, not the default 3
        default = client.transition("p", poses)
        assert [p.total for p in default.progress if p.stage == "sample"] == [3, 3, 3]
        bad = client.transition("p", poses, preset="sora")
        assert isinstance(bad.outcome, JobFailed) and "preset 'sora'" in bad.outcome.message


def test_dynamic_transition_composes_the_dynamics_prompt_per_step(tmp_path, models, monkeypatch):
    """A Transition with ``dynamics`` set through a real backend: the dynamics prompt is
    encoded and its score mixed in at every step with the preset's logistic weight; with the
    weight held at 0 (s0 = 1, k huge) the clip is the plain transition's, frame for frame."""
    with make_backend(tmp_path, models["full"]) as backend:
        encode, predict, _ = spy_models(backend, monkeypatch)
        with ScriptedClient(backend.address, credits=4) as client:
            image = scene_image(9)
            runs = {}
            for name, dynamics in [("plain", None),
                                   ("still", TransitionDynamics(prompt="x", k=1e6, s0=1.0)),
                                   ("moving", TransitionDynamics())]:
                opened = client.open_scene(image, scene_id=name, text=TEXT)
                poses = stock_path("backward", n_frames=5, median_depth=opened.scene.median_depth)
                calls = len(predict.calls)
                job = client.transition(name, poses, dynamics=dynamics)
                assert isinstance(job.outcome, JobDone), job.outcome
                assert len(job.frames) == 5 and all(f.shape == (H, W, 3) for f in job.frames)
                runs[name] = (job, len(predict.calls) - calls)
    plain, still, moving = (runs[n][0] for n in ("plain", "still", "moving"))
    # weight 0 throughout: Stage II is never evaluated and the clip is the plain one
    assert runs["still"][1] == runs["plain"][1] == 6  # steps of 1, 2 (guide + step) x 2, 1
    for a, b in zip(plain.frames, still.frames, strict=True):
        np.testing.assert_array_equal(a, b)
    # the default schedule (k = 20, s0 = 0.5): one more network call per round, under the
    # template dynamics prompt (no MLLM endpoint), with the logistic weight of each step
    assert runs["moving"][1] == 6 + 4
    written = fallback_dynamics(TEXT, [e.name for e in fallback_entities(TEXT, "").entities], "")
    assert written.prompt in prompts(encode)
    said = [p.message for p in moving.progress if p.stage == "motion"]
    assert any("no MLLM endpoint configured" in m for m in said)
    sample = [p.message for p in moving.progress if p.stage == "sample"]
    assert [m.split("dynamics weight ")[1] for m in sample] == [
        f"{logistic_weight(i, 3, 20.0, 0.5):.2f}" for i in range(3)]
    assert max(np.abs(a.astype(int) - b).mean() for a, b in
               zip(plain.frames, moving.frames, strict=True)) > 0.5


def test_dynamic_transition_on_a_flow_family_with_prior_tokens(models):
    """LTX (flow matching, the prior carried as condition tokens in Stage I's network only):
    the request's k and s0 replace the preset's, and Stage II runs on its own conditioning."""
    engine = DiffusionEngine(models=str(models["full"]), guidance=FAST, inpaint_steps=2,
                             presets={"fast": str(models["ltx"])})
    scene, _ = engine.open_scene(OpenRequest("ltx-dyn", scene_image(10), text=TEXT))
    poses = stock_path("backward", n_frames=4, median_depth=scene.median_depth)
    motion = TransitionDynamics(prompt="the river flows", k=1e6, s0=0.4)  # steps 0 | 1 of 2
    events = list(engine.transition(scene, TransitionRequest(poses, preset="fast",
                                                             dynamics=motion)))
    frames = [e for e in events if isinstance(e, FrameOut)]
    assert len(frames) == 4 and all(f.image.shape == (H, W, 3) and f.image.std() > 1
                                    for f in frames)
    said = [e.message for e in events if getattr(e, "stage", "") == "motion"]
    assert said == ["prompt from the request"]
    sample = [e.message for e in events if getattr(e, "stage", "") == "sample"]
    assert [m.split("dynamics weight ")[1] for m in sample] == ["0.00", "1.00"]
