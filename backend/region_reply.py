"""The backend's answer to ``SelectRegion``: the outline of the region a dynamics request
with the same pose, arrows and frozen mask would animate.

``region_reply(engine, scene, msg, blobs) -> (RegionOutline, blobs)`` validates the request
as a dynamics request is validated (``check_view_marks``), asks the engine for the region
(``Engine.select_region``) and sends its border as closed polylines in the view's pixels.
"""

from __future__ import annotations

import numpy as np

from backend.engines.base import Engine, Scene
from backend.geometry.regions import outline
from protocol import codec
from protocol.camera import check_pose
from protocol.errors import BadArray, BadValue
from protocol.messages import ArrayRef, Arrow, RegionOutline, SelectRegion


def check_view_marks(scene: Scene, arrows: list[Arrow], frozen_ref: ArrayRef | None, blobs
                     ) -> np.ndarray | None:
    """The frozen mask (H x W bool or None) after checking it and the arrows against the view;
    BadArray / BadValue saying what is wrong."""
    frozen = None
    if frozen_ref is not None:
        frozen = np.asarray(codec.read_array(frozen_ref, blobs)) != 0
        if frozen.shape != scene.image.shape[:2]:
            raise BadArray(f"frozen mask is {frozen.shape}, views are {scene.image.shape[:2]}")
    w, h = scene.size
    for a in arrows:
        if not (0 <= a.start[0] <= w and 0 <= a.start[1] <= h):
            raise BadValue(f"arrow start {a.start} is outside the {w}x{h} view")
        if float(np.hypot(*a.vector)) > max(w, h):
            raise BadValue(f"arrow vector {a.vector} is longer than the {w}x{h} view (pixels "
                           "per frame)")
    return frozen


def region_reply(engine: Engine, scene: Scene, msg: SelectRegion, blobs) -> tuple[RegionOutline, list]:
    """The outline message for ``msg`` (runs on a worker slot: it renders the view)."""
    pose = check_pose(codec.pose_array(msg.pose))
    frozen = check_view_marks(scene, msg.arrows, msg.frozen, blobs)
    region = engine.select_region(scene, pose, tuple(msg.arrows), frozen)
    lines = outline(region)
    points = np.concatenate(lines) if lines else np.zeros((0, 2), np.float32)
    ref, data = codec.array_blob(points.astype(np.float32), index=0)
    return RegionOutline(request_id=msg.request_id, scene_id=msg.scene_id, points=ref,
                         lengths=[len(c) for c in lines], coverage=float(region.mean())), [data]
