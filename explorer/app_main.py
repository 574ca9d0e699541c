"""``dreamjourney explore`` and ``dreamjourney demo``: argument parsing and the run loops.

``add_arguments(subparsers)`` adds both subcommands; ``run_explore(args)`` and
``run_demo(args)`` run them and return an exit code. Nothing here imports torch: the
explorer talks to a backend (a local ``dreamjourney serve`` child, or ``--backend``).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


def add_arguments(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explore", help="open a photo and fly into it (a window)")
    p.add_argument("image", help="the photo to walk into (JPEG/PNG)")
    _common(p)
    p.add_argument("--depth", help="z-depth map for the photo: .npy (H x W float) or 16-bit PNG "
                                   "in millimetres, used when the engine has no depth model")
    p.add_argument("--fov", type=float, default=None,
                   help="horizontal field of view of the photo in degrees (default: backend's)")
    p.add_argument("--record", metavar="PATH",
                   help="where R saves the recording (default recordings/journey-TIME.mp4)")
    p.add_argument("--record-on-start", action="store_true", help="start recording at once")
    p.set_defaults(func=run_explore)

    d = sub.add_parser("demo", help="a scripted journey, headless, recorded to MP4")
    d.add_argument("--image", help="photo to start from (default: a procedural valley with "
                                   "exact depth, so no depth model is needed)")
    d.add_argument("--out", default="journey.mp4", help="the MP4 to write (default journey.mp4)")
    _common(d)
    d.set_defaults(func=run_demo)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", metavar="ADDRESS",
                   help="a running backend, e.g. tcp://gpu-box:5555 (default: start "
                        "`dreamjourney serve` on loopback)")
    p.add_argument("--keys", help="CurveZMQ key folder from `dreamjourney keys` (off loopback)")
    p.add_argument("--engine", help="engine to use: classic or diffusion (default: backend's)")
    p.add_argument("--config", help="TOML replacing configs/explorer.toml")
    p.add_argument("--size", default=None, help="window size WIDTHxHEIGHT")


def _size(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"error: --size must look like 1280x720, got {text!r}") from None
    return w, h


def load_image(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def load_depth(path: str, shape: tuple[int, int]) -> np.ndarray:
    """A z-depth map from .npy (float) or a 16-bit PNG in millimetres; must match ``shape``."""
    if path.endswith(".npy"):
        depth = np.load(path).astype(np.float32)
    else:
        from PIL import Image

        with Image.open(path) as im:
            depth = np.asarray(im).astype(np.float32) / 1000.0
    if depth.shape != shape:
        raise SystemExit(f"error: depth map is {depth.shape[::-1]}, the photo is {shape[::-1]}")
    return depth


class _Connection:
    """The client plus, when we started it, the local backend process."""

    def __init__(self, args: argparse.Namespace, settings):
        from explorer.backend_process import connect, start_local_backend

        self.local = None
        address = args.backend
        if address is None:
            extra = ["--engine", args.engine] if args.engine else []
            self.local = start_local_backend(extra)
            address = self.local.address
        try:
            self.client = connect(address, settings, args.keys)
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
        if self.local is not None:
            self.local.stop()


def _sigterm_as_interrupt() -> None:
    def _raise(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _raise)


def run_explore(args: argparse.Namespace) -> int:
    """Open a window on ``args.image`` and run until it closes (or Ctrl-C)."""
    from explorer.settings import ExplorerSettings
    from explorer.window import configure_pyglet

    configure_pyglet(headless=False)
    from protocol.camera import intrinsics

    settings = ExplorerSettings.load(args.config)
    image = load_image(args.image)
    depth = load_depth(args.depth, image.shape[:2]) if args.depth else None
    K = intrinsics(image.shape[1], image.shape[0], args.fov) if args.fov else None
    try:
        from explorer.window import ExplorerWindow

        conn = _Connection(args, settings)
    except Exception as exc:  # noqa: BLE001 - one sentence to the person, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _sigterm_as_interrupt()
    win = None
    try:
        win = ExplorerWindow(conn.client, settings, record_path=args.record,
                             size=_size(args.size), caption=f"DreamJourney - {args.image}")
        win.explorer.session.open_scene(image, K=K, depth=depth, engine=args.engine)
        if args.record_on_start:
            win.explorer.start_recording()
        win.run()
    except KeyboardInterrupt:
        logger.info("interrupted: finalising")
    finally:
        if win is not None:
            win.close()
        conn.close()
    return 0


def run_demo(args: argparse.Namespace) -> int:
    """The scripted journey, headless on EGL, recorded to ``args.out``."""
    from explorer.settings import ExplorerSettings
    from explorer.window import configure_pyglet

    configure_pyglet(headless=True)
    from explorer.demo import DemoDriver, journey_script
    from explorer.procedural_scene import make_valley, river_flow
    from explorer.window import ExplorerWindow

    settings = ExplorerSettings.load(args.config)
    size = _size(args.size) or (640, 360)
    if args.image:
        image, depth, K, river = load_image(args.image), None, None, None
    else:
        scene = make_valley(*size)
        image, depth, K, river = scene.image, scene.depth, scene.K, river_flow()
    out = Path(args.out)
    out.unlink(missing_ok=True)
    try:
        conn = _Connection(args, settings)
    except Exception as exc:  # noqa: BLE001
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _sigterm_as_interrupt()
    win = None
    try:
        win = ExplorerWindow(conn.client, settings, visible=False, size=size, record_path=out)
        win.explorer.session.open_scene(image, K=K, depth=depth, engine=args.engine)
        DemoDriver(win, journey_script(river), fps=settings.record.fps).run()
    except KeyboardInterrupt:
        logger.info("interrupted: finalising %s", out)
    except (TimeoutError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if win is not None:
            win.close()
        conn.close()
    stats = win.explorer.recordings[-1] if win and win.explorer.recordings else None
    if stats is None:
        print("error: nothing was recorded", file=sys.stderr)
        return 1
    seconds = stats.frames_written / stats.fps
    print(f"wrote {stats.path}: {stats.frames_written} frames, {seconds:.1f} s at "
          f"{stats.fps:.0f} fps ({stats.frames_dropped} dropped)")
    return 0
