"""The photo on screen while its scene opens: no blank window while the backend starts,
estimates depth and streams the cloud.

The first view of a scene shows the whole photo letterboxed to the window, so the card is
drawn exactly there (centred, scaled to fit) and the cloud replaces it without a jump. It is
taken away once the cloud is loaded, or as soon as the view is not the photo's any more (the
person flies, or a resumed scene opens at another pose).
"""

from __future__ import annotations

import moderngl
import numpy as np

from explorer.flight_control import PHOTO_POSE
from explorer.renderer import OverlayRenderer
from explorer.session import ExplorerSession


def letterbox(photo_size: tuple[int, int], window: tuple[int, int]) -> tuple[float, float, float, float]:
    """(x, y, w, h) in window pixels of a photo fitted, centred, inside the window."""
    pw, ph = photo_size
    ww, wh = window
    s = min(ww / pw, wh / ph)
    w, h = pw * s, ph * s
    return (ww - w) / 2, (wh - h) / 2, w, h


class PhotoCard:
    """A texture of the photo and whether it is still shown."""

    def __init__(self, ctx: moderngl.Context, overlay: OverlayRenderer):
        self.ctx = ctx
        self.overlay = overlay
        self.texture: moderngl.Texture | None = None
        self.size: tuple[int, int] = (0, 0)

    @property
    def shown(self) -> bool:
        return self.texture is not None

    def show(self, image: np.ndarray) -> None:
        """Show an H x W x 3 uint8 RGB photo until :meth:`hide`."""
        self.hide()
        h, w = image.shape[:2]
        self.texture = self.ctx.texture((w, h), 3, np.ascontiguousarray(image).tobytes(),
                                        alignment=1)
        self.texture.filter = moderngl.LINEAR, moderngl.LINEAR
        self.size = (w, h)

    def hide(self) -> None:
        if self.texture is not None:
            self.texture.release()
            self.texture = None

    def follow(self, session: ExplorerSession, pose: np.ndarray) -> None:
        """Hide once the cloud is loaded, the view left the photo's pose, or the scene was
        refused."""
        if self.texture is None:
            return
        scene = session.scene
        ready = scene is not None and session.opening_progress() is None
        moved = scene is not None and not np.allclose(pose, PHOTO_POSE, atol=1e-9)
        if ready or moved or session.open_error is not None:
            self.hide()

    def draw(self, window: tuple[int, int]) -> None:
        if self.texture is not None:
            self.overlay.image(self.texture, *letterbox(self.size, window))
