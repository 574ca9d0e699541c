"""The explorer itself: small parts on one GL context, put together by ``step``.

:class:`Explorer` is independent of the window: it takes the moderngl context, the
framebuffer size and a client, exposes actions (``press``/``release``, ``look``, ``drag_*``),
and ``step(dt)`` advances the app clock, renders a frame into its offscreen target and feeds
the recorder. The parts, each with one job:

- :class:`~explorer.flight_control.FlightControl`: held keys, mouse look, camera, flown path;
- :class:`~explorer.clip_view.ClipView`: the playing clip on screen, the camera handed over;
- :class:`~explorer.annotation_tools.AnnotationTools`: motion arrows and the freeze brush;
- :class:`~explorer.recording.Recording`: MP4 recordings and screenshots;
- :class:`~explorer.hud_presenter.HudPresenter`: status, bars, fps, help;
- :class:`~explorer.path_tools.PathTools`: the keyframe path editor and the world export.
- :class:`~explorer.photo_card.PhotoCard`: the photo on screen while its scene opens.

:mod:`explorer.window` wires it to pyglet events; tests drive it directly or through the
same pyglet handlers. (A little over 400 lines: this is where the parts meet, one short method
per key and per step of the frame; each part's own logic lives in its module.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import moderngl
import numpy as np

from explorer.annotation_tools import AnnotationTools
from explorer.annotations import PixelMap
from explorer.camera import FlyCamera
from explorer.clip_view import ClipView
from explorer.flight_control import FlightControl
from explorer.hud_presenter import HudPresenter
from explorer.path_tools import PathTools
from explorer.paths import STOCK_PATH_KEYS, stock_path
from explorer.photo_card import PhotoCard
from explorer.player import ClipPlayer, PlayerState
from explorer.point_buffer import PointCloudBuffer
from explorer.recorder import RecordingStats, VideoRecorder
from explorer.recording import Recording
from explorer.renderer import CloudRenderer, OverlayRenderer, PathRenderer, RenderTarget, ViewParams
from explorer.session import ClientLike, ExplorerSession
from explorer.settings import ExplorerSettings
from protocol.camera_path import CameraPath

logger = logging.getLogger(__name__)


class Explorer:
    """One explorer session on a GL context (see module docstring)."""

    def __init__(self, ctx: moderngl.Context, size: tuple[int, int], client: ClientLike,
                 settings: ExplorerSettings | None = None,
                 help_rows: list[tuple[str, str]] | None = None,
                 record_path: str | Path | None = None, start_path: CameraPath | None = None,
                 local_backend: bool = False):
        """``local_backend``: the backend was started by this explorer (so
        ``network.frame_codec = "auto"`` asks it for raw frames; see ``codec_for``)."""
        self.ctx = ctx
        self.settings = s = settings or ExplorerSettings.load()
        self.time = 0.0
        """App clock, seconds: advanced only by ``step(dt)``."""
        self.points = PointCloudBuffer(ctx)
        self.cloud = CloudRenderer(ctx, self.points, s.splats)
        self.path_renderer = PathRenderer(ctx)
        self.overlay = OverlayRenderer(ctx)
        self.player = ClipPlayer(s.player)  # prebuffers within the credits: checked on load
        self.session = ExplorerSession(client, self.player, self.points.append,
                                       clock=lambda: self.time, on_truncate=self.points.truncate,
                                       frame_codec=s.network.codec_for(local_backend))
        self.controls = FlightControl(s.camera)
        self.clip_view = ClipView(ctx, self.overlay, s.player)
        self.tools = AnnotationTools(ctx, self.overlay, s.dynamics)
        self.recording = Recording(s.record, record_path, s.debug.encode_sleep_s)
        self.hud = HudPresenter(ctx, self.overlay, help_rows)
        self.path_tools = PathTools(self, start_path)
        self.card = PhotoCard(ctx, self.overlay)
        self.dynamics_job: str | None = None
        self.target = RenderTarget(ctx, *_target_size(*size))
        self._scene_id: str | None = None
        self._undone_seen = 0

    # --- parts, as the window, tests and benchmarks see them -----------------------------

    @property
    def camera(self) -> FlyCamera:
        return self.controls.camera

    @property
    def mouse_look(self) -> bool:
        return self.controls.mouse_look

    @property
    def recorder(self) -> VideoRecorder | None:
        return self.recording.recorder

    @property
    def recordings(self) -> list[RecordingStats]:
        return self.recording.recordings

    @property
    def size(self) -> tuple[int, int]:
        return self.target.size

    def resize(self, width: int, height: int) -> None:
        width, height = _target_size(width, height)
        if self.target.size == (width, height):
            return
        self.target.release()
        self.target = RenderTarget(self.ctx, width, height)

    def window_K(self) -> np.ndarray:
        return self.camera.K(*self.size)

    # --- actions (keys) ------------------------------------------------------------------

    def press(self, action: str) -> None:
        """A key bound to ``action`` went down."""
        self.controls.press(action)
        handlers: dict[str, Callable[[], object]] = {
            "commit": self.commit_path,
            "discard": self.discard_path,
            "cancel": self.cancel_all,
            "undo": self.undo,
            "home": self.go_home,
            "pause": self.toggle_dynamics,
            "record": self.toggle_recording,
            "screenshot": self.screenshot,
            "help": self.hud.toggle_help,
            "hud": self.hud.toggle,
            "mouse_look": self.toggle_mouse_look,
            "freeze_brush": self.tools.toggle_brush,
            "clear_marks": self.tools.clear,
        }
        handler = handlers.get(action)
        if handler is not None:
            handler()
        elif self.path_tools.handles(action):
            self.path_tools.press(action)
        elif action.startswith("stock_"):
            self.send_stock_path(action.removeprefix("stock_"))

    def release(self, action: str) -> None:
        self.controls.release(action)

    def look(self, dx: float, dy: float) -> None:
        """Mouse look by a motion in window pixels (y down)."""
        self.camera.look(dx, dy)

    def scroll(self, notches: float) -> None:
        self.camera.scroll(notches)
        self.session.status = f"speed x{self.camera.speed_multiplier:.2f}"

    def toggle_mouse_look(self) -> None:
        self.controls.mouse_look = not self.controls.mouse_look

    # --- paths and jobs ------------------------------------------------------------------

    def commit_path(self) -> str | None:
        """Enter: send the keyframe path, else the flight since the last commit (resampled),
        as a Transition."""
        if not self._can_send("commit"):
            return None
        p = self.settings.paths
        keyed = self.path_tools.transition_poses()
        if keyed is not None:
            self.path_tools.editor.stop_preview()
            self.controls.jump(self.controls.flight.start)
            job_id = self.session.send_transition(keyed, p.fps, p.preset)
            self.path_tools.sent(job_id, len(keyed))
            self.controls.committed(job_id)
            return job_id
        flight = self.controls.flight
        if flight.is_empty():
            self.session.status = "fly somewhere first: the path is empty"
            return None
        poses = flight.resampled(p.transition_frames, self.camera.scene_scale, p.smooth)
        job_id = self.session.send_transition(poses, p.fps, p.preset)
        self.controls.committed(job_id)
        return job_id

    def send_stock_path(self, name: str) -> str | None:
        """1-4: send the paper's stock path ``name`` from where the flight started."""
        if name not in STOCK_PATH_KEYS or not self._can_send(name):
            return None
        p = self.settings.paths
        start = self.controls.flight.start
        poses = stock_path(name, start, p.transition_frames, self.camera.scene_scale)
        self.controls.jump(start)
        job_id = self.session.send_transition(poses, p.fps, p.preset)
        self.controls.committed(job_id)
        return job_id

    def discard_path(self) -> None:
        """Backspace: while a clip plays, cancel it; else forget the flown path."""
        if self.player.active or self.player.queue:
            self.cancel_all()
            return
        self.controls.jump(self.controls.flight.start)
        self.session.status = "path discarded"

    def show_photo(self, image: np.ndarray) -> None:
        """Show the photo (H x W x 3 uint8) at once, until its scene's cloud is on screen."""
        self.card.show(image)

    def cancel_all(self) -> None:
        """Cancel every job we are waiting for and stop the clip on screen."""
        ids = set(self.player.discard_all()) | set(self.session.jobs)
        for job_id in ids:
            self.session.discard(job_id)
        self.dynamics_job = None
        self.clip_view.clear()
        self.camera.locked = False
        self.controls.flight.reset(self.camera.pose)
        self.session.status = f"cancelled {len(ids)} job(s)" if ids else "nothing to cancel"

    def undo(self) -> None:
        """Take back the last transition: the backend drops its clip and its points."""
        if self.session.scene is None or self.camera.locked:
            self.session.status = "cannot undo now"
            return
        self.session.undo()

    def go_home(self) -> None:
        """Back to the photo's viewpoint."""
        if self.camera.locked:
            return
        self.controls.jump(self.controls.home)
        self.session.status = "back at the photo's view"

    def _can_send(self, what: str) -> bool:
        if self.session.scene is None:
            self.session.status = f"cannot {what}: the scene is still opening"
            return False
        if self.camera.locked:
            self.session.status = f"cannot {what} while a clip plays"
            return False
        return True

    # --- dynamics and annotations --------------------------------------------------------

    def toggle_dynamics(self) -> None:
        """Space: animate the current view, or stop the loop that is playing."""
        if self.dynamics_job is not None:
            job_id, self.dynamics_job = self.dynamics_job, None
            self.player.discard(job_id)
            self.session.discard(job_id)
            self.clip_view.clear()
            self.camera.locked = False
            self.session.status = "dynamics stopped"
            return
        if not self._can_send("animate"):
            return
        marks = self._marks()
        d = self.settings.dynamics
        arrows = marks.to_messages(d.arrow_frames) if marks else []
        frozen = marks.frozen if marks is not None and marks.frozen.any() else None
        self.dynamics_job = self.session.send_dynamics(self.camera.pose, arrows, frozen,
                                                       d.num_frames, d.fps)
        self.camera.locked = True
        self.tools.clear()
        logger.info("dynamics at the current view (%d arrows) for %s", len(arrows),
                    self.session.require_scene().scene_id)

    def _marks(self):
        scene = self.session.scene
        return None if scene is None else self.tools.marks(scene.width, scene.height)

    def pixel_map(self) -> PixelMap | None:
        scene = self.session.scene
        return None if scene is None else PixelMap(self.window_K(), scene.K)

    def drag_begin(self, x: float, y: float) -> None:
        """Left button down at window pixel (x, y), y down: start an arrow or a brush stroke."""
        pm = self.pixel_map()
        if self.camera.locked or pm is None:
            return
        self.tools.begin(pm, self._marks(), self.camera.pose, x, y)

    def drag_to(self, x: float, y: float) -> None:
        self.tools.move(self.pixel_map(), self._marks(), x, y)

    def drag_end(self, x: float, y: float) -> None:
        self.tools.end(self.pixel_map(), self._marks(), x, y)
        marks = self._marks()
        if self.tools.marks_changed and marks is not None and marks.arrows:
            # outline the region the arrows will animate before Space starts it
            self.tools.marks_changed = False
            frozen = marks.frozen if marks.frozen.any() else None
            self.session.select_region(self.camera.pose,
                                       marks.to_messages(self.settings.dynamics.arrow_frames), frozen)

    # --- recording -----------------------------------------------------------------------

    def toggle_recording(self) -> None:
        """R: stop the recording (its file is finished aside), or start a new one."""
        if self.recorder is not None:
            self.stop_recording()
        else:
            self.start_recording()

    def start_recording(self, path: str | Path | None = None) -> Path:
        path = self.recording.start(self.size, self.time, path)
        self.session.status = f"recording to {path}"
        return path

    def stop_recording(self, wait: bool = False) -> RecordingStats | None:
        """Stop recording; the file is finalised on the recorder's thread and the HUD says
        when it is saved. ``wait`` blocks until then and returns its statistics."""
        recorder = self.recording.stop(self.time)
        if recorder is None:
            return None
        self.session.status = f"saving the recording to {recorder.path}..."
        if not wait:
            return None
        recorder.join()
        self._report_recordings()
        return recorder.stats

    def _report_recordings(self) -> None:
        for line in self.recording.report():
            self.session.status = line

    def screenshot(self, path: str | Path | None = None) -> Path:
        """F12: save the next rendered view as PNG (written on a background thread)."""
        return self.recording.screenshot(path)

    # --- the frame -----------------------------------------------------------------------

    def step(self, dt: float) -> None:
        """Advance the app clock by ``dt`` s, handle the network, play, fly, render, record."""
        self.time += dt
        # 1. network: messages in (more of them when frames are slow, so a slow machine still
        #    takes a credit window's frames a tick), the scene adopted, undos and lost jobs
        self.session.pump(budget_s=min(0.5, max(0.004, 0.25 * dt)))
        self._adopt_scene()
        self._apply_undos()
        self._follow_lost_jobs()
        if self.session.region_outline is not None:
            self.tools.set_outline(self.session.region_outline)
            self.session.region_outline = None
        # 2. playback: the player's frame on screen, every frame it is done with credited
        ended = self.clip_view.follow(self.player.update(dt, self.time), self.camera,
                                      looping=self.dynamics_job is not None and self.player.active)
        if ended:
            self.controls.flight.reset(self.camera.pose)
            logger.info("rendering at %.1f fps", self.hud.fps)
        self.session.consumed(self.player.take_credits())
        # 3. flight (or the keyframe path's preview)
        self.path_tools.step(dt)
        if self.controls.update(dt, record=self.session.scene is not None):
            self.tools.forget_if_moved(self.camera.pose)
        # 4. render, capture, HUD; recordings finished aside are reported
        self.card.follow(self.session, self.camera.pose)
        self.render()
        self.hud.tick()
        self._report_recordings()
        if self.settings.debug.frame_sleep_s > 0:
            time.sleep(self.settings.debug.frame_sleep_s)

    def _adopt_scene(self) -> None:
        scene = self.session.scene
        if scene is None or scene.scene_id == self._scene_id:
            return
        self._scene_id = scene.scene_id
        self.controls.adopt_scene(scene.K, scene.width, scene.height, scene.pose,
                                  scene.median_depth)
        self.path_tools.on_scene()

    def _follow_lost_jobs(self) -> None:
        """Jobs lost with the backend leave the screen; re-sent ones take their place."""
        for job in self.session.lost_now:
            if job.job_id == self.dynamics_job:
                self.clip_view.clear()  # the camera stays at the paused view, waiting
            elif self.camera.locked and self.dynamics_job is None:
                self.clip_view.clear()
                self.camera.locked = False
                self.controls.flight.reset(self.camera.pose)
        self.session.lost_now.clear()
        for old, new in self.session.replaced.items():
            if self.dynamics_job == old:
                self.dynamics_job = new
            if old in self.controls.starts:
                self.controls.starts[new] = self.controls.starts.pop(old)
        self.session.replaced.clear()
        dyn = self.dynamics_job
        if dyn is not None and dyn not in self.session.jobs and self.player.find(dyn) is None:
            # it failed before any frame came (the HUD says why): the view is free again
            self.dynamics_job = None
            self.camera.locked = False

    def _apply_undos(self) -> None:
        for msg in self.session.undone[self._undone_seen:]:
            start = self.controls.starts.pop(msg.job_id, None) if msg.job_id is not None else None
            if start is not None and not self.camera.locked:
                self.controls.jump(start)
        self._undone_seen = len(self.session.undone)

    def render(self) -> None:
        w, h = self.size
        self.target.use()
        self.ctx.viewport = (0, 0, w, h)
        self.target.clear(tuple(self.settings.window.background))
        K = self.window_K()
        self.camera.extent = self.points.extent
        params = ViewParams(self.camera.view_matrix(), self.camera.projection(w, h), K[1, 1])
        self.cloud.draw(params)
        path = self.controls.path()
        if path is not None:
            self.path_renderer.set_points(path)
            self.path_renderer.draw(params)
        self.path_tools.draw_line(params)
        self.overlay.begin(w, h)
        self.card.draw((w, h))
        self.path_tools.draw_keyframes(K)
        self.clip_view.draw(K)
        pm = self.pixel_map()
        if pm is not None and not self.camera.locked:
            self.tools.draw(pm)
        self._capture(with_hud=False)
        self.overlay.begin(w, h)
        self.hud.draw(self.session, self.player, self.points.count, self._hud_extra(),
                      self.recorder is not None, (w, h))
        self._capture(with_hud=True)
        self.clip_view.mark_displayed()

    def _capture(self, with_hud: bool) -> None:
        shot = self.recording.capture(self.target.read_rgb, self.time, with_hud)
        if shot is not None:
            self.session.status = f"screenshot {shot}"

    def _hud_extra(self) -> list[str]:
        extra = []
        if self.tools.freeze_brush:
            extra.append("freeze brush (F)")
        if self.mouse_look:
            extra.append("mouse look (Tab)")
        extra.append(f"speed x{self.camera.speed_multiplier:.2f}")
        return extra

    @property
    def screenshot_threads(self):
        return self.recording.screenshot_threads

    @property
    def stalled(self) -> bool:
        return self.player.state == PlayerState.STALLED

    def shutdown(self) -> None:
        """Finalise any recording and wait for every file; safe to call twice."""
        self.recording.finish(self.time)


def _target_size(width: int, height: int) -> tuple[int, int]:
    """The render target's size for a window of ``width`` x ``height`` (at least 2 x 2)."""
    return max(2, int(width)), max(2, int(height))
