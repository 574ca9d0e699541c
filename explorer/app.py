"""The explorer itself: camera, cloud, player, HUD and recorder on one GL context.

:class:`Explorer` is independent of the window: it takes the moderngl context, the
framebuffer size and a client, exposes actions (``press``/``release``, ``look``,
``drag_*``), and ``step(dt)`` advances the app clock, renders a frame into its offscreen
target and feeds the recorder. :mod:`explorer.window` wires it to pyglet events; tests drive
it directly or through the same pyglet handlers.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import moderngl
import numpy as np

from explorer.annotations import PixelMap, ViewAnnotations, arrow_segments
from explorer.camera import CameraSettings, FlyCamera, MoveInput, fov_from_K
from explorer.hud import Hud, HudState, JobBar
from explorer.paths import PRESET_NAMES, FlightPath, preset_path
from explorer.player import ClipPlayer, PlayerSettings, PlayerState, ShowFrame
from explorer.point_buffer import PointCloudBuffer
from explorer.recorder import RecordingStats, VideoRecorder, save_screenshot
from explorer.renderer import (
    CloudRenderer,
    OverlayRenderer,
    PathRenderer,
    RenderTarget,
    ViewParams,
)
from explorer.session import ClientLike, ExplorerSession
from explorer.settings import ExplorerSettings

logger = logging.getLogger(__name__)

MOVE_ACTIONS = {
    "forward": ("forward", 1.0), "backward": ("forward", -1.0),
    "right": ("right", 1.0), "left": ("right", -1.0),
    "up": ("up", 1.0), "down": ("up", -1.0),
}


@dataclass
class FrameStats:
    """Timings of the last frames, for the HUD and the benchmark."""

    fps: float = 0.0
    frame_ms: float = 0.0
    last_display_ns: dict[int, int] | None = None


class Explorer:
    """One explorer session on a GL context (see module docstring)."""

    def __init__(self, ctx: moderngl.Context, size: tuple[int, int], client: ClientLike,
                 settings: ExplorerSettings | None = None, help_lines: list[str] | None = None,
                 record_path: str | Path | None = None):
        self.ctx = ctx
        self.settings = settings or ExplorerSettings.load()
        s = self.settings
        self.time = 0.0
        """App clock, seconds: advanced only by ``step(dt)``."""
        self.camera = FlyCamera(CameraSettings(
            speed=s.camera.speed, fast_factor=s.camera.fast_factor,
            look_sensitivity=s.camera.look_sensitivity, scroll_step=s.camera.scroll_step,
            smoothing=s.camera.smoothing,
        ))
        self.points = PointCloudBuffer(ctx)
        self.cloud = CloudRenderer(ctx, self.points)
        self.path_renderer = PathRenderer(ctx)
        self.overlay = OverlayRenderer(ctx)
        self.hud = Hud(ctx, self.overlay)
        self.hud_state = HudState(help_text="\n".join(help_lines or []))
        self.player = ClipPlayer(PlayerSettings(min_prebuffer=s.player.min_prebuffer,
                                                max_prebuffer=s.player.max_prebuffer))
        self.session = ExplorerSession(client, self.player, self.points.append,
                                       clock=lambda: self.time)
        self.flight = FlightPath(np.eye(4))
        self.held: set[str] = set()
        self.mouse_look = False
        self.freeze_brush = False
        self.annotations: ViewAnnotations | None = None
        self._annotated_pose: np.ndarray | None = None
        self._drag_start: np.ndarray | None = None
        self._drag_end: np.ndarray | None = None
        self.dynamics_job: str | None = None
        self.recorder: VideoRecorder | None = None
        self.record_path = Path(record_path) if record_path else None
        self.recordings: list[RecordingStats] = []
        self.stats = FrameStats(last_display_ns={})
        self.target: RenderTarget | None = None
        self._frame_texture: moderngl.Texture | None = None
        self._shown: ShowFrame | None = None
        self._frozen_texture: moderngl.Texture | None = None
        self._frozen_version = -1
        self._last_wall = time.perf_counter()
        self._scene_seen = False
        self._screenshot_path: Path | None = None
        self.screenshot_threads = []
        self.resize(*size)

    # --- setup ---------------------------------------------------------------------------

    def resize(self, width: int, height: int) -> None:
        width, height = max(2, int(width)), max(2, int(height))
        if self.target is not None and self.target.size == (width, height):
            return
        if self.target is not None:
            self.target.release()
        self.target = RenderTarget(self.ctx, width, height)

    @property
    def size(self) -> tuple[int, int]:
        return self.target.size

    def window_K(self) -> np.ndarray:
        return self.camera.K(*self.size)

    # --- actions (keys) ------------------------------------------------------------------

    def press(self, action: str) -> None:
        """A key bound to ``action`` went down."""
        self.held.add(action)
        handler = {
            "commit": self.commit_path,
            "discard": self.discard_path,
            "pause": self.toggle_dynamics,
            "record": self.toggle_recording,
            "screenshot": self.screenshot,
            "help": self.toggle_help,
            "mouse_look": self.toggle_mouse_look,
            "freeze_brush": self.toggle_freeze_brush,
            "clear_marks": self.clear_marks,
        }.get(action)
        if handler is not None:
            handler()
        elif action.startswith("preset_"):
            self.send_preset(action.removeprefix("preset_"))

    def release(self, action: str) -> None:
        self.held.discard(action)

    def move_input(self) -> MoveInput:
        move = MoveInput(fast="fast" in self.held)
        for action, (axis, sign) in MOVE_ACTIONS.items():
            if action in self.held:
                setattr(move, axis, getattr(move, axis) + sign)
        return move

    def look(self, dx: float, dy: float) -> None:
        """Mouse look by a motion in window pixels (y down)."""
        self.camera.look(dx, dy)

    def scroll(self, notches: float) -> None:
        self.camera.scroll(notches)
        self.session.status = f"speed x{self.camera.speed_multiplier:.2f}"

    def toggle_help(self) -> None:
        self.hud_state.show_help = not self.hud_state.show_help

    def toggle_mouse_look(self) -> None:
        self.mouse_look = not self.mouse_look

    def toggle_freeze_brush(self) -> None:
        self.freeze_brush = not self.freeze_brush

    # --- paths ---------------------------------------------------------------------------

    def commit_path(self) -> str | None:
        """Enter: send the flight since the last commit as a Transition (resampled)."""
        if not self._can_send("commit"):
            return None
        if self.flight.is_empty():
            self.session.status = "fly somewhere first: the path is empty"
            return None
        p = self.settings.paths
        poses = self.flight.resampled(p.transition_frames, self.camera.scene_scale, p.smooth)
        job_id = self.session.send_transition(poses, p.fps)
        self.flight.reset(self.camera.pose)
        return job_id

    def send_preset(self, name: str) -> str | None:
        if name not in PRESET_NAMES or not self._can_send(name):
            return None
        p = self.settings.paths
        poses = preset_path(name, self.flight.start, p.transition_frames, self.camera.scene_scale)
        self.camera.set_pose(self.flight.start)
        self.flight.reset(self.flight.start)
        return self.session.send_transition(poses, p.fps)

    def discard_path(self) -> None:
        """Backspace: forget the flight and return to the last committed pose."""
        self.camera.set_pose(self.flight.start)
        self.flight.reset(self.flight.start)
        self.session.status = "path discarded"

    def _can_send(self, what: str) -> bool:
        if self.session.scene is None:
            self.session.status = f"cannot {what}: the scene is still opening"
            return False
        if self.camera.locked:
            self.session.status = f"cannot {what} while a clip plays"
            return False
        return True

    # --- dynamics ------------------------------------------------------------------------

    def toggle_dynamics(self) -> None:
        """Space: animate the current view, or stop the loop that is playing."""
        if self.dynamics_job is not None:
            job_id = self.dynamics_job
            self.dynamics_job = None
            self.session.discard(job_id, self.player.discard(job_id))
            self._shown = None
            self.camera.locked = False
            self.session.status = "dynamics stopped"
            return
        if not self._can_send("animate"):
            return
        scene = self.session.scene
        marks = self._marks()
        d = self.settings.dynamics
        arrows = marks.to_messages(d.arrow_frames) if marks else []
        frozen = marks.frozen if marks is not None and marks.frozen.any() else None
        self.dynamics_job = self.session.send_dynamics(self.camera.pose, arrows, frozen,
                                                       d.num_frames, d.fps)
        self.camera.locked = True
        if marks is not None:
            marks.clear()
        logger.info("dynamics at the current view (%d arrows) for %s", len(arrows),
                    scene.scene_id)

    def _marks(self) -> ViewAnnotations | None:
        scene = self.session.scene
        if scene is None:
            return None
        if self.annotations is None or self.annotations.frozen.shape != (scene.height, scene.width):
            self.annotations = ViewAnnotations(scene.width, scene.height)
        return self.annotations

    def pixel_map(self) -> PixelMap | None:
        scene = self.session.scene
        return None if scene is None else PixelMap(self.window_K(), scene.K)

    def clear_marks(self) -> None:
        if self.annotations is not None:
            self.annotations.clear()

    def drag_begin(self, x: float, y: float) -> None:
        """Left button down at window pixel (x, y), y down: start an arrow or a brush stroke."""
        if self.camera.locked or self.pixel_map() is None:
            return
        self._annotated_pose = self.camera.pose.copy()
        if self.freeze_brush:
            self._paint(x, y)
        else:
            self._drag_start = self._drag_end = np.array([x, y], float)

    def drag_to(self, x: float, y: float) -> None:
        if self.freeze_brush:
            self._paint(x, y)
        elif self._drag_start is not None:
            self._drag_end = np.array([x, y], float)

    def drag_end(self, x: float, y: float) -> None:
        if self._drag_start is not None and not self.freeze_brush:
            pm = self.pixel_map()
            marks = self._marks()
            if pm is not None and marks is not None:
                marks.add_arrow(pm.to_image([self._drag_start])[0], pm.to_image([[x, y]])[0])
        self._drag_start = self._drag_end = None

    def _paint(self, x: float, y: float) -> None:
        pm, marks = self.pixel_map(), self._marks()
        if pm is None or marks is None:
            return
        scale = pm.K_image[0, 0] / pm.K_window[0, 0]
        marks.paint_frozen(pm.to_image([[x, y]])[0], self.settings.dynamics.brush_radius * scale)

    # --- recording -----------------------------------------------------------------------

    def toggle_recording(self) -> RecordingStats | None:
        if self.recorder is not None:
            return self.stop_recording()
        self.start_recording()
        return None

    def start_recording(self, path: str | Path | None = None) -> Path:
        r = self.settings.record
        if path is None:
            path = self.record_path or Path(r.folder) / time.strftime("journey-%Y%m%d-%H%M%S.mp4")
            if self.record_path is not None and self.recordings:
                stem = self.record_path.with_suffix("")
                path = f"{stem}-{len(self.recordings) + 1}.mp4"
        w, h = self.size
        self.recorder = VideoRecorder(path, w, h, r.fps, r.queue_size)
        self.recorder.start(self.time)
        self.session.status = f"recording to {path}"
        return Path(path)

    def stop_recording(self) -> RecordingStats | None:
        if self.recorder is None:
            return None
        recorder, self.recorder = self.recorder, None
        stats = recorder.stop()
        self.recordings.append(stats)
        self.session.status = f"saved {stats.frames_written} frames to {stats.path}"
        return stats

    def screenshot(self, path: str | Path | None = None) -> Path:
        """F12: save the next rendered frame as PNG (written on a background thread)."""
        folder = Path(self.settings.record.screenshot_folder)
        path = Path(path) if path else folder / time.strftime("shot-%Y%m%d-%H%M%S.png")
        self._screenshot_path = path
        return path

    def _take_screenshot(self) -> None:
        if self._screenshot_path is None:
            return
        path, self._screenshot_path = self._screenshot_path, None
        self.screenshot_threads.append(save_screenshot(self.target.read_rgb().copy(), path))
        self.session.status = f"screenshot {path}"

    # --- the frame -----------------------------------------------------------------------

    def step(self, dt: float) -> None:
        """Advance the app clock by ``dt`` s, handle the network, render, record."""
        self.time += dt
        self.session.pump()
        self._on_scene_if_new()
        show = self.player.update(dt, self.time)
        self._follow_clip(show)
        if not self.camera.locked and self.camera.update(dt, self.move_input()):
            if self.session.scene is not None:
                self.flight.record(self.camera.pose, self.camera.scene_scale)
            self._clear_marks_if_moved()
        self.render()
        self._take_screenshot()
        self._record()
        self._tick_fps()

    def _on_scene_if_new(self) -> None:
        scene = self.session.scene
        if scene is None or self._scene_seen:
            return
        self._scene_seen = True
        self.camera.scene_scale = max(scene.median_depth, 1e-6)
        self.camera.settings.fov_x_deg = fov_from_K(scene.K, scene.width)
        self.camera.set_pose(scene.pose)
        self.flight.reset(scene.pose)

    def _follow_clip(self, show: ShowFrame | None) -> None:
        if show is None:
            if self.player.state == PlayerState.BUFFERING and self.dynamics_job is None:
                self._shown = None
            return
        self.camera.locked = True
        self.camera.set_pose(show.frame.pose)
        if show.ended:
            self._shown = None
            self.camera.locked = self.dynamics_job is not None and self.player.active
            self.flight.reset(self.camera.pose)
            return
        if show.new:
            self._upload_frame(show.frame.image)
            self.session.consumed(1)
        self._shown = show

    def _upload_frame(self, image: np.ndarray) -> None:
        h, w = image.shape[:2]
        tex = self._frame_texture
        if tex is None or tex.size != (w, h):
            if tex is not None:
                tex.release()
            tex = self.ctx.texture((w, h), 3, alignment=1)
            tex.filter = moderngl.LINEAR, moderngl.LINEAR
            self._frame_texture = tex
        tex.write(np.ascontiguousarray(image).tobytes(), alignment=1)

    def _clear_marks_if_moved(self) -> None:
        if self.annotations is None or self._annotated_pose is None:
            return
        if not np.allclose(self._annotated_pose, self.camera.pose, atol=1e-6):
            self.annotations.clear()
            self._annotated_pose = None

    def render(self) -> None:
        w, h = self.size
        target = self.target
        target.use()
        self.ctx.viewport = (0, 0, w, h)
        target.clear(tuple(self.settings.window.background))
        K = self.window_K()
        params = ViewParams(self.camera.view_matrix(), self.camera.projection(w, h), K[1, 1])
        self.cloud.draw(params)
        if not self.camera.locked and not self.flight.is_empty():
            self.path_renderer.set_points(self.flight.positions())
            self.path_renderer.draw(params)
        self.overlay.begin(w, h)
        self._draw_clip(K)
        self._draw_marks()
        self._update_hud()
        self.hud.draw(self.hud_state, w, h)
        if self._shown is not None and self._shown.new:
            self.ctx.finish()
            self.stats.last_display_ns[self._shown.frame.index] = time.perf_counter_ns()

    def _draw_clip(self, K: np.ndarray) -> None:
        if self._shown is None or self._frame_texture is None:
            return
        frame = self._shown.frame
        fh, fw = frame.image.shape[:2]
        pm = PixelMap(K, frame.K)
        (x0, y0), (x1, y1) = pm.to_window([[0.0, 0.0], [fw, fh]])
        alpha = self._shown.alpha * self.settings.player.clip_alpha
        self.overlay.image(self._frame_texture, x0, y0, x1 - x0, y1 - y0, alpha)

    def _draw_marks(self) -> None:
        pm = self.pixel_map()
        if pm is None or self.camera.locked:
            return
        marks = self.annotations
        if marks is not None and marks.frozen.any():
            if self._frozen_texture is None or self._frozen_version != marks.version:
                rgba = np.zeros(marks.frozen.shape + (4,), np.uint8)
                rgba[..., 0] = 80
                rgba[..., 1] = 160
                rgba[..., 2] = 255
                rgba[..., 3] = marks.frozen // 2
                if self._frozen_texture is not None:
                    self._frozen_texture.release()
                self._frozen_texture = self.ctx.texture(rgba.shape[1::-1], 4, rgba.tobytes())
                self._frozen_version = marks.version
            (x0, y0), (x1, y1) = pm.to_window([[0.0, 0.0], [marks.width, marks.height]])
            self.overlay.image(self._frozen_texture, x0, y0, x1 - x0, y1 - y0)
        segments = []
        if marks is not None:
            for s, e in marks.arrows:
                segments.append(arrow_segments(*pm.to_window([s, e])))
        if self._drag_start is not None and self._drag_end is not None:
            segments.append(arrow_segments(self._drag_start, self._drag_end))
        if segments:
            self.overlay.lines(np.concatenate(segments), (1.0, 0.35, 0.2, 1.0))

    def _update_hud(self) -> None:
        st = self.hud_state
        scene = self.session.scene
        pts = f"{self.points.count:,} points" if scene else "no scene yet"
        st.status = f"{self.session.status}  |  {pts}"
        extra = []
        if self.player.active:
            clip = self.player.clip
            extra.append(f"playing {clip.job_id.split('-')[0]} frame "
                         f"{self.player.shown_index + 1}/{clip.expected()}"
                         + (" (waiting for frames)" if self.player.state == PlayerState.STALLED
                            else ""))
        elif self.player.state == PlayerState.BUFFERING:
            extra.append("buffering the clip...")
        if self.freeze_brush:
            extra.append("freeze brush (F)")
        if self.mouse_look:
            extra.append("mouse look (Tab)")
        extra.append(f"speed x{self.camera.speed_multiplier:.2f}")
        st.extra = "  |  ".join(extra)
        st.recording = self.recorder is not None
        st.fps = self.stats.fps
        st.jobs = {
            job.job_id: JobBar(f"{job.kind} {job.stage} {job.step}/{job.total}"
                               if not job.frames_received else
                               f"{job.kind} frames {job.frames_received}/{job.num_frames}",
                               job.fraction)
            for job in self.session.jobs.values()
        }

    def _record(self) -> None:
        rec = self.recorder
        if rec is None or rec.frames_due(self.time) == 0:
            return
        rec.submit(self.target.read_rgb(), self.time)

    def _tick_fps(self) -> None:
        now = time.perf_counter()
        dt = now - self._last_wall
        self._last_wall = now
        self.stats.frame_ms = dt * 1000
        if dt > 0:
            a = 0.1 if self.stats.fps else 1.0
            self.stats.fps = (1 - a) * self.stats.fps + a / dt

    def shutdown(self) -> None:
        """Finalise any recording; safe to call twice."""
        if self.recorder is not None:
            self.stop_recording()
