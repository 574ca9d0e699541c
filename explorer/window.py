"""The pyglet window: a GL 3.3 context for moderngl, input events mapped to explorer actions.

Call :func:`configure_pyglet` before anything imports ``pyglet.window`` (headless EGL needs
to be chosen first). The window draws nothing itself: each tick the :class:`Explorer`
renders into its offscreen target, and :class:`Presenter` copies its colour (never its depth:
the window's depth format may differ, and a blit across formats fails) to the screen.
The loop runs on the wall clock; losing the X display finalises the recording before exit.
"""

from __future__ import annotations

import logging
import os
import time

from explorer.settings import ExplorerSettings, KeyBindings

logger = logging.getLogger(__name__)


def configure_pyglet(headless: bool) -> None:
    """Pick pyglet's platform: EGL without a display (headless) or the X11/desktop one."""
    import pyglet

    if "pyglet.window" in __import__("sys").modules and pyglet.options["headless"] != headless:
        raise RuntimeError("pyglet.window was imported before configure_pyglet(headless=...)")
    pyglet.options["headless"] = headless
    pyglet.options["shadow_window"] = False
    pyglet.options["vsync"] = False


class Presenter:
    """Copies the colour of an offscreen target to the window's framebuffer."""

    def __init__(self, ctx):
        self.ctx = ctx
        self._fbo = None
        self._target = None
        self.last_ms = 0.0

    def present(self, target, dst=None) -> None:
        """Copy ``target``'s colour to ``dst`` (default: the window's framebuffer)."""
        if self._target is not target:
            if self._fbo is not None:
                self._fbo.release()
            # A framebuffer over the target's colour texture alone: the blit copies colour.
            self._fbo = self.ctx.framebuffer(color_attachments=[target.color])
            self._target = target
        t0 = time.perf_counter()
        self.ctx.copy_framebuffer(dst if dst is not None else self.ctx.screen, self._fbo)
        self.last_ms = (time.perf_counter() - t0) * 1000


class InputRouter:
    """pyglet event handlers -> explorer actions (pushed onto the window's handler stack)."""

    def __init__(self, window, explorer, bindings: KeyBindings, on_quit=None):
        from pyglet.window import mouse

        self.window = window
        self.explorer = explorer
        self.symbols = bindings.symbol_map()
        self._mouse = mouse
        self._right_held = False
        self.on_quit = on_quit or window.close

    def _scale(self) -> float:
        fb_w, _ = self.window.get_framebuffer_size()
        return fb_w / max(1, self.window.width)

    def _to_pixels(self, x: float, y: float) -> tuple[float, float]:
        s = self._scale()
        return x * s, (self.window.height - y) * s

    def on_key_press(self, symbol: int, modifiers: int):
        action = self.symbols.get(symbol)
        if action == "quit":
            self.on_quit()
            return True
        if action == "mouse_look":
            self.explorer.toggle_mouse_look()
            self.window.set_exclusive_mouse(self.explorer.mouse_look)
            return True
        if action is not None:
            self.explorer.press(action)
            return True
        return None

    def on_key_release(self, symbol: int, modifiers: int):
        action = self.symbols.get(symbol)
        if action is not None:
            self.explorer.release(action)
            return True
        return None

    def on_mouse_press(self, x, y, button, modifiers):
        if button == self._mouse.RIGHT:
            self._right_held = True
        elif button == self._mouse.LEFT and not self.explorer.mouse_look:
            self.explorer.drag_begin(*self._to_pixels(x, y))

    def on_mouse_release(self, x, y, button, modifiers):
        if button == self._mouse.RIGHT:
            self._right_held = False
        elif button == self._mouse.LEFT:
            self.explorer.drag_end(*self._to_pixels(x, y))

    def on_mouse_drag(self, x, y, dx, dy, buttons, modifiers):
        if buttons & self._mouse.RIGHT or self.explorer.mouse_look:
            self.explorer.look(dx * self._scale(), -dy * self._scale())
        elif buttons & self._mouse.LEFT:
            self.explorer.drag_to(*self._to_pixels(x, y))

    def on_mouse_motion(self, x, y, dx, dy):
        self.explorer.path_tools.pointer = self._to_pixels(x, y)
        if self.explorer.mouse_look:
            self.explorer.look(dx * self._scale(), -dy * self._scale())

    def on_mouse_scroll(self, x, y, scroll_x, scroll_y):
        self.explorer.scroll(scroll_y)


