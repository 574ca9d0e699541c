"""``dreamjourney export SESSION --as splats|points|path|video [--out FILE]``.

``add_arguments`` adds the subcommand (argparse only: building the parser imports nothing
else); ``run_export`` does the work, printing progress to stderr. Bad input (no such
session, nothing to export, an unwritable output) is one ``error:`` line and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

_KINDS = ("splats", "points", "path", "video")


def add_arguments(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a session's world as splats, points, a camera path or a video")
    p.add_argument("session", help="a session folder, or a session's name (see `dreamjourney sessions`)")
    p.add_argument("--as", dest="kind", required=True, choices=_KINDS,
                   help="splats: 3D Gaussian splat PLY; points: coloured point PLY; path: nerfstudio "
                        "camera-path JSON; video: the clips joined into one MP4")
    p.add_argument("--out", help="file to write (default: NAME-splats.ply, NAME-points.ply, "
                                 "NAME-path.json or NAME.mp4 in the current folder)")
    p.add_argument("--folder", help="sessions folder for a name (default: settings session.folder)")
    p.add_argument("--sh-degree", type=int, choices=(0, 3), default=0,
                   help="splats: spherical-harmonic degree written (0: no f_rest, the default; 3: "
                        "45 zero f_rest, what the reference 3DGS loader expects at its default)")
    p.set_defaults(func=run_export)


class ProgressLine:
    """``what 42% (n/total)`` on stderr: redrawn in place on a terminal, else every 10%."""

    def __init__(self, what: str, stream=None):
        self.what = what
        self.stream = stream = stream or sys.stderr
        self.tty = stream.isatty()
        self._shown = -1

    def __call__(self, done: int, total: int) -> None:
        pct = int(100 * done / max(total, 1))
        step = pct if self.tty else pct // 10 * 10
        if step == self._shown:
            return
        self._shown = step
        end = "\r" if self.tty and done < total else "\n"
        print(f"{self.what} {pct:3d}% ({done}/{total})", end=end, file=self.stream, flush=True)


def run_export(args: argparse.Namespace) -> int:
    from backend.export.session_export import SUFFIXES, export_session
    from backend.export.session_source import ExportError, open_session
    from protocol.files.splats import SplatSettings

    try:
        folder = args.folder or _default_folder()
        session = open_session(args.session, folder)
        out = Path(args.out) if args.out else Path(f"{session.scene_id}{SUFFIXES[args.kind]}")
        result = export_session(session, args.kind, out, ProgressLine(f"exporting {args.kind}"),
                                SplatSettings(sh_degree=args.sh_degree))
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write {exc.filename or args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    unit = {"splats": "Gaussians", "points": "points", "path": "cameras", "video": "frames"}[args.kind]
    print(f"wrote {result.path}: {result.count} {unit} in {result.seconds:.1f} s")
    return 0


def _default_folder() -> str:
    from explorer.settings import ExplorerSettings

    return ExplorerSettings.load().session.folder
