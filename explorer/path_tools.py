"""The explorer's keyframe path tools and world export, behind its keys.

:class:`PathTools` owns the :class:`~explorer.path_editor.PathEditor` and its
:class:`~explorer.path_view.PathView` and acts on the explorer's camera and session:

- ``keyframe`` (K): the current pose becomes a keyframe after the selected one;
- ``orbit`` (O): keyframes turning around the point under the cursor (read from the depth
  buffer) by ``editor.orbit_deg`` (with Shift: the other way), the camera at the last one;
- ``delete_keyframe`` (Delete), ``prev_keyframe`` / ``next_keyframe`` ([ and ]): edit;
- ``preview`` (P): fly the path at the clip's frame rate (again: stop);
- ``save_path`` (F5) / ``load_path`` (F6): ``editor.paths_folder/<scene>-path.json``, nerfstudio
  camera-path JSON; a path given with ``explore --path`` is sent once the scene opens;
- ``export_world`` (F8): the cloud as it is now, as a 3D Gaussian splat PLY in
  ``editor.exports_folder`` (read back from the GPU buffer, written on a thread with the
  export command's own writer).

Enter sends the keyframe path instead of the flown one while there are keyframes
(:meth:`transition_poses`).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from explorer.path_editor import PathEditor
from explorer.path_view import PathView
from explorer.point_buffer import POINT_DTYPE
from protocol.camera_path import CameraPath, CameraPathError

if TYPE_CHECKING:
    import moderngl

    from explorer.camera import FlyCamera
    from explorer.flight_control import FlightControl
    from explorer.point_buffer import PointCloudBuffer
    from explorer.renderer import OverlayRenderer, RenderTarget
    from explorer.session import ExplorerSession
    from explorer.settings import ExplorerSettings

logger = logging.getLogger(__name__)

ACTIONS = ("keyframe", "orbit", "delete_keyframe", "prev_keyframe", "next_keyframe", "preview",
           "save_path", "load_path", "export_world")


class PathHost(Protocol):
    """What the path tools use of the app (``explorer.app.Explorer``)."""

    ctx: moderngl.Context
    settings: ExplorerSettings
    points: PointCloudBuffer
    overlay: OverlayRenderer
    session: ExplorerSession
    controls: FlightControl
    target: RenderTarget

    @property
    def camera(self) -> FlyCamera: ...

    @property
    def size(self) -> tuple[int, int]: ...

    def window_K(self) -> np.ndarray: ...

    def commit_path(self) -> str | None: ...


class PathTools:
    """Key actions of the path editor and the world export (see the module docstring)."""

    def __init__(self, explorer: PathHost, start_path: CameraPath | None = None):
        self.ex = explorer
        self.settings = explorer.settings.editor
        self.editor = PathEditor()
        self.view = PathView(explorer.ctx, explorer.overlay)
        self.start_path = start_path
        """Sent once the scene opens (``explore --path``)."""
        self.pointer: tuple[float, float] | None = None
        """The cursor in framebuffer pixels (y down), for the orbit's pivot."""
        self.export_thread: threading.Thread | None = None
        self.exported: Path | None = None
        self._path_cache: tuple = (None, None)

    def handles(self, action: str) -> bool:
        return action in ACTIONS

    def press(self, action: str) -> None:
        getattr(self, action)()

    # --- editing ------------------------------------------------------------------------

    def _editable(self) -> bool:
        if self.ex.session.scene is None or self.ex.camera.locked:
            self.ex.session.status = "cannot edit the path now"
            return False
        return True

    def keyframe(self) -> None:
        if self._editable():
            i = self.editor.add(self.ex.camera.pose)
            self.ex.session.status = f"keyframe {i + 1} of {len(self.editor)}"
            logger.info("%s at %s", self.ex.session.status, np.round(self.ex.camera.pose[:3, 3], 4))

    def orbit(self) -> None:
        if not self._editable():
            return
        pivot = self.pick_point(*(self.pointer or (self.ex.size[0] / 2, self.ex.size[1] / 2)))
        if pivot is None:
            self.ex.session.status = "orbit: nothing under the cursor"
            return
        angle = np.deg2rad(self.settings.orbit_deg) * (-1.0 if "fast" in self.ex.controls.held else 1.0)
        if not len(self.editor):
            self.editor.add(self.ex.camera.pose)
        count = self.settings.orbit_keyframes
        for pose in PathEditor.orbit_keyframes(self.ex.camera.pose, pivot, angle, count):
            self.editor.add(pose)
        if self.editor.selected is not None:
            self.ex.camera.set_pose(self.editor.keyframes[self.editor.selected])
        self.ex.session.status = f"orbit {self.settings.orbit_deg:+.0f} deg: {len(self.editor)} keyframes"

    def delete_keyframe(self) -> None:
        if self.editor.remove_selected():
            self.ex.session.status = f"keyframe removed, {len(self.editor)} left"

    def prev_keyframe(self) -> None:
        self.editor.select(-1)

    def next_keyframe(self) -> None:
        self.editor.select(1)

    def pick_point(self, x: float, y: float) -> np.ndarray | None:
        """The world point drawn at framebuffer pixel (x, y) (y down), from the depth buffer."""
        w, h = self.ex.size
        col, row = int(np.clip(x, 0, w - 1)), int(np.clip(y, 0, h - 1))
        raw = self.ex.target.fbo.read(viewport=(col, h - 1 - row, 1, 1), attachment=-1, dtype="f4")
        d = float(np.frombuffer(raw, np.float32)[0])
        if d >= 1.0:
            return None  # background: nothing drawn there
        P = self.ex.camera.projection(w, h)
        z = P[2, 3] / ((2.0 * d - 1.0) + P[2, 2])  # GL eye depth, positive ahead
        if self.ex.settings.splats.antialias:
            z /= 1.0 + self.ex.settings.splats.depth_tolerance  # the pre-pass pushed it back
        K = self.ex.window_K()
        cam = np.array([(col + 0.5 - K[0, 2]) / K[0, 0] * z, (row + 0.5 - K[1, 2]) / K[1, 1] * z, z, 1.0])
        return (self.ex.camera.pose @ cam)[:3]

    # --- paths and preview ----------------------------------------------------------------

    def transition_poses(self) -> np.ndarray | None:
        """The keyframe path from where the camera's path starts, or None until there is one
        (keyframes other than the start)."""
        start = self.ex.controls.flight.start
        keys = self.editor.anchored(start)
        if len(keys) < 2:
            return None
        p = self.ex.settings.paths
        key = (keys.tobytes(), p.transition_frames, self.ex.camera.scene_scale)
        if self._path_cache[0] != key:  # drawn every frame: made once per edit
            self._path_cache = (key, self.editor.path(start, p.transition_frames, self.ex.camera.scene_scale))
        return self._path_cache[1]

    def sent(self, job_id: str, frames: int) -> None:
        """The keyframe path went out as a transition: start a new one."""
        logger.info("keyframe path sent as %s: %d keyframes, %d frames", job_id, len(self.editor), frames)
        self.editor.clear()

    def preview(self) -> None:
        if self.editor.previewing:
            self.editor.stop_preview()
            self.ex.controls.jump(self.ex.controls.flight.start)
            return
        poses = self.transition_poses()
        if poses is None or not self._editable():
            self.ex.session.status = "add keyframes (K) first"
            return
        self.editor.start_preview(poses, self.ex.settings.paths.fps)
        self.ex.session.status = f"preview: {len(poses)} frames at {self.ex.settings.paths.fps:g} fps"
        logger.info("preview started: %d frames at %g fps", len(poses), self.ex.settings.paths.fps)

    def step(self, dt: float) -> None:
        """Fly the preview; the camera returns to the path's start when it ends."""
        if not self.editor.previewing:
            return
        pose = self.editor.preview_pose(dt)
        if pose is None:
            self.ex.camera.set_pose(self.ex.controls.flight.start)
            self.ex.session.status = "preview done: Enter sends the path"
            logger.info("preview done")
        else:
            self.ex.camera.set_pose(pose)

    def draw_line(self, params) -> None:
        self.view.draw_line(params, self.transition_poses())

    def draw_keyframes(self, K: np.ndarray) -> None:
        if not self.editor.previewing:
            self.view.draw_frames(self.transition_poses(), self.ex.camera.pose, K)
        self.view.draw_keyframes(self.editor.keyframes, self.editor.selected, self.ex.camera.pose, K,
                                 0.1 * self.ex.camera.scene_scale)

    # --- files ---------------------------------------------------------------------------

    def path_file(self) -> Path:
        scene = self.ex.session.require_scene()
        return Path(self.settings.paths_folder) / f"{scene.scene_id}-path.json"

    def save_path(self) -> Path | None:
        if self.ex.session.scene is None or not len(self.editor):
            self.ex.session.status = "no keyframes to save"
            return None
        scene, p = self.ex.session.scene, self.ex.settings.paths
        out = self.path_file()
        self.editor.to_file(out, self.ex.controls.flight.start, p.transition_frames,
                            self.ex.camera.scene_scale, scene.K, scene.width, scene.height, p.fps,
                            scene.median_depth)
        self.ex.session.status = f"path saved to {out}"
        logger.info(self.ex.session.status)
        return out

    def load_path(self, camera_path: CameraPath | None = None) -> bool:
        scene = self.ex.session.scene
        if scene is None:
            return False
        try:
            camera_path = camera_path or CameraPath.load(self.path_file())
        except CameraPathError as exc:
            self.ex.session.status = f"cannot load the path: {exc}"
            return False
        self.editor.from_file(camera_path, scene.median_depth)
        self.ex.session.status = f"path loaded: {len(self.editor)} keyframes"
        return True

    def on_scene(self) -> None:
        """The scene opened: send the path given at start, once."""
        if self.start_path is not None and self.load_path(self.start_path):
            self.start_path = None
            self.ex.commit_path()

    # --- export --------------------------------------------------------------------------

    def export_world(self) -> None:
        """Write the cloud as splats on a thread (the GPU buffer is read here, on the GL thread)."""
        scene = self.ex.session.scene
        if scene is None or self.ex.points.count == 0:
            self.ex.session.status = "nothing to export yet"
            return
        if self.export_thread is not None and self.export_thread.is_alive():
            self.ex.session.status = "an export is already running"
            return
        count = self.ex.points.count
        data = np.frombuffer(self.ex.points.vbo.read(size=count * POINT_DTYPE.itemsize), POINT_DTYPE)
        out = Path(self.settings.exports_folder) / f"{scene.scene_id}-splats.ply"
        self.export_thread = threading.Thread(target=self._export, args=(data, out), name="export",
                                              daemon=True)
        self.export_thread.start()

    def _export(self, data: np.ndarray, out: Path) -> None:
        from protocol.files.clouds import write_splats  # numpy only: no torch in the explorer

        chunk = 1 << 18
        chunks = ((data["position"][i:i + chunk], data["color"][i:i + chunk, :3], data["radius"][i:i + chunk])
                  for i in range(0, len(data), chunk))

        def progress(done: int, total: int) -> None:
            self.ex.session.status = f"exporting splats {100 * done // max(total, 1)}%"

        try:
            self.exported = write_splats(chunks, len(data), out, progress=progress)
            self.ex.session.status = f"exported {len(data)} splats to {out}"
        except OSError as exc:
            self.ex.session.status = f"export failed: {exc.strerror or exc}"
        logger.info(self.ex.session.status)
