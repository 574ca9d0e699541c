"""Memory profiles and the meta-device peak estimate (no GPU): the tracker counts what a GPU
would hold, the profiles place parts as documented, and ``auto`` follows the free VRAM."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from backend.models.memory import PROFILES, MemoryConfig, choose_profile
from backend.models.memory_estimate import Component, _grouped_bytes, phase_peaks
from backend.models.meta_memory import MemoryTracker, fused_attention, peak_of


def test_tracker_counts_allocations_views_and_frees():
    tracker = MemoryTracker()
    with torch.no_grad(), tracker:
        x = torch.empty(1000, device="meta")            # 4000 bytes
        y = x * 2                                        # 8000 live
        del x                                            # 4000 live
        v = y.view(10, 100)                              # a view: nothing new
        y.add_(1)                                        # in place: nothing new
        z = torch.cat([v, v])                            # 8000 more: 12000 live
        del y                                            # v keeps the storage alive
        assert tracker.live == 12000
        del v                                            # now it goes
        assert tracker.live == 8000
        del z
    assert tracker.peak == 12000 and tracker.live == 0


def test_attention_is_counted_as_a_fused_kernel_not_a_score_matrix():
    q = torch.empty(1, 8, 4096, 64, device="meta", dtype=torch.bfloat16)
    peak, out = peak_of(lambda: F.scaled_dot_product_attention(q, q, q))
    assert out.shape == q.shape
    assert peak == q.numel() * 2 + 8 * 4096 * 4  # output + fp32 log-sum-exp
    unpatched = MemoryTracker()  # the meta decomposition makes the N x N scores
    with torch.no_grad(), unpatched:
        F.scaled_dot_product_attention(q, q, q)
    assert unpatched.peak >= 8 * 4096 * 4096 * 2
    original = F.scaled_dot_product_attention
    with fused_attention():
        assert F.scaled_dot_product_attention is not original
    assert F.scaled_dot_product_attention is original


def test_profiles_place_parts_as_documented():
    parts = {"text": Component(10, 1, {"text": 2}), "denoiser": Component(20, 3, {"denoise": 5}),
             "vae": Component(4, 2, {"encode": 1, "decode": 6})}
    resident = phase_peaks(PROFILES["80gb"], parts)
    assert resident == {"text": 36, "denoise": 39, "encode": 35, "decode": 40}
    offload = phase_peaks(PROFILES["48gb"], parts)  # one part on the GPU at a time
    assert offload == {"text": 12, "denoise": 25, "encode": 5, "decode": 10}
    grouped = phase_peaks(PROFILES["16gb"], parts)  # what the leaf-level hooks keep
    assert grouped == {"text": 3, "denoise": 8, "encode": 3, "decode": 8}


def test_grouped_bytes_are_what_leaf_offloading_keeps():
    net = torch.nn.Sequential(torch.nn.Linear(10, 10), torch.nn.Linear(10, 30))
    net.register_parameter("scale", torch.nn.Parameter(torch.ones(7)))  # owned by a non-leaf
    # the non-leaf's own 7 floats, plus twice the largest leaf (10 x 30 + 30 floats)
    assert _grouped_bytes(net) == 4 * (7 + 2 * 330)


def test_auto_picks_the_largest_profile_that_fits_the_free_vram(caplog):
    auto = MemoryConfig()
    assert choose_profile(auto, int(80e9)).name == "80gb"      # an 80 GB card after its context
    assert choose_profile(auto, int(50e9)).name == "48gb"
    assert choose_profile(auto, int(25e9)).name == "24gb"      # a 24 GiB card (25.8 GB)
    assert choose_profile(auto, int(20e9) - 1).name == "16gb"
    assert choose_profile(MemoryConfig(reserve_gb=6), int(25e9)).name == "16gb"
    with caplog.at_level(logging.WARNING):
        assert choose_profile(auto, int(10e9)).name == "16gb"
    assert "tight even for the 16gb profile" in caplog.text
    assert choose_profile(MemoryConfig(profile="48gb"), int(100e9)).name == "48gb"
    with pytest.raises(ValueError, match="needs a CUDA device"):
        choose_profile(auto, None)


def test_memory_config_is_typed():
    assert MemoryConfig.from_mapping({"profile": "24gb", "reserve_gb": 2}).profile == "24gb"
    with pytest.raises(ValueError, match="unknown field `budget`"):
        MemoryConfig.from_mapping({"budget": 3})
    with pytest.raises(ValueError, match="memory: Invalid enum value '12gb'"):
        MemoryConfig.from_mapping({"profile": "12gb"})


def test_a_bad_memory_table_is_refused_when_the_backend_starts():
    from backend.config import ConfigError, check_engine_options

    check_engine_options("diffusion", {"memory": {"profile": "16gb"}}, "backend.toml")
    with pytest.raises(ConfigError, match=r"backend.toml: engines.diffusion.memory: .*`profil`"):
        check_engine_options("diffusion", {"memory": {"profil": "16gb"}}, "backend.toml")
