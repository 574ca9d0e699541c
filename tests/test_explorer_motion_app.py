"""The explorer app with moving points, headless: a PointsMotion sets the buffer's motion,
the HUD names the moving regions, M stops and restarts world motion (real key events)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("moderngl")

from explorer.window import configure_pyglet  # noqa: E402

configure_pyglet(headless=True)

from protocol import codec  # noqa: E402
from protocol.messages import PointsMotion  # noqa: E402
from tests.test_explorer_app import DT, _egl, app, press  # noqa: E402, F401

pytestmark = pytest.mark.gl


def test_motion_message_hud_and_toggle(app):  # noqa: F811
    ex = app.explorer
    index = np.arange(100, 400, dtype=np.int32)
    motion = np.zeros((len(index), 4), np.float32)
    motion[:, 0], motion[:, 3] = 0.3, 2.0
    (i_ref, i_blob), (m_ref, m_blob) = codec.array_blob(index, 0), codec.array_blob(motion, 1)
    scene = ex.session.scene.scene_id
    ex.session.handle(PointsMotion(scene_id=scene, index=i_ref, motion=m_ref, regions=["river"],
                                   total_points=ex.points.count), [i_blob, m_blob])
    assert ex.points.moving == len(index)
    np.testing.assert_array_equal(ex.points.motion[index], motion)
    assert "moving: river" in ex._hud_extra()
    press(app, app.key.M)
    app.tick(DT)
    assert not ex.cloud.animate and "still (M: move): river" in ex._hud_extra()
    press(app, app.key.M)
    assert ex.cloud.animate
    # motion for points the explorer does not have is dropped, not a crash
    far = np.array([ex.points.count + 5], np.int32)
    (i_ref, i_blob), (m_ref, m_blob) = codec.array_blob(far, 0), codec.array_blob(motion[:1], 1)
    ex.session.handle(PointsMotion(scene_id=scene, index=i_ref, motion=m_ref, regions=[],
                                   total_points=ex.points.count), [i_blob, m_blob])
    assert ex.points.moving == len(index) and ex.session.moving_regions == []
