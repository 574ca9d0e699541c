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
from functools import partial
from pathlib import Path

from explorer.inputs import InputError

logger = logging.getLogger(__name__)


def add_arguments(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explore", help="open a photo and fly into it (a window)")
    p.add_argument("image", nargs="?", help="the photo to walk into (JPEG/PNG/...)")
    _common(p)
    p.add_argument("--resume", metavar="SESSION",
                   help="reopen a saved session (see `dreamjourney sessions`) instead of a photo")
    p.add_argument("--depth", help="z-depth map for the photo: .npy (H x W float) or 16-bit PNG "
                                   "in millimetres, used when the engine has no depth model")
    p.add_argument("--fov", type=float, default=None,
                   help="horizontal field of view of the photo in degrees (default: backend's)")
    p.add_argument("--preset", help="sampler preset sent with transitions, one the backend "
                                    "offers, e.g. interactive or paper (default: settings "
                                    "paths.preset, else the backend's)")
    p.add_argument("--record", metavar="PATH",
                   help="where R saves the recording (default recordings/journey-TIME.mp4)")
    p.add_argument("--record-on-start", action="store_true", help="start recording at once")
    p.add_argument("--keep-hud", action="store_true",
                   help="burn the HUD into recordings and screenshots")
    p.add_argument("--path", metavar="FILE",
                   help="a camera path (nerfstudio camera-path JSON, as F5 saves) sent as the "
                        "first transition once the scene opens")
    p.set_defaults(func=run_explore)

    d = sub.add_parser("demo", help="a scripted journey, headless, recorded to MP4")
    d.add_argument("--image", help="photo to start from (default: a procedural valley with "
                                   "exact depth, so no depth model is needed)")
    d.add_argument("--out", default="journey.mp4", help="the MP4 to write (default journey.mp4)")
    d.add_argument("--path", metavar="FILE", help="the camera path the keyframe editor flies near "
                                                  "the end (default: configs/paths/demo.json)")
    _common(d)
    d.set_defaults(func=run_demo)

    s = sub.add_parser("sessions", help="list saved sessions (for explore --resume)")
    s.add_argument("--folder", help="sessions folder (default: settings session.folder)")
    s.add_argument("--config", help="TOML replacing configs/explorer.toml")
    s.set_defaults(func=run_sessions)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", metavar="ADDRESS",
                   help="a running backend, e.g. tcp://gpu-box:5555 (default: start "
                        "`dreamjourney serve` on loopback)")
    p.add_argument("--keys", help="CurveZMQ key folder from `dreamjourney keys` (off loopback)")
    p.add_argument("--engine", help="engine to use: classic or diffusion (default: backend's)")
    p.add_argument("--config", help="TOML replacing configs/explorer.toml")
    p.add_argument("--size", default=None, help="window size WIDTHxHEIGHT")


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _link(args: argparse.Namespace, settings, wait: bool = True):
    """The connection; with ``wait=False`` a local backend starts while the window opens."""
    from explorer.backend_process import BackendLink, Wanted

    serve = ["--sessions", settings.session.folder]
    if args.engine:
        serve += ["--engine", args.engine]
    preset_from = "--preset" if getattr(args, "preset", None) else "paths.preset"
    wanted = Wanted(args.engine, settings.paths.preset, preset_from)
    return BackendLink(settings, args.backend, args.keys, serve, wait=wait, wanted=wanted)


def _sigterm_as_interrupt() -> None:
    def _raise(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _raise)


def _check_explore(args: argparse.Namespace):
    """Every input of ``explore``, checked before a window or backend starts. A session to
    resume is looked up in the sessions folder when the backend is our own (a remote backend
    says itself whether it has it)."""
    from explorer.inputs import (
        check_fov,
        check_name,
        check_session_name,
        load_depth,
        load_photo,
        load_session,
        parse_size,
    )
    from explorer.settings import ExplorerSettings

    settings = ExplorerSettings.load(args.config)
    check_name("--engine", args.engine)
    check_name("--preset", args.preset)
    check_fov(args.fov)
    size = parse_size(args.size)
    if (args.image is None) == (args.resume is None):
        raise InputError("give a photo to explore, or --resume SESSION (not both)")
    photo = load_photo(args.image, settings.photo) if args.image else None
    depth = load_depth(args.depth, photo) if args.depth and photo else None
    saved = None
    if args.resume is not None:
        check_session_name(args.resume)
        if args.backend is None:
            saved = load_session(args.resume, Path(settings.session.folder))
    return settings, photo, depth, size, saved, _load_path(args.path)


def _load_path(path: str | None):
    """The ``--path`` camera path, checked before anything starts."""
    if path is None:
        return None
    from protocol.camera_path import CameraPath, CameraPathError

    try:
        return CameraPath.load(path)
    except CameraPathError as exc:
        raise InputError(f"--path {exc}") from None


