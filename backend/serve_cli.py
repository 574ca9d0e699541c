"""``dreamjourney serve``: run the backend until Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

log = logging.getLogger(__name__)


def add_arguments(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the backend (engines behind a ZeroMQ endpoint)")
    p.add_argument("--bind", help="address to bind (default tcp://127.0.0.1:5555)")
    p.add_argument("--config", help="TOML file replacing configs/backend.toml")
    p.add_argument("--engine", help="the engine to serve (offers only it unless --offer is given)")
    p.add_argument("--offer", help="comma-separated engines clients may ask for, e.g. classic,diffusion")
    p.add_argument("--device", help="cpu, cuda or cuda:N")
    p.add_argument("--sessions", help="folder for session folders (default ./sessions)")
    p.add_argument("--keys", help="CurveZMQ key folder made by `dreamjourney keys` (needed off loopback)")
    p.add_argument("--job-slots", "--cpu-jobs", dest="job_slots", type=int,
                   help="jobs running at once (scheduler.job_slots)")
    p.add_argument("--cluster", help="run engines on Ray: auto (a local instance), HOST:PORT or ray://HOST:10001")
    p.add_argument("--workers", type=int, help="Ray engine workers (default: one per GPU, else --job-slots)")
    p.add_argument("--parent-pid", type=int,
                   help="shut down when this process ends (the explorer that started this backend)")
    p.set_defaults(func=run)


def _overrides(args: argparse.Namespace, config) -> dict:
    import msgspec

    out = {k: getattr(args, k) for k in ("bind", "engine", "device", "sessions", "keys", "cluster")}
    if args.offer:
        out["offer"] = [name.strip() for name in args.offer.split(",") if name.strip()]
    elif args.engine:
        out["offer"] = [args.engine]  # the operator named one engine: offer only it
    if args.job_slots is not None:
        out["scheduler"] = msgspec.structs.replace(config.scheduler, job_slots=args.job_slots)
    if args.workers is not None:
        out["cluster_options"] = {**config.cluster_options, "workers": args.workers}
    return out


def run(args: argparse.Namespace) -> int:
    from backend.config import ConfigError, load_config

    try:
        config = load_config(args.config)
        config = load_config(args.config, _overrides(args, config))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from backend.runtime import job_threads, limit_job_threads, return_large_blocks
    from backend.server import Backend

    limit_job_threads(job_threads(config.scheduler.job_threads, config.job_slots()))
    return_large_blocks()
    try:
        backend = Backend(config)
    except (OSError, ValueError, RuntimeError) as exc:  # RuntimeError: Ray missing or not started
        print(f"error: {exc}", file=sys.stderr)
        return 2
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    backend.start()
    print(f"dreamjourney backend listening on {backend.address}", flush=True)
    code = 0
    try:
        while not done.wait(0.5):
            if args.parent_pid and not _alive(args.parent_pid):
                log.warning("parent process %d ended: shutting down", args.parent_pid)
                break
            if not backend.endpoint.alive():
                log.error("the network endpoint stopped: shutting down")
                code = 1
                break
    except KeyboardInterrupt:
        pass
    log.info("shutting down")
    backend.stop()
    return code


def _alive(pid: int) -> bool:
    """True while ``pid`` is our parent (a dead parent's orphans are re-parented)."""
    return os.getppid() == pid
