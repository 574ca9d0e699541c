"""Explorer settings and key bindings, read from the TOML files in ``configs/``."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any


def _section(cls, data: dict[str, Any], name: str):
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown keys in [{name}]: {', '.join(sorted(unknown))}")
    return cls(**data)


@dataclass
class WindowSettings:
    width: int = 960
    height: int = 540
    target_fps: float = 60.0
    vsync: bool = False
    background: list[float] = field(default_factory=lambda: [0.02, 0.02, 0.03])


@dataclass
class CameraConfig:
    speed: float = 0.25
    fast_factor: float = 4.0
    look_sensitivity: float = 0.0025
    scroll_step: float = 1.2
    smoothing: float = 12.0


@dataclass
class PathSettings:
    transition_frames: int = 48
    fps: float = 24.0
    smooth: int = 2


@dataclass
class PlayerConfig:
    min_prebuffer: int = 2
    max_prebuffer: int = 8
    clip_alpha: float = 1.0


@dataclass
class DynamicsSettings:
    num_frames: int = 48
    fps: float = 24.0
    arrow_frames: int = 24
    brush_radius: int = 20


@dataclass
class NetworkSettings:
    credits: int = 8
    heartbeat_s: float = 1.0
    peer_timeout_s: float = 5.0
    connect_timeout_s: float = 20.0


@dataclass
class RecordSettings:
    fps: float = 30.0
    queue_size: int = 8
    folder: str = "recordings"
    screenshot_folder: str = "screenshots"


@dataclass
class ExplorerSettings:
    window: WindowSettings = field(default_factory=WindowSettings)
    camera: CameraConfig = field(default_factory=CameraConfig)
    paths: PathSettings = field(default_factory=PathSettings)
    player: PlayerConfig = field(default_factory=PlayerConfig)
    dynamics: DynamicsSettings = field(default_factory=DynamicsSettings)
    network: NetworkSettings = field(default_factory=NetworkSettings)
    record: RecordSettings = field(default_factory=RecordSettings)

    @classmethod
    def load(cls, path: str | Path | None = None) -> ExplorerSettings:
        """``configs/explorer.toml`` (or ``path``); missing keys keep their defaults."""
        data = _read_toml("explorer.toml", path)
        sections = {f.name: f.type for f in fields(cls)}
        unknown = set(data) - set(sections)
        if unknown:
            raise ValueError(f"unknown sections in explorer settings: {', '.join(sorted(unknown))}")
        kwargs = {}
        for f in fields(cls):
            sub_cls = type(f.default_factory())
            kwargs[f.name] = _section(sub_cls, data.get(f.name, {}), f.name)
        return cls(**kwargs)


@dataclass
class KeyBindings:
    actions: dict[str, list[str]]
    """Action name -> pyglet key names."""
    help_lines: list[str]

    @classmethod
    def load(cls, path: str | Path | None = None) -> KeyBindings:
        data = _read_toml("keys.toml", path)
        actions = {
            name: [value] if isinstance(value, str) else list(value)
            for name, value in data.get("keys", {}).items()
        }
        return cls(actions, list(data.get("help", {}).get("lines", [])))

    def symbol_map(self) -> dict[int, str]:
        """pyglet key symbol -> action; raises ValueError naming an unknown key."""
        from pyglet.window import key

        out: dict[int, str] = {}
        for action, names in self.actions.items():
            for name in names:
                symbol = getattr(key, name.upper() if not name.startswith("_") else name, None)
                if not isinstance(symbol, int):
                    raise ValueError(f"key {name!r} for {action!r} is not a pyglet key name")
                out[symbol] = action
        return out


def _read_toml(name: str, path: str | Path | None) -> dict[str, Any]:
    if path is not None:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    return tomllib.loads(resources.files("configs").joinpath(name).read_text(encoding="utf-8"))