def run_explore(args: argparse.Namespace) -> int:
    """Open a window on ``args.image`` (or a resumed session) and run until it closes."""
    from explorer.inputs import session_name, window_size
    from explorer.settings import SettingsError

    try:
        settings, photo, depth, size, saved, start_path = _check_explore(args)
    except (InputError, SettingsError) as exc:
        return _fail(str(exc))
    if args.preset:
        settings.paths.preset = args.preset
    if args.keep_hud:
        settings.record.keep_hud = True
    from explorer.window import configure_pyglet

    configure_pyglet(headless=False)
    from protocol.camera import intrinsics

    K = None
    if photo is not None and args.fov:
        K = intrinsics(photo.image.shape[1], photo.image.shape[0], args.fov)
    fit_on_open = size is None and settings.window.fit_photo
    shape = photo.original_size if photo else saved.original_size if saved else None
    if fit_on_open and shape is not None:
        size, fit_on_open = window_size(shape, settings.window.width), False
    try:
        from explorer.window import ExplorerWindow

        link = _link(args, settings, wait=False)
    except Exception as exc:  # noqa: BLE001 - one sentence to the person, not a traceback
        return _fail(str(exc))
    _sigterm_as_interrupt()
    win = None
    name = args.resume or session_name(photo.path)
    try:
        win = ExplorerWindow(link.client, settings, record_path=args.record, size=size,
                             caption=f"DreamJourney - {name}", link=link, start_path=start_path,
                             fit_on_open=fit_on_open, quit_if_unopened=True,
                             local_backend=args.backend is None)
        session = win.explorer.session
        if photo is not None or saved is not None:
            win.explorer.show_photo(photo.image if photo is not None else saved.photo)
        if photo is not None:
            logger.info("photo %s: %dx%d, sent at %dx%d", photo.path, *photo.original_size,
                        photo.image.shape[1], photo.image.shape[0])
            session.on_opened = partial(_keep_original, photo.path, Path(settings.session.folder))
            session.open_scene(photo.image, K=K, depth=depth, engine=args.engine, scene_id=name)
        else:
            session.open_scene(None, engine=args.engine, scene_id=name, resume=True)
        if args.record_on_start:
            win.explorer.start_recording()
        win.run()
    except KeyboardInterrupt:
        logger.info("interrupted: finalising")
    finally:
        if win is not None:
            win.close()
        link.close()
    if link.failed is not None:
        print(f"error: {link.failed}", file=sys.stderr)
        return 1
    ended = win.explorer.session if win is not None else None
    refused = ended.open_error if ended is not None else None
    if ended is not None and refused is not None and ended.scene is None:
        return _fail(f"the backend cannot open {name!r}: {refused.message}")
    return 0


def _keep_original(photo: Path, root: Path, scene) -> None:
    """Once a backend sharing this sessions folder has made the scene's session folder,
    copy the original photo into it (never into a folder the backend did not make)."""
    from explorer.inputs import keep_original

    folder = root / scene.session
    if (scene.resumed or not scene.session or not folder.is_dir() or folder.is_symlink()
            or (folder / f"original{photo.suffix.lower()}").exists()):
        return
    try:
        keep_original(photo, folder)
    except OSError as exc:
        logger.warning("could not keep the original photo in %s: %s", folder, exc)


def run_sessions(args: argparse.Namespace) -> int:
    """Print the saved sessions, newest first."""
    import datetime

    from explorer.inputs import list_sessions
    from explorer.settings import ExplorerSettings, SettingsError

    try:
        folder = Path(args.folder or ExplorerSettings.load(args.config).session.folder)
    except SettingsError as exc:
        return _fail(str(exc))
    sessions, skipped = list_sessions(folder)
    if not sessions:
        print(f"no sessions under {folder}")
    for s in sessions:
        when = datetime.datetime.fromtimestamp(s["modified"]).strftime("%Y-%m-%d %H:%M")
        print(f"{s['name']:<48} {when}  {s['clips']:>3} clips  {s['engine']}")
    if skipped:
        print(f"({skipped} folders there are not readable sessions: the backend moves them to "
              ".quarantine when it starts)")
    if sessions:
        print(f"resume one with: dreamjourney explore --resume NAME  (folder {folder})")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    """The scripted journey, headless on EGL, recorded to ``args.out``."""
    from explorer.settings import ExplorerSettings
    from explorer.window import configure_pyglet

    configure_pyglet(headless=True)
    from explorer.demo import DemoDriver, journey_script
    from explorer.inputs import check_name, load_photo, parse_size, session_name
    from explorer.procedural_scene import make_valley, river_flow
    from explorer.settings import SettingsError
    from explorer.window import ExplorerWindow

    try:
        settings = ExplorerSettings.load(args.config)
        check_name("--engine", args.engine)
        size = parse_size(args.size) or (640, 360)
        photo = load_photo(args.image, settings.photo) if args.image else None
        _load_path(args.path)  # checked now: a bad file is an error before anything starts
    except (InputError, SettingsError) as exc:
        return _fail(str(exc))
    settings.record.keep_hud = True  # the demo shows what a person sees, help and bars too
    if photo is not None:
        image, depth, K, river = photo.image, None, None, None
    else:
        scene = make_valley(*size)
        image, depth, K, river = scene.image, scene.depth, scene.K, river_flow()
    out = Path(args.out)
    out.unlink(missing_ok=True)
    try:
        conn = _link(args, settings)
    except Exception as exc:  # noqa: BLE001
        return _fail(str(exc))
    _sigterm_as_interrupt()
    win = None
    try:
        win = ExplorerWindow(conn.client, settings, visible=False, size=size, record_path=out)
        name = session_name(Path(args.image or "valley"))
        win.explorer.session.open_scene(image, K=K, depth=depth, engine=args.engine, scene_id=name)
        DemoDriver(win, journey_script(river, args.path), fps=settings.record.fps).run()
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
    print(f"wrote {stats.path}: {stats.duration_s:.1f} s, {stats.frames_written} pictures "
          f"({stats.frames_dropped} dropped while the encoder was behind)")
    return 0
