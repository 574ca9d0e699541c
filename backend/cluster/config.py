"""Settings of the Ray workers (``[cluster_options]`` in the backend's TOML)."""

from __future__ import annotations

import msgspec


class ClusterConfigError(ValueError):
    """A cluster setting is wrong; the message says which."""


class ClusterConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    workers: int = 0
    """EngineWorker actors to start; 0 = one per GPU in the cluster, else ``cpu_jobs``."""
    gpus_per_worker: float = 1.0
    """GPUs each worker holds when the cluster has GPUs."""
    cpus_per_worker: float = 1.0
    """CPUs each worker holds (Ray's logical CPUs) when it has no GPU."""
    frames_ahead: int = 2
    """Events a worker may run ahead of the front door (the streaming generator's backpressure)."""
    max_restarts: int = 3
    """Times Ray restarts a worker that died."""
    requeue_tries: int = 2
    """Times a job whose worker died before its first event is re-queued."""
    busy_deadline_s: float = 900.0
    """A job running longer is reported and abandoned (its worker restarted)."""
    status_log_s: float = 60.0
    """Seconds between status lines in the front door's log (0 = never)."""
    scenes_per_worker: int = 4
    """Scenes a worker keeps resident (least recently used dropped first)."""
    ready_timeout_s: float = 300.0
    """How long ``serve`` waits for every worker to load its models."""
    engine_classes: dict[str, str] = {}
    """Engine name -> ``module:Class`` replacing the registry's class on the workers."""

    @classmethod
    def from_dict(cls, data: dict) -> ClusterConfig:
        try:
            config = msgspec.convert(data, cls)
        except msgspec.ValidationError as exc:
            raise ClusterConfigError(f"cluster_options: {exc}") from None
        for name in ("frames_ahead", "scenes_per_worker"):
            if getattr(config, name) < 1:
                raise ClusterConfigError(f"cluster_options.{name} must be at least 1")
        if config.workers < 0 or config.max_restarts < 0 or config.requeue_tries < 0:
            raise ClusterConfigError("cluster_options: workers, max_restarts and requeue_tries "
                                     "must not be negative")
        if config.busy_deadline_s <= 0:
            raise ClusterConfigError("cluster_options.busy_deadline_s must be positive")
        return config
