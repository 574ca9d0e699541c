"""Request builders: the one place that turns arrays into request messages and their blobs.

The explorer's session, the scripted client and the tests all call these, so a test sends
byte for byte what the explorer sends (the photo as JPEG at ``PHOTO_QUALITY``, poses and
masks as raw arrays). Each returns ``(message, blobs)`` ready for ``Client.send``; every
array is copied, because the transport sends zero-copy from another thread.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from protocol import codec
from protocol.messages import ArrayRef, Arrow, Dynamics, OpenScene, SceneText, SelectRegion, Transition, Undo

PHOTO_FORMAT = "jpeg"
PHOTO_QUALITY = 95


def open_scene(scene_id: str, image: np.ndarray | None, K: np.ndarray | None = None,
               depth: np.ndarray | None = None, text: SceneText | None = None,
               engine: str | None = None, resume: bool = False) -> tuple[OpenScene, list]:
    """OpenScene for an H x W x 3 uint8 photo (optional z-depth H x W), or a resume."""
    blobs: list = []
    image_ref = depth_ref = None
    if image is not None:
        image_ref, data = codec.encode_image(image, PHOTO_FORMAT, index=0, quality=PHOTO_QUALITY)
        blobs.append(data)
    if depth is not None:
        depth_ref, arr = codec.array_blob(np.array(depth, dtype=np.float32), index=len(blobs))
        blobs.append(arr)
    msg = OpenScene(request_id=scene_id, scene_id=scene_id, image=image_ref, depth=depth_ref,
                    K=None if K is None else codec.k_list(K), text=text or SceneText(),
                    engine=engine, resume=resume)
    return msg, blobs


def transition(job_id: str, scene_id: str, poses: np.ndarray, fps: float = 24.0,
               preset: str | None = None, **extra) -> tuple[Transition, list]:
    """Transition along N x 4 x 4 camera-to-world poses (OpenCV)."""
    ref, arr = codec.array_blob(np.array(poses, dtype=np.float32), index=0)
    return Transition(job_id=job_id, scene_id=scene_id, poses=ref, fps=fps, preset=preset,
                      **extra), [arr]


def dynamics(job_id: str, scene_id: str, pose: np.ndarray, num_frames: int = 48,
             fps: float = 24.0, arrows: Sequence[Arrow] = (), frozen: np.ndarray | None = None,
             **extra) -> tuple[Dynamics, list]:
    """Dynamics at ``pose``; ``frozen`` (H x W, nonzero = still) is sent only if set."""
    frozen_ref, blobs = _frozen(frozen)
    return Dynamics(job_id=job_id, scene_id=scene_id, pose=codec.pose_list(pose),
                    num_frames=num_frames, fps=fps, arrows=list(arrows), frozen=frozen_ref,
                    **extra), blobs


def select_region(request_id: str, scene_id: str, pose: np.ndarray, arrows: Sequence[Arrow],
                  frozen: np.ndarray | None = None) -> tuple[SelectRegion, list]:
    """SelectRegion: the region ``arrows`` would animate at ``pose`` (as ``dynamics`` sends them)."""
    frozen_ref, blobs = _frozen(frozen)
    return SelectRegion(request_id=request_id, scene_id=scene_id, pose=codec.pose_list(pose),
                        arrows=list(arrows), frozen=frozen_ref), blobs


def _frozen(frozen: np.ndarray | None) -> tuple[ArrayRef | None, list]:
    """The frozen mask as blob 0 (uint8), only when any pixel is set."""
    if frozen is None or not np.any(frozen):
        return None, []
    ref, arr = codec.array_blob(np.array(frozen, dtype=np.uint8), index=0)
    return ref, [arr]


def undo(request_id: str, scene_id: str) -> tuple[Undo, list]:
    return Undo(request_id=request_id, scene_id=scene_id), []
