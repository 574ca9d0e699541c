import os
import tempfile
from pathlib import Path

import pytest


def pytest_configure(config) -> None:
    """The tests' models are tiny: one intra-op thread runs them several times faster than
    two (OpenMP's barriers dominate tiny ops, and worse when other processes share the cores;
    2 s against 14 s for the SVD guidance test on this 2-core machine). Backends the tests
    start as processes choose their own threads. The xdist controller runs no test: it does
    not import torch (3 CPU-seconds while the workers start)."""
    if config.getoption("numprocesses", None) and not hasattr(config, "workerinput"):
        return
    import torch

    torch.set_num_threads(1)

# Tests never download: the classic engine's default depth model then falls back at once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# explorers started by tests keep their loopback identity token here, never in ~/.config
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="dj-test-config-")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SCENES = SHARED / "scenes"


@pytest.fixture(scope="session")
def scenes_dir() -> Path:
    if not SCENES.is_dir():
        pytest.skip(f"shared scenes not found at {SCENES}")
    return SCENES
