"""An in-process stand-in for the transport client, for explorer tests and benchmarks.

It answers like a backend would, through the real codec (every message is encoded to
frames and decoded again, blobs included), so the explorer sees exactly what a socket would
deliver. Frames are flat colours whose value encodes the frame index, so tests can tell from
the pixels which frame is on screen.
"""

from __future__ import annotations

import collections

import numpy as np

from protocol.camera import intrinsics
from protocol.codec import array_blob, decode, encode, encode_image, k_list, pose_list, read_array
from protocol.messages import (
    Cancel,
    Credit,
    Dynamics,
    Frame,
    JobAccepted,
    JobDone,
    JobFailed,
    OpenScene,
    PointsDelta,
    SceneOpened,
    Transition,
)
from protocol.transport import Incoming


def frame_color(index: int) -> tuple[int, int, int]:
    return (40 + 8 * (index % 24), 200 - 6 * (index % 24), 90)


class FakeBackend:
    """send/poll/credit like ``protocol.transport.Client``; honours frame credits."""

    def __init__(self, size=(64, 48), credits: int = 8, median_depth: float = 4.0):
        self.size = size
        self.credits = credits
        self.median_depth = median_depth
        self.sent: list = []
        self.credits_granted = 0
        self.outbox: collections.deque = collections.deque()
        self.held_frames: collections.deque = collections.deque()
        self.frames_delivered = 0
        self.hold = False
        """While True, frames are generated but kept back (to test buffering)."""

    # --- the client API ------------------------------------------------------------------

    def send(self, msg, blobs=()):
        msg, blobs = decode(encode(msg, blobs))  # what the wire would carry
        self.sent.append((msg, blobs))
        if isinstance(msg, Credit):
            self.credits += msg.frames
            self.credits_granted += msg.frames
        elif isinstance(msg, OpenScene):
            self._open(msg)
        elif isinstance(msg, Transition):
            poses = read_array(msg.poses, blobs).astype(np.float64)
            self._clip(msg.job_id, "transition", list(poses), msg.fps, loop=False)
        elif isinstance(msg, Dynamics):
            pose = np.asarray(msg.pose).reshape(4, 4)
            self._clip(msg.job_id, "dynamics", [pose] * msg.num_frames, msg.fps, loop=True)
        elif isinstance(msg, Cancel):
            self._reply(JobFailed(job_id=msg.job_id, code="cancelled", message="cancelled"))

    def credit(self, frames: int) -> None:
        if frames > 0:
            self.send(Credit(frames=frames))

    def poll(self, timeout=0.0):
        while self.held_frames and not self.hold:
            is_frame = isinstance(self.held_frames[0].msg, Frame)
            if is_frame and self.credits <= 0:
                break
            self.credits -= int(is_frame)
            self.frames_delivered += int(is_frame)
            self.outbox.append(self.held_frames.popleft())
        return self.outbox.popleft() if self.outbox else None

    # --- helpers -------------------------------------------------------------------------

    def of_type(self, cls) -> list:
        return [(m, b) for m, b in self.sent if isinstance(m, cls)]

    def _reply(self, msg, blobs=(), frame=False):
        decoded = Incoming(*decode(encode(msg, blobs)))
        (self.held_frames if frame else self.outbox).append(decoded)

    def _open(self, msg: OpenScene) -> None:
        w, h = self.size
        K = intrinsics(w, h, 60.0)
        self._reply(SceneOpened(request_id=msg.request_id, scene_id=msg.scene_id,
                                engine="fake", width=w, height=h, K=k_list(K),
                                pose=pose_list(np.eye(4)), median_depth=self.median_depth,
                                num_points=w * h))
        u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
        z = np.full((h, w), self.median_depth)
        xyz = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], -1)
        xyz = xyz.reshape(-1, 3).astype(np.float32)
        rgb = np.zeros((h * w, 3), np.uint8)
        rgb[:, 0] = 200
        rgb[:, 2] = (np.arange(h * w) % w * 255 // w).astype(np.uint8)
        radius = np.full(h * w, 0.75 * self.median_depth / K[0, 0], np.float32)
        halves = np.array_split(np.arange(h * w), 2)
        for i, idx in enumerate(halves):
            xr, xa = array_blob(xyz[idx], 0)
            cr, ca = array_blob(rgb[idx], 1)
            rr, ra = array_blob(radius[idx], 2)
            self._reply(PointsDelta(scene_id=msg.scene_id, chunk=i, last=i == len(halves) - 1,
                                    xyz=xr, rgb=cr, radius=rr,
                                    total_points=int(sum(len(x) for x in halves[: i + 1]))),
                        [xa, ca, ra])

    def _clip(self, job_id, kind, poses, fps, loop):
        w, h = self.size
        K = intrinsics(w, h, 60.0)
        self._reply(JobAccepted(job_id=job_id, kind=kind, num_frames=len(poses),
                                queue_position=0))
        for i, pose in enumerate(poses):
            img = np.empty((h, w, 3), np.uint8)
            img[:] = frame_color(i)
            ref, data = encode_image(img, "jpeg", 0, quality=95)
            self._reply(Frame(job_id=job_id, index=i, num_frames=len(poses),
                              pose=pose_list(pose), K=k_list(K), image=ref, fps=fps, loop=loop),
                        [data], frame=True)
        if not loop:
            self.held_frames.append(Incoming(*decode(encode(JobDone(job_id=job_id,
                                                                    num_frames=len(poses))))))
