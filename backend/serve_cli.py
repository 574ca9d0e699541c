"""``dreamjourney serve``: run the backend until Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import tomllib
from dataclasses import fields
from importlib import resources
from pathlib import Path

log = logging.getLogger(__name__)


def load_config(path: str | None, overrides: dict):
    """BackendConfig from configs/backend.toml (or ``path``) with command-line overrides."""
    from backend.server import BackendConfig

    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SystemExit(f"error: cannot read config {path}: {exc}") from None
    else:
        data = tomllib.loads(resources.files("configs").joinpath("backend.toml").read_text())
    engine_options = data.pop("engines", {})
    known = {f.name for f in fields(BackendConfig)}
    unknown = set(data) - known
    if unknown:
        raise SystemExit(f"error: unknown config keys {sorted(unknown)}; known: {sorted(known)}")
    data.update({k: v for k, v in overrides.items() if v is not None})
    for key in ("sessions", "keys"):
        if data.get(key) is not None:
            data[key] = Path(data[key])
    return BackendConfig(engine_options=engine_options, **data)


def add_arguments(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the backend (engines behind a ZeroMQ endpoint)")
    p.add_argument("--bind", help="address to bind (default tcp://127.0.0.1:5555)")
    p.add_argument("--config", help="TOML file replacing configs/backend.toml")
    p.add_argument("--engine", help="default engine: classic or diffusion")
    p.add_argument("--device", help="cpu, cuda or cuda:N")
    p.add_argument("--sessions", help="folder for session folders (default ./sessions)")
    p.add_argument("--keys", help="CurveZMQ key folder made by `dreamjourney keys` (needed off loopback)")
    p.add_argument("--cpu-jobs", dest="cpu_jobs", type=int, help="jobs at once on the CPU")
    p.add_argument("--cluster", help="run engines on Ray: auto (a local instance), HOST:PORT or ray://HOST:10001")
    p.add_argument("--workers", type=int, help="Ray engine workers (default: one per GPU, else --cpu-jobs)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from backend.server import Backend

    overrides = {k: getattr(args, k)
                 for k in ("bind", "engine", "device", "sessions", "keys", "cpu_jobs", "cluster")}
    config = load_config(args.config, overrides)
    if args.workers is not None:
        config.cluster_options["workers"] = args.workers
    try:
        backend = Backend(config)
    except (OSError, PermissionError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    backend.start()
    print(f"dreamjourney backend listening on {backend.address}", flush=True)
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    log.info("shutting down")
    backend.stop()
    return 0
