"""Engine registry: one module per engine behind backend.engines.base.Engine.

Engines are imported only when created, so listing names loads no model code.
"""

from __future__ import annotations

import importlib.util

from backend.engines.base import Engine

_ENGINES = {
    "classic": "backend.engines.classic:ClassicEngine",
    "diffusion": "backend.engines.diffusion:DiffusionEngine",
}


def engine_names() -> list[str]:
    """Names of the engines this install can create."""
    names = []
    for name, target in _ENGINES.items():
        module = target.split(":")[0]
        if importlib.util.find_spec(module) is not None:
            names.append(name)
    return names


def engine_class(name: str) -> type[Engine]:
    """The class of the engine called ``name`` (imports its module)."""
    if name not in _ENGINES or name not in engine_names():
        raise ValueError(f"unknown engine {name!r}; available: {', '.join(engine_names())}")
    module, cls = _ENGINES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def create_engine(name: str, **options) -> Engine:
    """A new engine called ``name``; ``options`` go to its constructor."""
    return engine_class(name)(**options)
