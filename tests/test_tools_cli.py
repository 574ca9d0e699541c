"""``dreamjourney doctor`` and ``dreamjourney models fetch`` as a person runs them (real
processes, the real hub client): on this machine without a GPU or the hub, doctor says so in
one line and exits 0; fetch fails in one ``error:`` line with exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from backend.models.fetch import Download, downloads, preset_specs

ENV = dict(os.environ, HF_HUB_OFFLINE="1")


def cli(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "explorer.cli", *args], capture_output=True,
                          text=True, env=env or ENV, timeout=timeout)


@pytest.mark.slow
def test_doctor_reports_each_thing_in_one_line(tmp_path):
    env = dict(ENV, XDG_CACHE_HOME=str(tmp_path), HF_HOME=str(tmp_path / "hf"))
    first = cli("doctor", "--presets", "svd", env=env)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert len(lines) == 4
    if not torch.cuda.is_available():
        assert lines[0].startswith("gpu: none (") and "sees no CUDA device" in lines[0]
    assert lines[1].startswith("preset svd (svd-xt): estimated peak 80gb ")
    assert all(f"{p} " in lines[1] for p in ("80gb", "48gb", "24gb", "16gb"))
    assert lines[2].startswith("weights svd: 0 of 3 cached; missing ")
    assert lines[3] == "fetch: dreamjourney models fetch svd"
    assert "estimating the peak memory of preset svd" in first.stderr
    again = cli("doctor", "--presets", "svd", env=env)  # the estimate comes from the cache
    assert again.returncode == 0 and again.stdout == first.stdout
    assert "estimating" not in again.stderr


@pytest.mark.slow  # three CLI processes, each importing torch and diffusers
def test_fetch_offline_and_unknown_presets_are_one_line_errors():
    offline = cli("models", "fetch", "interactive", timeout=600)
    assert offline.returncode == 2
    assert offline.stderr.strip().splitlines() == [
        "error: cannot reach the Hugging Face hub to fetch "
        "depth-anything/Depth-Anything-V2-Small-hf (offline, or HF_HUB_OFFLINE is set)"]
    unknown = cli("models", "fetch", "sora", timeout=600)
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: no preset 'sora'")
    bad = cli("doctor", "--presets", "sora", timeout=600)
    assert bad.returncode == 2 and bad.stderr.startswith("error: no preset sora")


def test_a_single_file_preset_fetches_the_file_and_the_configs_it_lacks():
    video = [d for d in downloads(preset_specs("interactive")) if d.role == "video"]
    assert video == [
        Download("video", "Lightricks/LTX-Video", "file", "ltxv-2b-0.9.8-distilled.safetensors",
                 "main"),
        Download("video", "Lightricks/LTX-Video-0.9.5", "diffusers",
                 ignore=("transformer/*.safetensors", "unet/*.safetensors", "vae/*.safetensors")),
    ]
    paper = {d.role: d for d in downloads(preset_specs("paper"))}
    assert paper["video"] == Download("video", "alibaba-pai/EasyAnimateV5.1-12b-zh-InP-diffusers",
                                      "diffusers")
    assert paper["depth"].kind == "transformers"
