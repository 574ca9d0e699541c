"""The backend's one typed config (configs/backend.toml), loaded and checked with msgspec.

Unknown keys are errors that name the key and the file. Every key carries its bounds in its
type (``Annotated[..., Meta(...)]``), so a value out of range (NaN and inf included) is one
line naming the key and the file, whether it came from the file, the command line or a
``BackendConfig`` built in code (:func:`check_config` converts it again). Every
``[engines.NAME]`` table is checked against that engine's constructor (numbers against
``ENGINE_OPTION_BOUNDS``), a diffusion engine's models TOML is read through backend.models,
and a CUDA device must exist, all at start, so a typo never waits for the first request.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Set
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from configs import model_names
from protocol.admission import AdmissionCaps
from protocol.endpoint_caps import DEFAULT_CAPS, PEER_TIMEOUT_S, EndpointCaps
from protocol.limits import Limits


class ConfigError(ValueError):
    """The config cannot be used; the message names the file and the key."""


# Bounded numbers are written out as Annotated[kind, Meta(ge=lo, le=hi)] (a type checker
# reads them; NaN and inf fail every bound).
Seconds = Annotated[float, Meta(gt=0.0, le=86400.0)]
"""A duration in (0, 1 day]: every timeout is finite and positive."""
Rate = Annotated[float, Meta(gt=0.0, le=1e6)]
"""Per second, in (0, 1e6]."""


class SchedulerConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """How jobs share the machine: round-robin across clients, fair in time, bounded."""

    job_slots: Annotated[int, Meta(ge=1, le=64)] = 1
    """Jobs (transitions, dynamics) running at once. 1 on a single GPU; a pool of remote
    workers sets it to the number of workers."""
    open_slots: Annotated[int, Meta(ge=1, le=64)] = 1
    """Scenes being opened (image decoding, depth, lifting) at once."""
    max_jobs_per_client: Annotated[int, Meta(ge=1, le=1024)] = 4
    """Jobs of one client queued or running; more are refused with ``busy``."""
    max_scenes_per_client: Annotated[int, Meta(ge=1, le=1024)] = 16
    """Scenes one client has open (or opening) at once."""
    credit_timeout_s: Seconds = 30.0
    """A job granted no frame credit for this long fails with ``credit_timeout``."""
    slice_s: Annotated[float, Meta(ge=0.01, le=3600.0)] = 1.0
    """A running job whose slot another client's job waits for hands the slot over after
    this long (at its next frame or step) and queues again; a job waiting for frame credit
    hands it over at once. A job is fresh for its first ``slice_s`` on a slot: one past it
    waits (at its next frame or step) while another client's fresh job runs or is due,
    at most ``slice_s`` at a time. Not with ``cluster`` (a remote job keeps its worker)."""
    max_job_s: Seconds = 1800.0
    """A job (queued time excluded) that runs longer fails with ``time_limit``."""
    job_threads: Annotated[int, Meta(ge=0, le=256)] = 0
    """Threads one job's numeric code may use (BLAS, OpenMP, torch, OpenCV, the CPU
    splatter), set once for the whole ``dreamjourney serve`` process; 0: the machine's cores
    shared among the job slots (at least 1), so jobs running side by side do not
    oversubscribe the cores (a BLAS pool's threads spin on a busy core)."""


class ConnectionsConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    hello_timeout_s: Annotated[float, Meta(ge=0.1, le=600.0)] = DEFAULT_CAPS.hello_timeout_s
    """Connections that have not said Hello by then are shut."""
    max_peers: Annotated[int, Meta(ge=1, le=4096)] = DEFAULT_CAPS.max_peers
    """Connected clients at once; when all are taken, a Hello evicts the longest-idle
    client without work (a newcomer only clients that own no scenes)."""
    max_connections_per_client: Annotated[int, Meta(ge=1, le=64)] = DEFAULT_CAPS.max_connections_per_client
    max_queued_per_peer: Annotated[int, Meta(ge=1, le=4096)] = DEFAULT_CAPS.max_queued_per_peer
    """Requests of one client received but not yet dispatched; more get ``busy``."""
    max_messages_per_s: Annotated[float, Meta(ge=10.0, le=1e6)] = DEFAULT_CAPS.max_messages_per_s
    """Messages one connection may send per second; over it, it is disconnected."""
    max_refusals_per_s: Rate = DEFAULT_CAPS.max_refusals_per_s
    """Messages of one connection answered with an Error per second (20 at once); over it,
    it is disconnected."""
    new_clients_per_s: Rate = 10.0
    """Hellos per second from clients not seen before, all together (20 at once); more wait."""
    reconnects_per_client_per_s: Rate = 1.0
    """Hellos per second from one known client (4 at once); more wait."""
    max_waiting_hellos: Annotated[int, Meta(ge=1, le=65536)] = 64
    """Hellos waiting for those rates; beyond it a Hello gets ``busy``."""


class LimitsConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Bounds that keep memory and time set by this file, not by requests."""

    max_message_mb: Annotated[float, Meta(ge=0.0625, le=1024.0)] = 48.0
    """Largest message (all frames together), also ZeroMQ's per-frame MAXMSGSIZE."""
    max_image_pixels: Annotated[int, Meta(ge=64, le=8192 * 8192)] = 2048 * 2048
    """Largest photo (width x height), checked from its header before decoding."""
    max_frames: Annotated[int, Meta(ge=1, le=1024)] = 240
    """Most frames in one clip (transition poses or dynamics num_frames)."""
    max_job_pixel_frames: Annotated[int, Meta(ge=4096, le=1 << 40)] = 1024 * 1024 * 240
    """Most work one job may ask: view width x height x frames (answered ``too_large``)."""


class QuotasConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What one client identity, and everyone together, may keep; a refusal names the key."""

    scenes_per_client: Annotated[int, Meta(ge=1, le=1 << 20)] = 64
    """Saved sessions of one identity."""
    scenes_total: Annotated[int, Meta(ge=1, le=1 << 24)] = 4096
    disk_mb_per_client: Annotated[float, Meta(ge=0.01, le=1e9)] = 4096.0
    """Bytes on disk of one identity's sessions (MB); a job that would pass it fails with
    ``quota`` and leaves nothing behind."""
    disk_mb_total: Annotated[float, Meta(ge=0.01, le=1e9)] = 65536.0
    resident_scenes_per_client: Annotated[int, Meta(ge=1, le=1024)] = 4
    """Scenes of one identity held in memory; beyond it the least recently used idle one is
    unloaded (it stays saved, and is loaded again by its next request)."""
    resident_scenes_total: Annotated[int, Meta(ge=1, le=4096)] = 16
    min_free_disk_mb: Annotated[float, Meta(ge=0.0, le=1e9)] = 512.0
    """New scenes and clips are refused while the disk has less free space than this."""


class BackendConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Settings of ``dreamjourney serve`` (defaults in configs/backend.toml)."""

    bind: Annotated[str, Meta(max_length=256)] = "tcp://127.0.0.1:5555"
    sessions: Annotated[str, Meta(max_length=4096)] = "sessions"
    """Root of the session folders: a new or empty folder, or one this backend made (see
    backend.session_root); never "", ".", "/" or the home folder."""
    engine: Annotated[str, Meta(max_length=64)] = "classic"
    """Default engine for requests that name none."""
    offer: Annotated[list[str], Meta(max_length=16)] = []
    """Engines clients may ask for; empty offers only ``engine``."""
    device: Annotated[str, Meta(pattern=r"^(cpu|cuda|cuda:[0-9]{1,2})$")] = "cpu"
    """``cpu``, ``cuda`` or ``cuda:N`` (which must exist)."""
    cpu_jobs: Annotated[int, Meta(ge=1, le=64)] | None = None
    """Deprecated alias of ``scheduler.job_slots``."""
    heartbeat_s: Annotated[float, Meta(ge=0.05, le=60.0)] = 1.0
    peer_timeout_s: Annotated[float, Meta(ge=0.1, le=3600.0)] = PEER_TIMEOUT_S
    """A client silent this long is gone; longer than ``heartbeat_s``."""
    keys: Annotated[str, Meta(max_length=4096)] | None = None
    jpeg_quality: Annotated[int, Meta(ge=1, le=100)] = 95
    chunk_points: Annotated[int, Meta(ge=1, le=1 << 20)] = 65536
    """Points per PointsDelta message."""
    frames_ahead: Annotated[int, Meta(ge=1, le=64)] = 2
    """Frames a job may queue beyond the client's credit before it waits."""
    save_clips: bool = True
    io_process: bool = True
    """Run the network endpoint (sockets, handshakes, heartbeats, credits) in a process of
    its own, so engines holding the GIL never delay its heartbeats; false runs it on a
    thread of this process."""
    status_shows: Literal["own", "all"] = "own"
    """What a Status answer tells a client of others' jobs: ``own`` names only the asker's
    (others are ``other-N``, their scenes hidden); ``all`` names everyone (a trusted team)."""
    scheduler: SchedulerConfig = msgspec.field(default_factory=SchedulerConfig)
    connections: ConnectionsConfig = msgspec.field(default_factory=ConnectionsConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    quotas: QuotasConfig = msgspec.field(default_factory=QuotasConfig)
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

    def offered_presets(self) -> list[str]:
        """The sampler presets a transition may name: configs/models and the diffusion
        engine's ``presets`` table; none when the diffusion engine is not offered."""
        if "diffusion" not in self.offered():
            return []
        own = self.engine_options.get("diffusion", {}).get("presets") or {}
        return sorted(set(model_names()) | set(own))

    def job_slots(self) -> int:
        return self.cpu_jobs if self.cpu_jobs is not None else self.scheduler.job_slots

    def protocol_limits(self) -> Limits:
        return Limits(max_message_bytes=int(self.limits.max_message_mb * 1024 * 1024),
                      max_image_pixels=self.limits.max_image_pixels,
                      max_trajectory_len=self.limits.max_frames)

    def endpoint_caps(self) -> EndpointCaps:
        c = self.connections
        return EndpointCaps(hello_timeout_s=c.hello_timeout_s, max_peers=c.max_peers,
                            max_connections_per_client=c.max_connections_per_client,
                            max_queued_per_peer=c.max_queued_per_peer,
                            max_messages_per_s=c.max_messages_per_s,
                            max_refusals_per_s=c.max_refusals_per_s,
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
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if overrides:
        config = msgspec.structs.replace(config, **overrides)
    check_config(config, source, given=set(overrides))
    return config


def _where(exc: msgspec.ValidationError, given: Set[str] = frozenset()) -> str:
    """One line naming the key (and the command line when it came from there)."""
    text = str(exc)
    what, _, at = text.partition(" - at ")
    key = at.strip("`$").lstrip(".").split("[")[0]
    if what.startswith("Object contains unknown field"):
        name = what.split("`")[1]
        return f"unknown key {(key + '.' if key else '') + name!r}"
    if what.startswith("Object missing required field"):
        name = what.split("`")[1]
        return f"{(key + '.' if key else '') + name}: missing"
    origin = " (from the command line)" if key.split(".")[0] in given else ""
    return f"{key or 'config'}: {what[0].lower() + what[1:]}{origin}"


def check_config(config: BackendConfig, source: str = "config", given: Set[str] = frozenset()) -> None:
    """Every key in its bounds (the struct converted again, so values set in code or on the
    command line are checked like the file's), keys that depend on each other, the default
    engine offered, the device present, and every offered engine's options valid. ``given``
    names the top-level keys set on the command line."""
    try:
        msgspec.convert(msgspec.to_builtins(config, enc_hook=str), BackendConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {_where(exc, given)}") from None
    from backend.session_root import RootRefused, check_root

    try:
        check_root(config.sessions)
    except RootRefused as exc:
        origin = " (from the command line)" if "sessions" in given else ""
        raise ConfigError(f"{source}: sessions{origin}: {exc}") from None
    if config.peer_timeout_s <= config.heartbeat_s:
        raise ConfigError(f"{source}: peer_timeout_s ({config.peer_timeout_s:g}) must be longer "
                          f"than heartbeat_s ({config.heartbeat_s:g})")
    from backend.engines import engine_names  # torch: after the cheap checks

    offered = config.offered()
    if config.engine not in offered:
        raise ConfigError(f"{source}: engine {config.engine!r} is not in offer {offered}")
    for name in offered:
        if name not in engine_names():
            raise ConfigError(f"{source}: engine {name!r} is not installed; known: {engine_names()}")
    _check_device(config.device, source)
    replaced = _cluster_engine_classes(config, source)
    for name in offered:
        check_engine_options(name, config.engine_options.get(name, {}), source, replaced.get(name))


def _check_device(device: str, source: str) -> None:
    if not device.startswith("cuda"):
        return
    import torch

    index = int(device.partition(":")[2] or 0)
    if not torch.cuda.is_available() or index >= torch.cuda.device_count():
        raise ConfigError(f"{source}: device {device!r}: this machine has "
                          f"{torch.cuda.device_count()} CUDA devices")


ENGINE_OPTION_BOUNDS: dict[str, dict[str, tuple[float, float]]] = {
    "classic": {"inpaint_radius": (0, 64), "layers": (1, 8), "fov_x_deg": (1, 170),
                "capacity": (1000, 100_000_000), "frames_per_batch": (1, 64),
                "keyframe_every": (1, 1024), "gap_px": (0, 64)},
    "diffusion": {"inpaint_steps": (1, 1000), "inpaint_guidance": (0, 100),
                  "min_hole_fraction": (0, 1)},
}
"""[lo, hi] of the numeric ``[engines.NAME]`` options; any other number must be finite."""


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
    bounds = ENGINE_OPTION_BOUNDS.get(name, {})
    for key, value in options.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        lo, hi = bounds.get(key, (-math.inf, math.inf))
        if not (math.isfinite(value) and lo <= value <= hi):
            raise ConfigError(f"{source}: engines.{name}.{key} = {value!r} is outside "
                              f"[{lo:g}, {hi:g}]")
    params = inspect.signature(cls).parameters
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
