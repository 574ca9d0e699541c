"""The backend's answer to ``SelectRegion``: the outline of the region a dynamics request
with the same pose, arrows and frozen mask would animate.

``region_reply(engine, scene, msg, blobs) -> (RegionOutline, blobs)`` checks the request as
a dynamics request is checked (``backend.wire``), asks the engine for the region
(``Engine.select_region``) and sends its border as closed polylines in the view's pixels.
"""

from __future__ import annotations

import numpy as np

from backend import wire
from backend.engines.base import Engine, Scene
from backend.geometry.regions import outline
from protocol import codec
from protocol.messages import RegionOutline, SelectRegion


def region_reply(engine: Engine, scene: Scene, msg: SelectRegion, blobs: wire.Blobs
                 ) -> tuple[RegionOutline, list]:
    """The outline message for ``msg`` (runs on a worker slot: it renders the view)."""
    pose = wire.checked_pose(msg.pose)
    view = wire.View(*scene.size, scene.median_depth)
    frozen = wire.check_view_marks(view, msg.arrows, msg.frozen, blobs)
    region = engine.select_region(scene, pose, tuple(msg.arrows), frozen)
    lines = outline(region)
    points = np.concatenate(lines) if lines else np.zeros((0, 2), np.float32)
    ref, data = codec.array_blob(points.astype(np.float32), index=0)
    return RegionOutline(request_id=msg.request_id, scene_id=msg.scene_id, points=ref,
                         lengths=[len(c) for c in lines], coverage=float(region.mean())), [data]
