"""Annotation tools: motion arrows dragged with the left button and the freeze brush, kept
in the photo's pixels for the view they were drawn on, and drawn over it: arrows bold with a
filled head, brush strokes continuous, and the outline of the region the arrows will animate
(the backend's ``RegionOutline``) as a bright line on a dark halo."""

from __future__ import annotations

import moderngl
import numpy as np

from explorer.annotations import PixelMap, ViewAnnotations, arrow_triangles, polyline_triangles
from explorer.renderer import OverlayRenderer
from explorer.settings import DynamicsSettings


class AnnotationTools:
    """Arrows and frozen regions for the next dynamics request."""

    def __init__(self, ctx: moderngl.Context, overlay: OverlayRenderer,
                 settings: DynamicsSettings):
        self.ctx = ctx
        self.overlay = overlay
        self.settings = settings
        self.freeze_brush = False
        self.annotations: ViewAnnotations | None = None
        self._pose: np.ndarray | None = None
        self._drag: tuple[np.ndarray, np.ndarray] | None = None
        self._last_paint: np.ndarray | None = None
        self._frozen_texture: moderngl.Texture | None = None
        self._frozen_version = -1
        self.outline: list[np.ndarray] = []
        """The region the arrows will animate: closed polylines in image pixels."""
        self.marks_changed = False
        """Set when an arrow or a brush stroke was finished (the app then asks for the outline)."""

    def marks(self, width: int, height: int) -> ViewAnnotations:
        """The annotations of a ``width`` x ``height`` view (made on first use)."""
        if self.annotations is None or self.annotations.frozen.shape != (height, width):
            self.annotations = ViewAnnotations(width, height)
        return self.annotations

    def toggle_brush(self) -> None:
        self.freeze_brush = not self.freeze_brush

    def clear(self) -> None:
        if self.annotations is not None:
            self.annotations.clear()
        self.outline = []

    def set_outline(self, polylines: list[np.ndarray]) -> None:
        self.outline = [np.asarray(p, float) for p in polylines]

    def begin(self, pm: PixelMap, marks: ViewAnnotations, pose: np.ndarray, x: float, y: float) -> None:
        self._pose = pose.copy()
        self._last_paint = None
        if self.freeze_brush:
            self._paint(pm, marks, x, y)
        else:
            p = np.array([x, y], float)
            self._drag = (p, p)

    def move(self, pm: PixelMap | None, marks: ViewAnnotations | None, x: float, y: float) -> None:
        if self.freeze_brush and pm is not None and marks is not None:
            self._paint(pm, marks, x, y)
        elif self._drag is not None:
            self._drag = (self._drag[0], np.array([x, y], float))

    def end(self, pm: PixelMap | None, marks: ViewAnnotations | None, x: float, y: float) -> None:
        if self._drag is not None and not self.freeze_brush and pm is not None and marks is not None:
            if marks.add_arrow(pm.to_image([self._drag[0]])[0], pm.to_image([[x, y]])[0]):
                self.marks_changed = True
        elif self.freeze_brush and self._last_paint is not None and marks is not None and marks.arrows:
            self.marks_changed = True  # the brush bounds the region: outline it again
        self._drag = None
        self._last_paint = None

    def _paint(self, pm: PixelMap, marks: ViewAnnotations, x: float, y: float) -> None:
        scale = pm.K_image[0, 0] / pm.K_window[0, 0]
        at = pm.to_image([[x, y]])[0]
        marks.paint_frozen(at, self.settings.brush_radius * scale, self._last_paint)
        self._last_paint = at

    def forget_if_moved(self, pose: np.ndarray) -> None:
        """Marks belong to the view they were drawn on: moving away clears them."""
        if self.annotations is None or self._pose is None:
            return
        if not np.allclose(self._pose, pose, atol=1e-6):
            self.annotations.clear()
            self.outline = []
            self._pose = None

    def draw(self, pm: PixelMap) -> None:
        marks = self.annotations
        if marks is not None and marks.frozen.any():
            (x0, y0), (x1, y1) = pm.to_window([[0.0, 0.0], [float(marks.width), float(marks.height)]])
            self.overlay.image(self._frozen(marks), x0, y0, x1 - x0, y1 - y0)
        if self.outline and marks is not None and marks.arrows:
            lines = [pm.to_window(p) for p in self.outline]
            self.overlay.triangles(np.concatenate([polyline_triangles(p, 5.0, closed=True) for p in lines]),
                                   (0.05, 0.05, 0.1, 0.8))
            self.overlay.triangles(np.concatenate([polyline_triangles(p, 2.0, closed=True, fan=4)
                                                   for p in lines]), (1.0, 0.9, 0.2, 1.0))
        shapes = []
        if marks is not None:
            shapes += [arrow_triangles(*pm.to_window([s, e])) for s, e in marks.arrows]
        if self._drag is not None:
            shapes.append(arrow_triangles(*self._drag))
        if shapes:
            self.overlay.triangles(np.concatenate(shapes), (1.0, 0.35, 0.2, 1.0))

    def _frozen(self, marks: ViewAnnotations) -> moderngl.Texture:
        if self._frozen_texture is None or self._frozen_version != marks.version:
            rgba = np.zeros((marks.height, marks.width, 4), np.uint8)  # the frozen mask's shape
            rgba[..., :3] = (80, 160, 255)
            rgba[..., 3] = marks.frozen // 2
            if self._frozen_texture is not None:
                self._frozen_texture.release()
            self._frozen_texture = self.ctx.texture((marks.width, marks.height), 4, rgba.tobytes())
            self._frozen_version = marks.version
        return self._frozen_texture