class ExplorerWindow:
    """A pyglet window holding an :class:`~explorer.app.Explorer` on its GL context."""

    def __init__(self, client, settings: ExplorerSettings | None = None,
                 bindings: KeyBindings | None = None, *, visible: bool = True,
                 caption: str = "DreamJourney explorer", record_path=None,
                 size: tuple[int, int] | None = None, link=None, start_path=None,
                 fit_on_open: bool = False, quit_if_unopened: bool = False,
                 local_backend: bool = False):
        import moderngl
        import pyglet

        from explorer.app import Explorer

        self.settings = settings or ExplorerSettings.load()
        self.bindings = bindings or KeyBindings.load()
        w, h = size or (self.settings.window.width, self.settings.window.height)
        # pyglet.gl.Config is the platform's concrete class at runtime; its stub is abstract
        config = pyglet.gl.Config(major_version=3, minor_version=3,  # type: ignore[abstract]
                                  forward_compatible=True, double_buffer=True, depth_size=24)
        try:
            self.window = pyglet.window.Window(w, h, caption=caption, resizable=True,
                                               visible=visible, config=config,
                                               vsync=self.settings.window.vsync)
        except pyglet.window.NoSuchConfigException:
            self.window = pyglet.window.Window(w, h, caption=caption, resizable=True,
                                               visible=visible)
        self.headless = bool(pyglet.options["headless"])
        if self.headless:
            # glcontext cannot adopt pyglet's current EGL context, and nothing is shown
            # anyway: render on a context of our own; the window only dispatches events.
            # pyglet's queued internal resize issues GL calls on whatever context is
            # current, so deliver it now, while pyglet's own context is.
            self.window.dispatch_events()
            # moderngl's stub types **settings as dicts; backend="egl" is documented
            self.ctx = moderngl.create_standalone_context(backend="egl")  # type: ignore[arg-type]
        else:
            self.window.switch_to()
            self.ctx = moderngl.create_context()
        fb = self.window.get_framebuffer_size()
        rows = [(r.keys, r.does) for r in self.bindings.help.rows]
        self.explorer = Explorer(self.ctx, fb, client, self.settings, rows, record_path=record_path,
                                 start_path=start_path, local_backend=local_backend)
        self.presenter = Presenter(self.ctx)
        self.link = link
        """Optional :class:`~explorer.backend_process.BackendLink`: reconnects when lost."""
        self.fit_on_open = fit_on_open
        """Take the photo's shape once the scene opens (its size was not known before)."""
        self.quit_if_unopened = quit_if_unopened
        """Close when the backend refuses to open the scene (nothing to show)."""
        self._last_tick: float | None = None
        if not self.headless:
            self._finalise_if_display_lost()
        self.input = InputRouter(self.window, self.explorer, self.bindings, self.request_close)
        self.window.push_handlers(self.input)
        self.window.push_handlers(on_draw=self.on_draw, on_resize=self.on_resize,
                                  on_close=self.on_close)
        self.closed = False
        self._window_closed = False

    # --- events --------------------------------------------------------------------------

    def on_draw(self):
        self.present()
        return True

    def on_resize(self, width, height):
        self.explorer.resize(*self.window.get_framebuffer_size())
        if self.headless:
            return True  # pyglet's default handler would touch its own GL context
        return None

    def on_close(self):
        self.request_close()
        return True  # closed by close() once the loop has stopped

    def request_close(self) -> None:
        """Stop the loop at the next tick; the recording is finalised on the way out."""
        self.closed = True

    # --- frame ---------------------------------------------------------------------------

    def present(self) -> None:
        """Copy the explorer's last rendered frame to the window's framebuffer."""
        if self.headless:
            return
        self.presenter.present(self.explorer.target)

    def tick(self, dt: float) -> None:
        """One frame: deliver queued input events, step the explorer, draw, flip."""
        self.window.dispatch_events()
        self.make_current()
        if self.link is not None:
            self.link.watch(self.explorer.session)
        self.explorer.step(dt)
        self._follow_scene()
        if not self.headless:  # flipping would make pyglet's own EGL context current
            self.window.dispatch_event("on_draw")
            self.window.flip()

    def _follow_scene(self) -> None:
        session = self.explorer.session
        if self.fit_on_open and session.scene is not None:
            from explorer.inputs import window_size

            self.fit_on_open = False
            self.window.set_size(*window_size((session.scene.width, session.scene.height),
                                              self.settings.window.width))
        if self.quit_if_unopened and session.open_error is not None and session.scene is None:
            logger.error("the backend refused the scene: %s", session.open_error.message)
            self.request_close()

    def run(self) -> None:
        """The interactive loop on pyglet's clock until the window closes."""
        import pyglet

        interval = 1.0 / self.settings.window.target_fps
        pyglet.clock.schedule_interval(self._scheduled, interval)
        try:
            pyglet.app.run(interval=None)
        finally:
            pyglet.clock.unschedule(self._scheduled)
            self.explorer.shutdown()

    def _scheduled(self, dt: float) -> None:
        if self.closed:
            pyglet_exit()
            return
        now = time.perf_counter()  # the wall clock: playback and recordings keep real time
        wall = dt if self._last_tick is None else now - self._last_tick
        self._last_tick = now
        self.tick(wall)

    def _finalise_if_display_lost(self) -> None:
        """Xlib exits the process when the display connection dies; finalise first."""
        from pyglet.libs.x11 import xlib

        def on_io_error(display) -> int:
            logger.error("lost the X display: finalising the recording and exiting")
            try:
                self.explorer.shutdown()
            finally:
                os._exit(3)
            return 0  # pragma: no cover

        self._io_handler = xlib.XIOErrorHandler(on_io_error)
        xlib.XSetIOErrorHandler(self._io_handler)

    def make_current(self) -> None:
        """Make the explorer's GL context current (pyglet's event dispatch may switch it)."""
        if not self.headless:  # a headless explorer has a standalone context of its own
            self.window.switch_to()

    def close(self) -> None:
        """Finalise any recording, then close the window; safe to call twice."""
        if self._window_closed:
            return
        self._window_closed = self.closed = True
        self.explorer.shutdown()
        error = self.ctx.error  # reading it clears GL's error flag before pyglet checks it
        if error != "GL_NO_ERROR":
            logger.debug("GL error pending at close: %s", error)
        self.window.close()
        if self.headless:
            self.ctx.release()


def pyglet_exit() -> None:
    import pyglet

    pyglet.app.exit()
