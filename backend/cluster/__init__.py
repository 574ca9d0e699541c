"""Scale-out: the front door keeps the explorers, Ray actors run the engines.

``dreamjourney serve --cluster ADDRESS`` keeps everything that faces explorers in the
backend process (ZeroMQ ROUTER, CURVE, credits, heartbeats, sessions) and runs engine work on
:class:`~backend.cluster.worker.EngineWorker` actors, one per GPU (or per CPU slot). The
backend sees a :class:`~backend.cluster.engine.ClusterEngine`, an ordinary ``Engine`` whose
runs stream from a worker.

Importing this package does not import Ray; :func:`start_pool` does.
"""

from __future__ import annotations

from collections.abc import Callable

from backend.cluster.config import ClusterConfig, ClusterConfigError

__all__ = ["ClusterConfig", "ClusterConfigError", "start_pool"]


def start_pool(address: str, options: dict, device: str, default_engine: str,
               engine_options: dict, cpu_jobs: int = 1,
               report: Callable[[], str] | None = None):
    """Connect to (or start) Ray and start the workers; a ready WorkerPool.

    ``report`` gives the pool's periodic log line (the backend passes its whole status:
    workers, queues per explorer, jobs running, the numbers a Status message answers with).
    """
    from backend.cluster.pool import WorkerPool

    config = ClusterConfig.from_dict(options)
    return WorkerPool(address, config, device=device, default_engine=default_engine,
                      engine_options=engine_options, cpu_jobs=cpu_jobs, report=report)
