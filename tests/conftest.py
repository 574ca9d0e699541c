import os
import tempfile
from pathlib import Path

import pytest

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
