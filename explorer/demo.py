"""The scripted demo: the real app, headless, driven by real input events, recorded.

A script is a list of steps; each step posts pyglet input events to the window (the same
handlers a person's keyboard and mouse reach) or waits for something the app shows. The app
clock advances by a fixed step per frame, so the recording has a constant rate whatever the
machine's speed; the loop also never runs ahead of the wall clock, so waiting for the
backend looks as it would to a person.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from protocol.camera import project

logger = logging.getLogger(__name__)

LEFT, RIGHT = 1, 4  # pyglet.window.mouse buttons


@dataclass
class Tap:
    key: str


@dataclass
class Hold:
    key: str
    seconds: float


@dataclass
class Wait:
    seconds: float


@dataclass
class WaitFor:
    condition: str
    """``scene``, ``clip_done``, ``looping`` or ``preview_done`` (see :class:`DemoDriver`)."""
    timeout_s: float = 600.0
    """Seconds of wall clock before the demo gives up (a clip on a busy CPU takes minutes)."""


@dataclass
class LoadPath:
    path: str | None = None
    """A camera-path file for the keyframe editor (None: ``configs/paths/demo.json``)."""


@dataclass
class Drag:
    button: int
    start: tuple[float, float] | None
    """Fractions of the window's width and height (y down); None with ``world`` set."""
    end: tuple[float, float] | None
    seconds: float = 0.5
    world: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None
    """World points projected through the camera when the drag begins."""


Step = Tap | Hold | Wait | WaitFor | Drag | LoadPath


def journey_script(river: tuple | None = None, path: str | None = None) -> list[Step]:
    """Fly back, commit, watch; animate the river; turn, fly on, commit; back home, the
    keyframe editor loads a path (``path``, else the packaged ``configs/paths/demo.json``),
    shows and sends it; stop."""
    arrow = (Drag(LEFT, None, None, 0.6, world=river) if river is not None
             else Drag(LEFT, (0.45, 0.8), (0.55, 0.8), 0.6))
    return [
        WaitFor("scene"),
        Tap("R"),
        Wait(0.4),
        Tap("F1"), Wait(1.2), Tap("F1"),
        Hold("S", 1.2),
        Tap("ENTER"),
        WaitFor("clip_done"),
        arrow,
        Tap("SPACE"),
        WaitFor("looping"),
        Wait(3.0),
        Tap("SPACE"),
        Drag(RIGHT, (0.5, 0.5), (0.62, 0.5), 0.8),
        Hold("W", 1.0),
        Tap("ENTER"),
        WaitFor("clip_done"),
        Tap("HOME"),
        LoadPath(path),
        Wait(1.0),  # the loaded path is drawn in the view
        Tap("ENTER"),
        WaitFor("clip_done"),
        Wait(0.6),
        Tap("R"),
    ]


