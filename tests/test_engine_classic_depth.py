"""The classic engine's depth sources: a model on disk, else the client's map, else the prior."""

from __future__ import annotations

import numpy as np
import pytest

from backend.engines.base import OpenRequest
from backend.engines.classic import ClassicEngine
from backend.models import testing
from backend.server import Backend, BackendConfig
from protocol.scripted import ScriptedClient


def _image(size: int = 48) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return np.stack([xx * 5, yy * 5, (xx + yy) * 2], -1).astype(np.uint8)


def test_depth_model_on_disk_is_used(tmp_path):
    model, processor = testing.depth_model()
    model.save_pretrained(tmp_path / "depth")
    processor.save_pretrained(tmp_path / "depth")
    engine = ClassicEngine(depth_model=str(tmp_path / "depth"))
    image = _image()
    depth, source = engine.estimate_depth(image, np.eye(3), np.full((48, 48), 3.0, np.float32))
    assert source == "model"
    assert depth.shape == (48, 48) and np.all(np.isfinite(depth)) and depth.min() > 0
    # disparity became depth: capped at 50x the median depth of 10, and not the client's map
    assert depth.max() <= 500.0 + 1e-3 and np.std(depth) > 0


def test_missing_model_falls_back_to_client_depth_then_prior(tmp_path):
    engine = ClassicEngine(depth_model=str(tmp_path / "not-there"))
    image = _image()
    given = np.full((48, 48), 3.0, np.float32)
    depth, source = engine.estimate_depth(image, np.eye(3) * 40, given)
    assert source == "given" and np.array_equal(depth, given)
    scene, cloud = engine.open_scene(OpenRequest("s", image))
    assert len(cloud) >= 48 * 48 and scene.median_depth > 0


def _open_on_backend(tmp_path, options: dict):
    config = BackendConfig(bind="tcp://127.0.0.1:0", sessions=tmp_path / "sessions", save_clips=False,
                           engine_options={"classic": options})
    with Backend(config) as backend, ScriptedClient(backend.address) as client:
        return client.open_scene(_image(), scene_id="s").scene


def test_model_in_a_folder_is_used_and_said_over_the_wire(tmp_path):
    model, processor = testing.depth_model()
    model.save_pretrained(tmp_path / "depth")
    processor.save_pretrained(tmp_path / "depth")
    opened = _open_on_backend(tmp_path, {"depth_model": str(tmp_path / "depth"), "capacity": 123456})
    assert opened.depth_source == "model"
    assert str(tmp_path / "depth") in opened.depth_note
    assert opened.points_budget == 123456


def test_offline_default_falls_back_to_the_prior_and_says_how_to_get_the_model(tmp_path):
    # conftest sets HF_HUB_OFFLINE=1 and the hub cache here has no Depth Anything
    opened = _open_on_backend(tmp_path, {})
    assert opened.depth_source == "prior"
    assert "Depth-Anything-V2-Small-hf" in opened.depth_note
    assert "dreamjourney models fetch" in opened.depth_note and "offline" in opened.depth_note
    assert "\n" not in opened.depth_note


def test_depth_model_none_forces_the_prior_without_trying(tmp_path, monkeypatch):
    import backend.engines.depth_model as dm

    monkeypatch.setattr(dm, "load_depth_model", lambda *a, **k: pytest.fail("tried to load"))
    engine = ClassicEngine(depth_model="none")
    scene, _ = engine.open_scene(OpenRequest("s", _image()))
    assert scene.depth_source == "prior" and 'depth_model = "none"' in scene.depth_note


def test_download_progress_is_forwarded():
    from backend.engines.depth_model import _progress_bar

    seen = []
    bar = _progress_bar(lambda *a: seen.append(a), "some/model")(total=3)
    bar.update(1)
    bar.update(2)
    assert [s[:2] for s in seen] == [(0, 3), (1, 3), (3, 3)] and "some/model" in seen[-1][2]
