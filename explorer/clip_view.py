"""The clip view: puts the player's frame on a texture, hands the camera to the clip while it
plays and back at its end, and draws the frame over the cloud."""

from __future__ import annotations

import time

import moderngl
import numpy as np

from explorer.annotations import PixelMap
from explorer.camera import FlyCamera
from explorer.player import ShowFrame
from explorer.renderer import OverlayRenderer
from explorer.settings import PlayerSettings


class ClipView:
    """What of the playing clip is on screen."""

    def __init__(self, ctx: moderngl.Context, overlay: OverlayRenderer, settings: PlayerSettings):
        self.ctx = ctx
        self.overlay = overlay
        self.settings = settings
        self.shown: ShowFrame | None = None
        self.texture: moderngl.Texture | None = None
        self.last_display_ns: dict[int, int] = {}
        """Frame index -> ``perf_counter_ns`` when it was first on screen (benchmarks)."""

    def follow(self, show: ShowFrame | None, camera: FlyCamera, looping: bool) -> bool:
        """Take the player's answer for this tick; True when a clip just ended."""
        if show is None:
            if not looping:
                self.shown = None
            return False
        camera.locked = True
        camera.set_pose(show.frame.pose)
        if show.ended:
            self.shown = None
            camera.locked = looping
            return True
        if show.new:
            self._upload(show.frame.image)
        self.shown = show
        return False

    def clear(self) -> None:
        self.shown = None

    def _upload(self, image: np.ndarray) -> None:
        h, w = image.shape[:2]
        tex = self.texture
        if tex is None or tex.size != (w, h):
            if tex is not None:
                tex.release()
            tex = self.ctx.texture((w, h), 3, alignment=1)
            tex.filter = moderngl.LINEAR, moderngl.LINEAR
            self.texture = tex
        tex.write(np.ascontiguousarray(image).tobytes(), alignment=1)

    def draw(self, K_window: np.ndarray) -> None:
        if self.shown is None or self.texture is None:
            return
        frame = self.shown.frame
        fh, fw = frame.image.shape[:2]
        (x0, y0), (x1, y1) = PixelMap(K_window, frame.K).to_window([[0.0, 0.0], [fw, fh]])
        alpha = self.shown.alpha * self.settings.clip_alpha
        self.overlay.image(self.texture, x0, y0, x1 - x0, y1 - y0, alpha)

    def mark_displayed(self) -> None:
        """Call after the frame is rendered and finished: latency bookkeeping."""
        if self.shown is not None and self.shown.new:
            self.ctx.finish()
            self.last_display_ns[self.shown.frame.index] = time.perf_counter_ns()
