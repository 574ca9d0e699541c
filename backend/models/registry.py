"""The model registry: one spec per role; each model loads once and stays resident."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .depth import DepthEstimator
from .inpaint import Inpainter
from .memory import MemoryConfig
from .spec import ModelSpec, load_specs
from .video import load_video_adapter

logger = logging.getLogger(__name__)

_LOADERS: dict[str, Callable[[ModelSpec, MemoryConfig | None], Any]] = {
    "depth": lambda spec, memory: DepthEstimator.from_spec(spec),
    "inpaint": lambda spec, memory: Inpainter.from_spec(spec),
    "video": load_video_adapter,
}


class ModelCache:
    """Loaded models keyed by spec (and the memory config the video role loads under).
    Thread-safe: concurrent gets of one spec load it once."""

    def __init__(self) -> None:
        self._models: dict[tuple[ModelSpec, MemoryConfig | None], Any] = {}
        self._lock = threading.Lock()
        self.loads = 0
        """How many times a loader actually ran (a cache miss)."""

    def get(self, spec: ModelSpec, memory: MemoryConfig | None = None) -> Any:
        key = (spec, memory if spec.role == "video" else None)
        with self._lock:
            if key not in self._models:
                self._models[key] = _LOADERS[spec.role](spec, key[1])
                self.loads += 1
            return self._models[key]

    def __contains__(self, spec: ModelSpec) -> bool:
        return any(key[0] == spec for key in self._models)

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


_SHARED_CACHE = ModelCache()


class ModelRegistry:
    """Specs by role, backed by a model cache (the process-wide one unless given)."""

    def __init__(self, specs: Mapping[str, ModelSpec], cache: ModelCache | None = None,
                 memory: MemoryConfig | None = None) -> None:
        self.specs = dict(specs)
        self.cache = cache if cache is not None else _SHARED_CACHE
        self.memory = memory
        """How the video role sits on a GPU (None: the spec's ``offload``)."""

    @classmethod
    def from_toml(cls, *paths: str | Path, cache: ModelCache | None = None,
                  memory: MemoryConfig | None = None) -> ModelRegistry:
        """Merge model files in order (a later file's role replaces an earlier one's)."""
        specs: dict[str, ModelSpec] = {}
        for path in paths:
            specs.update(load_specs(path))
        return cls(specs, cache, memory)

    def has(self, role: str) -> bool:
        return role in self.specs

    def spec(self, role: str) -> ModelSpec:
        if role not in self.specs:
            raise KeyError(f"no model configured for role {role!r}; configured: "
                           f"{', '.join(sorted(self.specs)) or 'none'}")
        return self.specs[role]

    def get(self, role: str) -> Any:
        """The loaded model of a role: DepthEstimator, Inpainter or a VideoFamilyAdapter."""
        return self.cache.get(self.spec(role), self.memory)

    def depth(self) -> DepthEstimator:
        return self.get("depth")

    def inpainter(self) -> Inpainter:
        return self.get("inpaint")

    def video(self):
        """The :class:`~backend.models.adapters.VideoFamilyAdapter` of the video role."""
        return self.get("video")

    def guidance_overrides(self) -> dict[str, Any]:
        """The video spec's ``[video.guidance]`` table, for ``GuidanceConfig.replace``."""
        return dict(self.spec("video").guidance) if self.has("video") else {}
