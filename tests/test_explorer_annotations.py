"""Marks drawn for dynamics: bold, continuous arrows and brush strokes, and the outline of the
region the arrows will animate, shown before Space and gone after it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from explorer.annotations import ViewAnnotations, arrow_triangles, polyline_triangles


def _raster(triangles: np.ndarray, shape=(120, 200)) -> np.ndarray:
    out = np.zeros(shape, np.uint8)
    for tri in triangles.reshape(-1, 3, 2):
        cv2.fillConvexPoly(out, np.round(tri * 16).astype(np.int32), 1, shift=4)
    return out > 0


def test_an_arrow_is_a_bold_solid_shape_with_a_head():
    shape = _raster(arrow_triangles(np.array([20.0, 60.0]), np.array([180.0, 60.0])))
    assert cv2.connectedComponents(shape.astype(np.uint8))[0] == 2  # one piece
    shaft = shape[:, 40:140]
    assert shaft.any(0).all() and shaft.sum(0).min() >= 4  # 4+ px thick all along
    assert shape[:, 164].sum() > shape[:, 100].sum() + 6  # the head is wider than the shaft


def test_a_stroke_has_no_gaps_at_its_corners():
    zigzag = np.array([[10, 10], [60, 100], [110, 10], [160, 100]], float)
    shape = _raster(polyline_triangles(zigzag, 5.0))
    assert cv2.connectedComponents(shape.astype(np.uint8))[0] == 2
    for (x0, y0), (x1, y1) in zip(zigzag[:-1], zigzag[1:], strict=True):
        for t in np.linspace(0, 1, 50):
            assert shape[int(round(y0 + t * (y1 - y0))), int(round(x0 + t * (x1 - x0)))]


def test_a_fast_brush_drag_paints_a_continuous_stroke():
    marks = ViewAnnotations(200, 100)
    marks.paint_frozen(np.array([10.0, 50.0]), 4.0)
    marks.paint_frozen(np.array([190.0, 50.0]), 4.0, previous=np.array([10.0, 50.0]))
    assert (marks.frozen[50, 10:190] == 255).all() and (marks.frozen[47:54, 100] == 255).all()
    assert not marks.frozen[40, 100] and not marks.frozen[60, 100]


moderngl = pytest.importorskip("moderngl")

from explorer.window import configure_pyglet  # noqa: E402

configure_pyglet(headless=True)

from explorer.testing import FakeBackend  # noqa: E402
from protocol.messages import SelectRegion  # noqa: E402

DT = 1.0 / 30.0
ORANGE = np.array([255, 89, 51])
YELLOW = np.array([255, 230, 51])


@pytest.fixture()
def app(tmp_path, monkeypatch):
    try:
        moderngl.create_standalone_context(backend="egl").release()
    except Exception as exc:
        pytest.skip(f"no EGL: {exc}")
    import pyglet

    from explorer.settings import ExplorerSettings
    from explorer.window import ExplorerWindow

    monkeypatch.chdir(tmp_path)
    settings = ExplorerSettings.load()
    settings.dynamics.num_frames = 4
    backend = FakeBackend(size=(160, 120))
    win = ExplorerWindow(backend, settings, visible=False, size=(320, 240))
    win.backend = backend
    win.key = pyglet.window.key
    win.explorer.session.open_scene(np.zeros((120, 160, 3), np.uint8))
    for _ in range(3):
        win.tick(DT)
    yield win
    win.close()


def _send(win, event, *args):
    win.window.dispatch_event(event, *args)
    win.window.dispatch_events()


def _near(frame: np.ndarray, colour: np.ndarray) -> np.ndarray:
    return np.abs(frame.astype(int) - colour).max(2) <= 40


@pytest.mark.gl
def test_the_region_is_outlined_before_space_and_gone_after(app):
    ex = app.explorer
    _send(app, "on_mouse_press", 100, 120, 1, 0)  # pyglet y is up: window row 120
    _send(app, "on_mouse_drag", 200, 120, 100, 0, 1, 0)
    _send(app, "on_mouse_release", 200, 120, 1, 0)
    (msg, _), = app.backend.of_type(SelectRegion)
    assert len(msg.arrows) == 1
    app.tick(DT)
    app.tick(DT)
    frame = ex.target.read_rgb()
    # the arrow: a bold shaft from x=100 to 200 on row 120
    assert _near(frame, ORANGE)[110:131, 130].sum() >= 4
    # the outline: the fake backend's 16 px square around the arrow's start (image px), i.e.
    # a 32 px square in this 2x window, drawn as a bright line
    outline = _near(frame, YELLOW)
    assert outline[104:137, 84].sum() >= 20 and outline[104:137, 116].sum() >= 20
    assert not outline[120, 90:110].any()  # a line, not a filled box
    _send(app, "on_key_press", app.key.SPACE, 0)
    _send(app, "on_key_release", app.key.SPACE, 0)
    app.tick(DT)
    assert not ex.tools.outline and not ex.tools.marks(160, 120).arrows
