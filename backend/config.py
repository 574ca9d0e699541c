"""The backend's one typed config (configs/backend.toml), loaded and checked with msgspec.

Unknown keys are errors that name the key and the file. Every ``[engines.NAME]`` table is
checked against that engine's constructor, and a diffusion engine's models TOML is read
through backend.models, all at start, so a typo never waits for the first request.
"""

from __future__ import annotations

import inspect
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import msgspec

from protocol.admission import AdmissionCaps
from protocol.endpoint import EndpointCaps
from protocol.limits import Limits


class ConfigError(ValueError):
    """The config cannot be used; the message names the file and the key."""


class SchedulerConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """How jobs share the machine: round-robin across clients, bounded per client."""

    job_slots: int = 1
    """Jobs (transitions, dynamics) running at once. 1 on a single GPU; a pool of remote
    workers sets it to the number of workers."""
    open_slots: int = 1
    """Scenes being opened (image decoding, depth, lifting) at once."""
    max_jobs_per_client: int = 4
    """Jobs of one client queued or running; more are refused with ``busy``."""
    max_scenes_per_client: int = 16
    """Scenes one client has open (or opening) at once."""
    credit_timeout_s: float = 30.0
    """A job waiting this long for frame credit fails with ``credit_timeout``."""


class ConnectionsConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    hello_timeout_s: float = 5.0
    """Connections that have not said Hello by then are shut."""
    max_clients: int = 64
    """Connected clients at once."""
    max_connections_per_client: int = 4
    max_waiting_requests_per_client: int = 64
    """Requests of one client received but not yet dispatched; more get ``busy``."""
    max_messages_per_s: float = 2000.0
    """Messages one connection may send per second; over it, it is disconnected."""
    max_refused_per_s: float = 5.0
    """Messages of one connection answered with an Error per second (20 at once); over it,
    it is disconnected."""
    new_clients_per_s: float = 10.0
    """Hellos per second from clients not seen before, all together (20 at once); more wait."""
    reconnects_per_client_per_s: float = 1.0
    """Hellos per second from one known client (4 at once); more wait."""
    max_waiting_hellos: int = 64
    """Hellos waiting for those rates; beyond it a Hello gets ``busy``."""


class LimitsConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Bounds that keep memory set by this file, not by requests."""

    max_message_mb: float = 48.0
    """Largest message (all frames together), also ZeroMQ's per-frame MAXMSGSIZE."""
    max_image_pixels: int = 2048 * 2048
    """Largest photo (width x height), checked from its header before decoding."""
    max_frames: int = 240
    """Most frames in one clip (transition poses or dynamics num_frames)."""


class BackendConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Settings of ``dreamjourney serve`` (defaults in configs/backend.toml)."""

    bind: str = "tcp://127.0.0.1:5555"
    sessions: str = "sessions"
    """Root of the session folders."""
    engine: str = "classic"
    """Default engine for requests that name none."""
    offer: list[str] = []
    """Engines clients may ask for; empty offers only ``engine``."""
    device: str = "cpu"
    cpu_jobs: int | None = None
    """Deprecated alias of ``scheduler.job_slots``."""
    heartbeat_s: float = 1.0
    peer_timeout_s: float = 10.0
    keys: str | None = None
    jpeg_quality: int = 95
    chunk_points: int = 65536
    """Points per PointsDelta message."""
    frames_ahead: int = 2
    """Frames a job may queue beyond the client's credit before it waits."""
    save_clips: bool = True
    status_shows: Literal["own", "all"] = "own"
    """What a Status answer tells a client of others' jobs: ``own`` names only the asker's
    (others are ``other-N``, their scenes hidden); ``all`` names everyone (a trusted team)."""
    scheduler: SchedulerConfig = msgspec.field(default_factory=SchedulerConfig)
    connections: ConnectionsConfig = msgspec.field(default_factory=ConnectionsConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    engine_options: dict[str, dict[str, Any]] = msgspec.field(name="engines", default_factory=dict)
    """Per-engine keyword options (the ``[engines.NAME]`` tables)."""
    cluster: str | None = None
    """Ray address to run the engines on (``auto`` = a local instance); None = in-process.
    With a cluster, ``scheduler.job_slots`` is the number of workers."""
    cluster_options: dict[str, Any] = {}
    """The ``[cluster_options]`` table: backend.cluster.ClusterConfig keys (workers,
    frames_ahead, busy_deadline_s, ...), checked at start."""

    # -- derived --

    def offered(self) -> list[str]:
        return list(self.offer) or [self.engine]

    def job_slots(self) -> int:
        return self.cpu_jobs if self.cpu_jobs is not None else self.scheduler.job_slots

    def protocol_limits(self) -> Limits:
        return Limits(max_message_bytes=int(self.limits.max_message_mb * 1024 * 1024),
                      max_image_pixels=self.limits.max_image_pixels,
                      max_trajectory_len=self.limits.max_frames)

    def endpoint_caps(self) -> EndpointCaps:
        c = self.connections
        return EndpointCaps(hello_timeout_s=c.hello_timeout_s, max_peers=c.max_clients,
                            max_connections_per_client=c.max_connections_per_client,
                            max_queued_per_peer=c.max_waiting_requests_per_client,
                            max_messages_per_s=c.max_messages_per_s,
                            max_refusals_per_s=c.max_refused_per_s,
                            admission=AdmissionCaps(new_per_s=c.new_clients_per_s,
                                                    new_burst=2 * c.new_clients_per_s,
                                                    per_client_per_s=c.reconnects_per_client_per_s,
                                                    max_waiting=c.max_waiting_hellos))


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> BackendConfig:
    """The config in ``path`` (configs/backend.toml when None) with ``overrides`` applied.

    Raises ConfigError naming the file and the offending key.
    """
    if path is None:
        source, text = "configs/backend.toml", resources.files("configs").joinpath("backend.toml").read_text()
    else:
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    try:
        config = msgspec.toml.decode(text.encode(), type=BackendConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {_where(exc)}") from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    if overrides:
        config = msgspec.structs.replace(config, **{k: v for k, v in overrides.items() if v is not None})
    check_config(config, source)
    return config


def _where(exc: msgspec.ValidationError) -> str:
    text = str(exc)
    if text.startswith("Object contains unknown field"):
        key, _, at = text.partition(" - at ")
        name = key.split("`")[1]
        table = at.strip("`$").lstrip(".") if at else ""
        return f"unknown key {(table + '.' if table else '') + name!r}"
    return text


def check_config(config: BackendConfig, source: str = "config") -> None:
    """Values in range, the default engine offered, and every offered engine's options valid."""
    from backend.engines import engine_names

    offered = config.offered()
    if config.engine not in offered:
        raise ConfigError(f"{source}: engine {config.engine!r} is not in offer {offered}")
    for name in offered:
        if name not in engine_names():
            raise ConfigError(f"{source}: engine {name!r} is not installed; known: {engine_names()}")
    for name, table in (("scheduler", config.scheduler), ("limits", config.limits)):
        for key in table.__struct_fields__:
            if getattr(table, key) <= 0:
                raise ConfigError(f"{source}: {name}.{key} must be positive")
    replaced = _cluster_engine_classes(config, source)
    for name in offered:
        check_engine_options(name, config.engine_options.get(name, {}), source, replaced.get(name))


def _cluster_engine_classes(config: BackendConfig, source: str) -> dict[str, type]:
    """``[cluster_options]`` checked (without importing Ray); the engine classes it puts in
    place of the registry's on the workers."""
    if config.cluster is None and not config.cluster_options:
        return {}
    import importlib

    from backend.cluster.config import ClusterConfig, ClusterConfigError

    try:
        cluster = ClusterConfig.from_dict(config.cluster_options)
    except ClusterConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    classes = {}
    for name, target in cluster.engine_classes.items():
        module, _, attr = target.partition(":")
        try:
            classes[name] = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(f"{source}: cluster_options.engine_classes.{name} = {target!r}: "
                              f"{exc}") from None
    return classes


def check_engine_options(name: str, options: dict, source: str = "config", cls: type | None = None) -> None:
    """``[engines.NAME]`` keys are parameters of the engine's constructor (``cls``, else the
    registry's class); models TOMLs load."""
    from backend.engines import engine_class

    cls = cls or engine_class(name)
    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        allowed = sorted(k for k in params if k not in ("self", "device"))
        for key in options:
            if key not in allowed:
                raise ConfigError(f"{source}: unknown key 'engines.{name}.{key}'; "
                                  f"known: {', '.join(allowed)}")
    if "models" in options:
        check_models_toml(options["models"], source, name)
    if "memory" in options:
        from backend.models.memory import MemoryConfig

        try:
            MemoryConfig.from_mapping(options["memory"])
        except ValueError as exc:
            raise ConfigError(f"{source}: engines.{name}.{exc}") from None


def check_models_toml(models: str, source: str, engine: str) -> None:
    """Read a models TOML through backend.models, turning its errors into a ConfigError."""
    from backend.engines.diffusion import models_path
    from backend.models.spec import load_specs

    try:
        path = models_path(models)
        load_specs(path)
    except (OSError, ValueError, TypeError, KeyError, msgspec.ValidationError) as exc:
        raise ConfigError(f"{source}: engines.{engine}.models = {models!r}: {exc}") from None
