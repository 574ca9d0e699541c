"""Loaders through the registry: tiny models saved with save_pretrained, loaded by path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.guidance import GuidanceConfig, GuidedVideoSampler
from backend.models import (
    CogVideoXAdapter,
    DepthEstimator,
    Inpainter,
    LTXAdapter,
    ModelCache,
    ModelRegistry,
    ModelSpec,
    SVDAdapter,
    WanAdapter,
    WanVACEAdapter,
    load_specs,
    named_config,
    testing,
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Every role saved to disk once, and a models TOML per video family pointing at them."""
    root = tmp_path_factory.mktemp("models")
    model, processor = testing.depth_model()
    model.save_pretrained(root / "depth")
    processor.save_pretrained(root / "depth")
    testing.inpaint_pipeline().save_pretrained(root / "inpaint")
    testing.cogvideox_pipeline().save_pretrained(root / "cogvideox")
    testing.wan_pipeline().save_pretrained(root / "wan")
    testing.svd_pipeline().save_pretrained(root / "svd")
    testing.ltx_pipeline().save_pretrained(root / "ltx")
    testing.wan_vace_pipeline().save_pretrained(root / "wan-vace")
    tomls = {}
    for family in ("cogvideox", "wan", "svd", "ltx", "wan-vace"):
        path = root / f"{family}.toml"
        path.write_text(
            f'[depth]\nsource = "{root / "depth"}"\ndevice = "cpu"\n\n'
            f'[inpaint]\nsource = "{root / "inpaint"}"\ndevice = "cpu"\n\n'
            f'[video]\nfamily = "{family}"\nsource = "{root / family}"\ndevice = "cpu"\n'
            f'[video.guidance]\nnum_frames = 5\npad_frames = 2\n'
        )
        tomls[family] = path
    return tomls


@pytest.mark.parametrize("family,cls,size", [("cogvideox", CogVideoXAdapter, 32),
                                             ("wan", WanAdapter, 32), ("svd", SVDAdapter, 8),
                                             ("ltx", LTXAdapter, 32),
                                             ("wan-vace", WanVACEAdapter, 32)])
def test_video_loads_by_path_and_samples(saved, family, cls, size):
    registry = ModelRegistry.from_toml(saved[family], cache=ModelCache())
    adapter = registry.video()
    assert isinstance(adapter, cls)
    assert registry.video() is adapter and registry.cache.loads == 1
    assert not any(p.requires_grad for p in adapter.denoiser.parameters())
    cfg = GuidanceConfig(num_inference_steps=2, renoise_rounds=0, height=size, width=size,
                         max_sequence_length=16, mode="none").replace(**registry.guidance_overrides())
    image = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
    out = GuidedVideoSampler(adapter)(image, None, cfg)
    assert out.frames.shape == (5, size, size, 3)
    assert out.frames.std() > 0  # real decoded pixels, not a constant


def test_depth_loads_by_path(saved):
    registry = ModelRegistry.from_toml(saved["cogvideox"], cache=ModelCache())
    depth = registry.depth()
    assert isinstance(depth, DepthEstimator) and registry.depth() is depth
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (24, 40, 3), dtype=np.uint8)
    pred = depth(image)
    assert pred.values.shape == (24, 40) and pred.values.dtype == np.float32
    assert pred.kind == "disparity" and np.isfinite(pred.values).all()
    other = depth(255 - image)
    assert not np.allclose(pred.values, other.values)


def test_inpaint_loads_by_path_and_keeps_known_pixels(saved):
    registry = ModelRegistry.from_toml(saved["cogvideox"], cache=ModelCache())
    inpainter = registry.inpainter()
    assert isinstance(inpainter, Inpainter)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    hole = np.zeros((32, 32), bool)
    hole[8:24, 8:24] = True
    out = inpainter(image, hole, "a river", num_inference_steps=2,
                    generator=torch.Generator().manual_seed(0))
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[~hole], image[~hole])
    assert not np.array_equal(out[hole], image[hole])


def test_shared_cache_loads_once_per_spec(saved):
    cache = ModelCache()
    a = ModelRegistry.from_toml(saved["svd"], cache=cache)
    b = ModelRegistry.from_toml(saved["svd"], cache=cache)
    assert a.video() is b.video() and cache.loads == 1
    assert a.spec("video") in cache


def test_spec_validation(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[video]\nfamily = "sora"\nsource = "x"\n')
    with pytest.raises(ValueError, match="family must be one of"):
        load_specs(bad)
    bad.write_text('[video]\nfamily = "wan"\nsource = "x"\nflavour = 1\n')
    with pytest.raises(ValueError, match="unknown keys flavour"):
        load_specs(bad)
    bad.write_text('[vision]\nsource = "x"\n')
    with pytest.raises(ValueError, match="unknown roles vision"):
        load_specs(bad)
    with pytest.raises(KeyError, match="no model configured for role 'depth'"):
        ModelRegistry({}).spec("depth")
    assert ModelSpec("depth", "x", device="cpu").resolve_device() == torch.device("cpu")


SHIPPED = {"cogvideox": ("cogvideox", 49), "wan": ("wan", 81), "svd": ("svd", 25),
           "wan-vace": ("wan-vace", 81), "paper": ("easyanimate", 57), "interactive": ("ltx", 49),
           "easyanimate": ("easyanimate", 49)}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_configs_are_valid(name):
    specs = load_specs(named_config(name))
    assert set(specs) == {"depth", "inpaint", "video"}
    family, frames = SHIPPED[name]
    assert specs["video"].family == family
    cfg = GuidanceConfig.from_mapping(dict(specs["video"].guidance))
    assert cfg.total_frames == frames
    hash(specs["video"])  # a cache key, options included


def test_presets_are_the_release_and_a_fast_one():
    paper = GuidanceConfig.from_mapping(dict(load_specs(named_config("paper"))["video"].guidance))
    assert (paper.mode, paper.num_inference_steps, paper.guided_steps, paper.renoise_rounds,
            paper.lr, paper.guidance_scale, paper.pad_frames) == ("release", 25, 20, 15, 0.025,
                                                                   7.0, 4)
    fast = load_specs(named_config("interactive"))["video"]
    cfg = GuidanceConfig.from_mapping(dict(fast.guidance))
    assert cfg.num_inference_steps == len(dict(fast.options)["timesteps"]) == 8
    assert cfg.renoise_rounds <= 2 and cfg.guidance_scale == 1.0  # distilled: no CFG
