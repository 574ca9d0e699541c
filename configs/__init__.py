"""The shipped configuration files: ``backend.toml``, ``explorer.toml``, ``keys.toml``,
``models/*.toml`` (one per sampler preset) and ``paths/*.json`` (camera paths).

Kept free of torch and numpy: the backend's config, the model loaders and ``dreamjourney
models`` all take the preset names from here.
"""

from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent / "models"
"""configs/models: a sampler preset's roles (depth, inpaint, video) per file."""


def model_path(name: str) -> Path:
    """``configs/models/<name>.toml`` (whether or not it exists)."""
    return MODELS_DIR / f"{name}.toml"


def model_names() -> list[str]:
    """The presets shipped in ``configs/models`` (file names without ``.toml``), sorted."""
    return sorted(p.stem for p in MODELS_DIR.glob("*.toml"))
