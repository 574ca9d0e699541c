"""The ``dreamjourney`` command: ``keys``, ``serve``, ``explore``, ``demo``, ``doctor``, ``models``,
``export``.

Each subcommand imports its heavy parts only when it runs, so ``dreamjourney keys`` and the
explorer never load torch.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path


def _cmd_keys(args: argparse.Namespace) -> int:
    from protocol.transport import make_keys

    folder = Path(args.folder)
    if (folder / "server.key_secret").exists() and not args.force:
        print(f"error: {folder} already holds keys; pass --force to replace them", file=sys.stderr)
        return 2
    paths = make_keys(folder, client_name=args.client)
    print(f"server secret key : {paths['server_secret']}  (keep on the backend)")
    print(f"server public key : {paths['server_public']}  (copy to each explorer)")
    print(f"client secret key : {paths['client_secret']}  (keep on the explorer)")
    print(f"authorised clients: {paths['authorized_dir']}/")
    print(f"backend : dreamjourney serve --bind tcp://0.0.0.0:5555 --keys {folder}")
    print(f"explorer: dreamjourney explore IMAGE --backend tcp://HOST:5555 --keys {folder}")
    return 0


def _add_keys(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keys", help="make CurveZMQ key files for a backend off loopback")
    p.add_argument("folder", help="folder to write the key files into")
    p.add_argument("--client", default="client", help="name of the client key pair (default: client)")
    p.add_argument("--force", action="store_true", help="replace keys already in the folder")
    p.set_defaults(func=_cmd_keys)


def _optional_subcommands() -> list[Callable[[argparse._SubParsersAction], None]]:
    """Subcommands of the other packages, each added only if its module imports cleanly."""
    adders = []
    for module, attr in (
        ("backend.serve_cli", "add_arguments"),
        ("explorer.app_main", "add_arguments"),
        ("backend.status_cli", "add_arguments"),
        ("backend.tools_cli", "add_arguments"),
        ("backend.export.cli", "add_arguments"),
    ):
        try:
            mod = __import__(module, fromlist=[attr])
        except ImportError as exc:
            if exc.name == module:
                continue  # not part of this install yet
            raise
        adders.append(getattr(mod, attr))
    return adders


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dreamjourney")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dreamjourney",
        description="Walk into a photo: a live point cloud explorer with a generative backend.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_keys(sub)
    for add in _optional_subcommands():
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