class DemoDriver:
    """Runs a script against an :class:`~explorer.window.ExplorerWindow`."""

    def __init__(self, win, script: list[Step], fps: float = 30.0, realtime: bool = True,
                 idle_tick_s: float = 0.2):
        from pyglet.window import key

        self.win = win
        self.explorer = win.explorer
        self.script = script
        self.dt = 1.0 / fps
        self.realtime = realtime
        self.idle_tick_s = idle_tick_s
        """While only waiting for the backend, each frame takes at least this long in wall
        time, leaving the CPU to a local backend; the video shows the wait as a time-lapse."""
        self.key = key
        self.frames = 0

    # --- events --------------------------------------------------------------------------

    def _post(self, event: str, *args) -> None:
        self.win.window.dispatch_event(event, *args)

    def _symbol(self, name: str) -> int:
        return getattr(self.key, name)

    def _to_pyglet(self, fx: float, fy: float) -> tuple[int, int]:
        """Window fractions (y down) -> pyglet window coordinates (y up)."""
        w, h = self.win.window.width, self.win.window.height
        return int(round(fx * w)), int(round(h - fy * h))

    # --- conditions ----------------------------------------------------------------------

    def _condition(self, name: str) -> Callable[[], bool]:
        ex = self.explorer
        s = ex.session
        if name == "scene":
            return lambda: s.scene is not None and s.scene.loaded_points >= s.scene.num_points > 0
        if name == "clip_done":
            return lambda: (not s.jobs and not ex.player.active and not ex.player.queue
                            and not ex.camera.locked)
        if name == "looping":
            return lambda: ex.player.active and ex.player.clip.loop
        if name == "preview_done":
            return lambda: not ex.path_tools.editor.previewing
        raise ValueError(f"unknown condition {name!r}")

    # --- running -------------------------------------------------------------------------

    def tick(self, idle: bool = False) -> None:
        start = time.perf_counter()
        self.win.tick(self.dt)
        self.frames += 1
        if idle:
            time.sleep(max(0.0, self.idle_tick_s - (time.perf_counter() - start)))
            self._t0 += time.perf_counter() - start - self.dt  # idle time is not owed
        if self.realtime:
            ahead = self.frames * self.dt - (time.perf_counter() - self._t0)
            if ahead > 0:
                time.sleep(ahead)
        if self.explorer.session.peer_gone:
            raise RuntimeError(f"the backend went away: {self.explorer.session.status}")

    def run(self) -> None:
        self._t0 = time.perf_counter()
        for i, step in enumerate(self.script, 1):
            logger.info("demo step %d/%d: %s", i, len(self.script), step)
            for idle in self._run_step(step):
                self.tick(bool(idle))

    def _run_step(self, step: Step) -> Iterator[bool | None]:
        """Post the step's events between frames; yields True on frames that only wait."""
        if isinstance(step, Tap):
            self._post("on_key_press", self._symbol(step.key), 0)
            yield None
            self._post("on_key_release", self._symbol(step.key), 0)
        elif isinstance(step, Hold):
            self._post("on_key_press", self._symbol(step.key), 0)
            for _ in range(max(1, round(step.seconds / self.dt))):
                yield None
            self._post("on_key_release", self._symbol(step.key), 0)
        elif isinstance(step, Wait):
            for _ in range(max(1, round(step.seconds / self.dt))):
                yield None
        elif isinstance(step, WaitFor):
            done = self._condition(step.condition)
            deadline = time.perf_counter() + step.timeout_s
            while not done():
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"demo: no {step.condition!r} within {step.timeout_s} s "
                                       f"(status: {self.explorer.session.status})")
                yield not self.explorer.player.active
        elif isinstance(step, Drag):
            yield from self._drag(step)
        elif isinstance(step, LoadPath):
            self._load_path(step)
            yield None
        else:  # pragma: no cover - the Step union is closed
            raise TypeError(f"unknown step {step!r}")

    def _load_path(self, step: LoadPath) -> None:
        from importlib import resources

        from protocol.camera_path import CameraPath

        if step.path is not None:
            camera_path = CameraPath.load(step.path)
        else:
            with resources.as_file(resources.files("configs").joinpath("paths/demo.json")) as file:
                camera_path = CameraPath.load(file)
        if not self.explorer.path_tools.load_path(camera_path):
            raise RuntimeError(f"demo: cannot load the path: {self.explorer.session.status}")

    def _drag(self, step: Drag) -> Iterator[None]:
        if step.world is not None:
            ex = self.explorer
            uv, _ = project(np.asarray(step.world, float), ex.camera.pose, ex.window_K())
            uv = uv / np.array(ex.size, float)
            start, end = uv[0].tolist(), uv[1].tolist()
        else:
            start, end = step.start, step.end
        x0, y0 = self._to_pyglet(*start)
        x1, y1 = self._to_pyglet(*end)
        self._post("on_mouse_press", x0, y0, step.button, 0)
        n = max(1, round(step.seconds / self.dt))
        last = (x0, y0)
        for i in range(1, n + 1):
            x = round(x0 + (x1 - x0) * i / n)
            y = round(y0 + (y1 - y0) * i / n)
            self._post("on_mouse_drag", x, y, x - last[0], y - last[1], step.button, 0)
            last = (x, y)
            yield
        self._post("on_mouse_release", x1, y1, step.button, 0)
        yield
