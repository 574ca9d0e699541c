"""A dynamics result kept in the world: a view's 2D loop flow lifted onto the cloud's points.

After a dynamics job, the points the paused view shows inside the animated region get the
region's motion as 4D points (``geometry.motion``): each point's image position is carried
``num_frames`` Euler steps along the 2D field and as many against it (the same Eulerian flow
the clip shows, or the flow estimated from a generated clip); the shorter of the two chords,
lifted at the point's own depth, is its world displacement over one loop of
``num_frames / fps`` seconds. (The shorter one: a point near where the region begins has
little path behind it, one near where it ends little ahead, and its two copies travel both
ways, so either chord at full length would carry a copy out of the region.)

:func:`lift_region` computes it (:func:`lift_region_steps` a step at a time), :func:`keep`
sets it in the scene's store (the event the engine yields), :func:`take_back` is its undo and
:func:`motion_messages` the wire messages.
"""

from __future__ import annotations

from collections.abc import Generator

import numpy as np

from backend import animation
from backend.engines.base import MotionOut, ProgressOut, Scene
from backend.geometry.cloud import PointCloud
from backend.geometry.motion import lift_flow
from protocol import codec
from protocol.messages import PointsMotion


def visible_in(cloud: PointCloud, pose: np.ndarray, K: np.ndarray, depth: np.ndarray,
               tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """The points of ``cloud`` the view at ``pose`` shows (in the image, at most
    ``tolerance`` (relative) behind its front ``depth``): (M int64 indices, M x 2 pixel
    positions x y, pixel centres at .5)."""
    h, w = depth.shape
    R, t = pose[:3, :3], pose[:3, 3]
    cam = (cloud.xyz.astype(np.float64) - t) @ R
    z = cam[:, 2]
    ok = z > 1e-6
    uv = np.full((len(z), 2), -1.0)
    uv[ok] = (cam[ok, :2] / z[ok, None]) * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
    ok &= (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
    index = np.flatnonzero(ok)
    px = uv[index].astype(np.int64)
    front = depth[px[:, 1], px[:, 0]]
    keep = (front > 0) & (z[index] <= front * (1.0 + tolerance))
    return index[keep], uv[index[keep]].astype(np.float32)


def lift_region(cloud: PointCloud, pose: np.ndarray, K: np.ndarray, field: np.ndarray,
                depth: np.ndarray, num_frames: int, fps: float, tolerance: float = 0.08
                ) -> tuple[np.ndarray, np.ndarray]:
    """(M int64 indices, M x 4 motion) of the points the 2D ``field`` (H x W x 2, pixels per
    frame at ``pose``) moves: each visible point on a pixel where the field is not zero."""
    steps = lift_region_steps(cloud, pose, K, field, depth, num_frames, fps, tolerance)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def lift_region_steps(cloud: PointCloud, pose: np.ndarray, K: np.ndarray, field: np.ndarray,
                      depth: np.ndarray, num_frames: int, fps: float, tolerance: float = 0.08,
                      stretches: int = 4) -> Generator[ProgressOut, None, tuple[np.ndarray, np.ndarray]]:
    """:func:`lift_region` a step at a time (``index, motion = yield from ...`` in an
    engine's run): a ``keep`` ProgressOut between its steps (finding the points, the paths
    in ``stretches`` stretches of steps, lifting), where a long job may give way."""
    total = stretches + 2
    yield ProgressOut("keep", 0, total, "setting the region moving in the scene")
    index, uv = visible_in(cloud, pose, K, depth, tolerance)
    px = uv.astype(np.int64)
    moving = np.abs(field[px[:, 1], px[:, 0]]).max(axis=1) > 0
    index, uv = index[moving], uv[moving]
    motion = np.zeros((len(index), 4), np.float32)
    if len(index) == 0:
        return index, motion
    # the chord along the flow and the one against it: the shorter, so that both copies of
    # a point near the region's edge stay inside (the field fades to zero at the edge)
    end_ahead = end_behind = uv
    done = 0
    for i in range(stretches):
        yield ProgressOut("keep", 1 + i, total)
        step = (num_frames * (i + 1)) // stretches - done
        end_ahead, end_behind = animation.advect(field, end_ahead, end_behind, step)
        done += step
    yield ProgressOut("keep", total - 1, total)
    ahead, behind = end_ahead - uv, uv - end_behind
    shorter = (ahead**2).sum(1) <= (behind**2).sum(1)
    chord = np.where(shorter[:, None], ahead, behind)
    motion[:, :3] = lift_flow(cloud.xyz[index], pose, K, uv + chord, uv)
    motion[:, 3] = num_frames / fps
    still = np.abs(motion[:, :3]).max(axis=1) == 0
    return index[~still], motion[~still]


def keep(scene: Scene, index: np.ndarray, motion: np.ndarray, region: str) -> MotionOut:
    """Set ``motion`` on the scene's points at ``index``; the event saying so."""
    before = scene.cloud.set_motion(index, motion)
    scene.moving_regions.append(region)
    return MotionOut(index, motion, before, region)


def take_back(scene: Scene, kept: MotionOut) -> None:
    """Undo :func:`keep`: the points get back the motion they had."""
    scene.cloud.set_motion(kept.index, kept.before)
    if kept.region in scene.moving_regions:
        scene.moving_regions.reverse()
        scene.moving_regions.remove(kept.region)  # the newest of that name
        scene.moving_regions.reverse()


def moving(cloud: PointCloud) -> tuple[np.ndarray, np.ndarray]:
    """(indices, motion) of every moving point of ``cloud`` (what a resumed explorer needs)."""
    if cloud.motion is None:
        return np.zeros(0, np.int64), np.zeros((0, 4), np.float32)
    index = np.flatnonzero(cloud.motion[:, 3] > 0)
    return index, cloud.motion[index]


def saved_regions(clips: list[dict]) -> list[str]:
    """The regions a saved session's kept dynamics clips left moving, oldest first."""
    return [c["region"] for c in clips if c.get("region") and not c.get("undone")]


def motion_messages(scene: Scene, index: np.ndarray, motion: np.ndarray, job_id: str | None,
                    chunk: int) -> list[tuple[PointsMotion, list]]:
    """``PointsMotion`` messages of at most ``chunk`` points each (one, maybe empty, at
    least: it carries the scene's moving regions)."""
    out = []
    total = len(scene.cloud)
    for start in range(0, max(len(index), 1), chunk):
        i_ref, i_blob = codec.array_blob(np.asarray(index[start:start + chunk], np.int32), 0)
        m_ref, m_blob = codec.array_blob(np.asarray(motion[start:start + chunk], np.float32), 1)
        out.append((PointsMotion(scene_id=scene.scene_id, index=i_ref, motion=m_ref,
                                 regions=[r[:200] for r in scene.moving_regions],
                                 total_points=total, job_id=job_id), [i_blob, m_blob]))
    return out


def region_name(arrows: tuple, shape: tuple[int, int], guess: str = "sky/water (guessed)") -> str:
    """A short name for the HUD: where the arrows are (``2 arrows at 40% x 70%`` of the
    view), or ``guess`` (what the engine animated without arrows)."""
    if not arrows:
        return guess
    h, w = shape[:2]
    u = np.mean([a.start[0] for a in arrows]) / w
    v = np.mean([a.start[1] for a in arrows]) / h
    return f"{len(arrows)} arrow{'s' if len(arrows) > 1 else ''} at {u:.0%} x {v:.0%}"
