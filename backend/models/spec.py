"""Model specs: which weights play which role, read from configs/models/*.toml.

A file holds one table per role::

    [video]
    family = "cogvideox"                  # cogvideox | wan | svd | ltx | wan-vace | easyanimate
    source = "THUDM/CogVideoX-5b-I2V"     # hub id, local folder, or one .safetensors file
    # config = "org/name"                 # single files: where the other components come from
    dtype = "bfloat16"
    device = "auto"                       # auto: the accelerator if present, else cpu
    offload = "none"                      # none | model | sequential
    vae_tiling = true

    [video.guidance]                      # GuidanceConfig overrides for this model
    num_frames = 41

Specs are frozen and hashable: the registry caches loaded models by spec.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from configs import model_names, model_path

Role = Literal["depth", "inpaint", "video"]
ROLES: tuple[str, ...] = ("depth", "inpaint", "video")
VIDEO_FAMILIES: tuple[str, ...] = ("cogvideox", "wan", "svd", "ltx", "wan-vace", "easyanimate")

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_SPEC_KEYS = {"family", "source", "config", "dtype", "device", "offload", "variant",
              "subfolder", "vae_tiling", "options", "guidance", "output"}
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".gguf")


@dataclass(frozen=True)
class ModelSpec:
    role: str
    source: str
    """Hub id (``org/name``), a local folder written by ``save_pretrained``, or one
    checkpoint file (URL or path ending .safetensors) loaded with ``from_single_file``."""
    config: str | None = None
    """Single-file sources: the hub id or folder holding the pipeline's configs and the
    components the file lacks (text encoder, tokenizer, scheduler)."""
    family: str = ""
    """Video family (cogvideox, wan, svd); unused for depth and inpaint."""
    dtype: str = "float32"
    device: str = "auto"
    offload: Literal["none", "model", "sequential"] = "none"
    variant: str | None = None
    vae_tiling: bool = False
    output: str = "disparity"
    """Depth only: ``disparity`` (relative inverse depth, Depth Anything / DPT) or ``depth``."""
    options: tuple[tuple[str, Any], ...] = ()
    """Family adapter keyword arguments (e.g. SVD fps), as sorted pairs."""
    guidance: tuple[tuple[str, Any], ...] = field(default=(), compare=False)
    """GuidanceConfig overrides for this model (not part of the cache key)."""

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown model role {self.role!r}; expected one of {ROLES}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"{self.role}: dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}")
        if self.role == "video" and self.family not in VIDEO_FAMILIES:
            raise ValueError(f"video: family must be one of {VIDEO_FAMILIES}, got {self.family!r}")
        if self.offload not in ("none", "model", "sequential"):
            raise ValueError(f"{self.role}: offload must be none, model or sequential")
        if self.output not in ("disparity", "depth"):
            raise ValueError(f"{self.role}: output must be disparity or depth")
        if self.single_file and self.role == "video" and not self.config:
            raise ValueError(f"{self.role}: a single-file source needs 'config' (the hub id or "
                             f"folder of the pipeline's configs)")

    @property
    def single_file(self) -> bool:
        """Whether ``source`` is one checkpoint file rather than a diffusers folder."""
        return self.source.endswith(SINGLE_FILE_SUFFIXES)

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]

    def resolve_device(self) -> torch.device:
        """``auto`` picks the accelerator torch sees (CUDA, then MPS), else the CPU."""
        if self.device != "auto":
            return torch.device(self.device)
        if torch.cuda.is_available():
            return torch.device(torch.cuda.current_device())
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")

    @classmethod
    def from_table(cls, role: str, table: dict[str, Any]) -> ModelSpec:
        unknown = sorted(set(table) - _SPEC_KEYS)
        if unknown:
            raise ValueError(f"{role}: unknown keys {', '.join(unknown)}")
        if "source" not in table:
            raise ValueError(f"{role}: 'source' (hub id or local path) is required")
        values = dict(table)
        values["options"] = tuple(sorted(
            (k, tuple(v) if isinstance(v, list) else v)  # lists would make the spec unhashable
            for k, v in dict(values.get("options", {})).items()))
        values["guidance"] = tuple(sorted(dict(values.get("guidance", {})).items()))
        return cls(role=role, **values)


def load_specs(path: str | Path) -> dict[str, ModelSpec]:
    """Read one models TOML file into ``{role: spec}``."""
    with open(path, "rb") as f:
        data = tomllib.load(f)
    unknown = sorted(set(data) - set(ROLES))
    if unknown:
        raise ValueError(f"{path}: unknown roles {', '.join(unknown)}; expected {ROLES}")
    return {role: ModelSpec.from_table(role, table) for role, table in data.items()}


def named_config(name: str) -> Path:
    """configs/models/<name>.toml, e.g. ``cogvideox``, ``wan``, ``svd``."""
    path = model_path(name)
    if not path.exists():
        raise FileNotFoundError(
            f"no model config {name!r}; available: {', '.join(model_names())}")
    return path
