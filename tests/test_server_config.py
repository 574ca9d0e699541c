"""The backend's typed config, the engines on offer, and values refused before any work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backend.config import ConfigError, load_config
from backend.server import Backend, BackendConfig
from backend.session import SessionError, check_scene_id
from protocol import codec
from protocol.messages import Dynamics, JobFailed, OpenScene
from protocol.scripted import ScriptedClient, ScriptError
from tests.helpers import scene


def test_unknown_keys_name_the_key_and_the_file(tmp_path):
    bad = tmp_path / "b.toml"
    bad.write_text('bind = "tcp://127.0.0.1:0"\n[scheduler]\njob_slot = 2\n')
    with pytest.raises(ConfigError, match=r"b\.toml: unknown key 'scheduler\.job_slot'"):
        load_config(bad)
    bad.write_text("[engines.classic]\ninpaint_radiu = 3\n")
    with pytest.raises(ConfigError, match=r"unknown key 'engines\.classic\.inpaint_radiu'"):
        load_config(bad)
    bad.write_text('offer = ["classic", "nope"]\n')
    with pytest.raises(ConfigError, match="'nope' is not installed"):
        load_config(bad)


def test_a_bad_models_toml_is_an_error_at_start(tmp_path):
    models = tmp_path / "m.toml"
    models.write_text('[video]\nfamily = "cogvideox"\nsource = "x"\nsubfolder = "y"\n')
    cfg = tmp_path / "b.toml"
    cfg.write_text(f'engine = "diffusion"\n[engines.diffusion]\nmodels = "{models}"\n')
    with pytest.raises(ConfigError, match=r"engines\.diffusion\.models"):
        load_config(cfg)


def test_serve_with_a_bad_config_prints_one_line(tmp_path):
    cfg = tmp_path / "b.toml"
    cfg.write_text("[limits]\nmax_frame = 3\n")
    exe = Path(sys.executable).with_name("dreamjourney")
    out = subprocess.run([str(exe), "serve", "--config", str(cfg)], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [f"error: {cfg}: unknown key 'limits.max_frame'"]


def test_scene_ids_must_match_whole():
    for bad in ("abc\n", "../x", "a/b", "", ".hidden", "x" * 129):
        with pytest.raises(SessionError):
            check_scene_id(bad)
    assert check_scene_id("a.b_c-1") == "a.b_c-1"


def test_only_configured_engines_and_sane_numbers(tmp_path):
    config = BackendConfig(bind="tcp://127.0.0.1:0", sessions=str(tmp_path / "s"))
    with Backend(config) as backend, ScriptedClient(backend.address) as client:
        assert client.welcome.engines == ["classic"]
        with pytest.raises(ScriptError, match=r"\[unknown_engine\]"):
            client.open_scene(scene(1), scene_id="d", engine="diffusion")
        with pytest.raises(ScriptError, match=r"\[bad_value\].*focal"):
            client.open_scene(scene(1), scene_id="k", K=np.zeros((3, 3)))
        opened = client.open_scene(scene(1), scene_id="ok")
        # more frames than limits.max_frames: refused by the decoder, with the limit named
        with pytest.raises(ScriptError, match=r"\[bad_value\].*240\] \(this backend's limit"):
            client.dynamics("ok", np.eye(4), num_frames=config.limits.max_frames + 1)
        job = client.dynamics("ok", np.eye(4), num_frames=3)
        assert not isinstance(job.outcome, JobFailed), job.outcome
        assert opened.scene.engine == "classic"
    leftovers = [p.name for p in (tmp_path / "s").iterdir() if p.name.startswith(".")]
    assert leftovers == [".dreamjourney-sessions"], leftovers  # only the root's marker


def test_non_finite_and_wrong_lengths_never_reach_the_engine(tmp_path):
    import msgspec

    from protocol.limits import BadValue

    with pytest.raises(BadValue):
        codec.decode(codec.encode(Dynamics(job_id="j", scene_id="s", pose=[0.0] * 16, fps=float("nan"))))
    with pytest.raises(BadValue):
        codec.decode([msgspec.msgpack.encode({"type": "open_scene", "request_id": "r", "scene_id": "s",
                                              "K": [1.0] * 8})])
    with pytest.raises(BadValue):
        codec.decode(codec.encode(OpenScene(request_id="r", scene_id="s", K=[float("inf")] + [0.0] * 8)))


def test_dynamics_paths_one_frame_at_a_time_match_the_whole_paths():
    from backend import animation

    rng = np.random.default_rng(0)
    field = rng.standard_normal((12, 20, 2)).astype(np.float32)
    ys, xs = np.mgrid[0:12, 0:20]
    start = np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], 1).astype(np.float32)
    for n in (1, 2, 9, 48):
        forward, backward, alpha = animation.loop_paths(field, start, n)
        frames = list(animation.loop_frames(field, start, n))
        assert [t for t, *_ in frames] == list(range(n))
        for t, f, b, a in frames:
            assert np.array_equal(f, forward[t]) and np.array_equal(b, backward[t])
            assert a == pytest.approx(alpha[t])


def test_advect_ends_where_the_whole_paths_end():
    """Both ends at once, without the steps between (what lifting a region keeps), bitwise
    those of integrating along the field and against it, in one go or in stretches."""
    from backend import animation

    rng = np.random.default_rng(1)
    field = rng.normal(0.0, 1.5, (16, 24, 2)).astype(np.float32)
    start = rng.uniform(0.0, 16.0, (500, 2)).astype(np.float32)
    for n in (0, 1, 7, 48):
        ahead, behind = animation.advect(field, start, start, n)
        assert np.array_equal(ahead, animation.integrate(field, start, n)[-1])
        assert np.array_equal(behind, animation.integrate(-field, start, n)[-1])
        half = animation.advect(field, *animation.advect(field, start, start, n // 2), n - n // 2)
        assert np.array_equal(half[0], ahead) and np.array_equal(half[1], behind)
