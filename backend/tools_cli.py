"""``dreamjourney doctor`` and ``dreamjourney models fetch``: what this machine can run, and
the weights a preset needs. Arguments only here; the bodies (which import torch and the hub
client) load when a command runs, so the explorer's parser stays light."""

from __future__ import annotations

import argparse
import sys


def add_arguments(sub: argparse._SubParsersAction) -> None:
    doctor = sub.add_parser("doctor", help="GPU, memory profiles, cached weights: what runs here")
    doctor.add_argument("--presets", default="interactive,paper",
                        help="comma-separated presets (configs/models names) or 'all'")
    doctor.set_defaults(func=_doctor)
    models = sub.add_parser("models", help="the weights of the diffusion engine's presets")
    verbs = models.add_subparsers(dest="verb", metavar="VERB", required=True)
    fetch = verbs.add_parser("fetch", help="download what presets need into the Hugging Face cache")
    fetch.add_argument("presets", nargs="*", default=["interactive"], metavar="PRESET",
                       help="configs/models names (default: interactive)")
    fetch.set_defaults(func=_fetch)


def _doctor(args: argparse.Namespace) -> int:
    from backend.doctor import run

    return run(args)


def _fetch(args: argparse.Namespace) -> int:
    from backend.models.fetch import FetchError, downloads, fetch, is_cached, preset_specs

    try:
        wanted = {d.label: d for name in args.presets for d in downloads(preset_specs(name))}
    except (FetchError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for i, download in enumerate(wanted.values(), 1):
        state = "cached, checking" if is_cached(download) else "fetching"
        print(f"[{i}/{len(wanted)}] {download.role}: {state} {download.label}", flush=True)
        try:
            path = fetch(download)
        except FetchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"[{i}/{len(wanted)}] {download.role}: {path}", flush=True)
    print(f"done: {', '.join(args.presets)} ready ({len(wanted)} downloads checked)")
    return 0
