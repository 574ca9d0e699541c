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
    RegionOutline,
    SceneOpened,
    SelectRegion,
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
            self._clip(msg.job_id, "transition", list(poses), msg.fps, loop=False,
                       codec=msg.frame_codec)
        elif isinstance(msg, Dynamics):
            pose = np.asarray(msg.pose).reshape(4, 4)
            self._clip(msg.job_id, "dynamics", [pose] * msg.num_frames, msg.fps, loop=True,
                       codec=msg.frame_codec)
        elif isinstance(msg, Cancel):
            self._reply(JobFailed(job_id=msg.job_id, code="cancelled", message="cancelled"))
        elif isinstance(msg, SelectRegion):
            self._outline(msg)

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

    def _outline(self, msg: SelectRegion) -> None:
        """The region of a SelectRegion: a 16 px square centred on the first arrow's start."""
        x, y = msg.arrows[0].start
        square = np.array([[x - 8, y - 8], [x + 8, y - 8], [x + 8, y + 8], [x - 8, y + 8]], np.float32)
        ref, data = array_blob(square, 0)
        w, h = self.size
        self._reply(RegionOutline(request_id=msg.request_id, scene_id=msg.scene_id, points=ref,
                                  lengths=[4], coverage=256 / (w * h)), [data])

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

    def _clip(self, job_id, kind, poses, fps, loop, codec="jpeg"):
        w, h = self.size
        K = intrinsics(w, h, 60.0)
        self._reply(JobAccepted(job_id=job_id, kind=kind, num_frames=len(poses),
                                queue_position=0))
        for i, pose in enumerate(poses):
            img = np.empty((h, w, 3), np.uint8)
            img[:] = frame_color(i)
            ref, data = encode_image(img, codec, 0, quality=95)
            self._reply(Frame(job_id=job_id, index=i, num_frames=len(poses),
                              pose=pose_list(pose), K=k_list(K), image=ref, fps=fps, loop=loop),
                        [data], frame=True)
        if not loop:
            self.held_frames.append(Incoming(*decode(encode(JobDone(job_id=job_id,
                                                                    num_frames=len(poses))))))


class PhotoServer:
    """A test backend on a real socket (``ServerEndpoint``): it lifts the photo it receives
    onto a plane at ``depth``, one point per pixel, so the first view reproduces the photo;
    streams ``num_frames``-frame transitions under the explorer's credit (``frame_delay_s``
    apart), each adding ``grow`` points; answers Cancel and Undo. Everything it got is kept
    for the test to check. ``scene_fields`` are set on SceneOpened (depth source, budget)."""

    def __init__(self, depth: float = 4.0, frame_delay_s: float = 0.0, grow: int = 500,
                 scene_fields: dict | None = None):
        import threading

        from protocol.transport import ServerEndpoint

        self.endpoint = ServerEndpoint("tcp://127.0.0.1:*", heartbeat_s=0.5, peer_timeout_s=5.0)
        self.address = self.endpoint.address
        self.depth = depth
        self.frame_delay_s = frame_delay_s
        self.grow = grow
        self.scene_fields = scene_fields or {}
        self.images: list[np.ndarray] = []
        self.transitions: list[tuple[str, np.ndarray]] = []
        self.finished: list[str] = []
        self.cancels: list[str] = []
        self.undos: list[str] = []
        self.frames_sent = 0
        self.peer: bytes | None = None
        self._counts: list[int] = []  # points before each finished transition
        self._points = 0
        self._K: np.ndarray | None = None
        self._cancelled: set[str] = set()
        self._job_thread: threading.Thread | None = None
        """The last job's thread; the next one waits for it, like a GPU backend."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    # --- what the test reads ---------------------------------------------------------------

    def credits_granted(self) -> int:
        """Credit the explorer has granted on the wire beyond its initial window."""
        report = None if self.peer is None else self.endpoint.credit_report(self.peer)
        if report is None:
            return -1
        credits, frames_sent = report
        return credits + frames_sent - self.initial_credits

    initial_credits = 8

    # --- serving ---------------------------------------------------------------------------

    def _run(self) -> None:
        import threading

        from protocol.messages import Cancel, OpenScene, Transition, Undo

        while not self._stop.is_set():
            ev = self.endpoint.poll(0.05)
            if not isinstance(ev, Incoming) or ev.peer is None:
                continue
            self.peer = ev.peer
            if isinstance(ev.msg, OpenScene):
                self._open(ev.peer, ev.msg, ev.blobs)
            elif isinstance(ev.msg, Transition):
                poses = read_array(ev.msg.poses, ev.blobs).astype(np.float64)
                self.transitions.append((ev.msg.job_id, poses))
                self._job_thread = threading.Thread(
                    target=self._stream, args=(ev.peer, ev.msg, poses, self._job_thread),
                    daemon=True)
                self._job_thread.start()
            elif isinstance(ev.msg, Cancel):
                self.cancels.append(ev.msg.job_id)
                self._cancelled.add(ev.msg.job_id)
            elif isinstance(ev.msg, Undo):
                self._undo(ev.peer, ev.msg)

    def _open(self, peer: bytes, msg, blobs) -> None:
        from protocol.codec import decode_image

        image = decode_image(msg.image, blobs)
        self.images.append(image)
        h, w = image.shape[:2]
        K = intrinsics(w, h, 60.0)
        self._K = K
        self.endpoint.send(peer, SceneOpened(
            request_id=msg.request_id, scene_id=msg.scene_id, engine="test", width=w, height=h,
            K=k_list(K), pose=pose_list(np.eye(4)), median_depth=self.depth, num_points=w * h,
            **self.scene_fields))
        u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
        z = np.full((h, w), self.depth)
        xyz = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], -1)
        radius = np.full(w * h, 0.75 * self.depth / K[0, 0], np.float32)
        self._send_points(peer, msg.scene_id, xyz.reshape(-1, 3), image.reshape(-1, 3), radius,
                          None)

    def _send_points(self, peer, scene_id, xyz, rgb, radius, job_id) -> None:
        xr, xa = array_blob(np.ascontiguousarray(xyz, np.float32), 0)
        cr, ca = array_blob(np.ascontiguousarray(rgb, np.uint8), 1)
        rr, ra = array_blob(np.ascontiguousarray(radius, np.float32), 2)
        self._points += len(xyz)
        self.endpoint.send(peer, PointsDelta(scene_id=scene_id, chunk=0, last=True, xyz=xr,
                                             rgb=cr, radius=rr, total_points=self._points,
                                             job_id=job_id), [xa, ca, ra])

    def _stream(self, peer: bytes, msg, poses: np.ndarray, previous) -> None:
        import time

        if previous is not None:
            previous.join()
        n, K = len(poses), self._K
        if K is None:
            raise RuntimeError("a transition came before any scene was opened")
        self.endpoint.send(peer, JobAccepted(job_id=msg.job_id, kind="transition", num_frames=n,
                                             queue_position=0))
        h, w = self.images[-1].shape[:2]
        for i, pose in enumerate(poses):
            while not self.endpoint.wait_writable(peer, 1, timeout=0.05):
                if msg.job_id in self._cancelled or self._stop.is_set():
                    break
            if msg.job_id in self._cancelled or self._stop.is_set():
                self.endpoint.send(peer, JobFailed(job_id=msg.job_id, code="cancelled",
                                                   message="job stopped: cancelled"))
                return
            img = np.empty((h, w, 3), np.uint8)
            img[:] = frame_color(i)
            ref, data = encode_image(img, "jpeg", 0, quality=90)
            self.endpoint.send(peer, Frame(job_id=msg.job_id, index=i, num_frames=n,
                                           pose=pose_list(pose), K=k_list(K), image=ref,
                                           fps=msg.fps), [data])
            self.frames_sent += 1
            time.sleep(self.frame_delay_s)
        self._counts.append(self._points)
        rng = np.random.default_rng(len(self._counts))
        end = poses[-1]
        local = np.c_[rng.uniform(-1, 1, (self.grow, 2)), np.full(self.grow, self.depth)]
        xyz = local @ end[:3, :3].T + end[:3, 3]
        self._send_points(peer, msg.scene_id, xyz, np.full((self.grow, 3), 255),
                          np.full(self.grow, 0.02, np.float32), msg.job_id)
        self.finished.append(msg.job_id)
        self.endpoint.send(peer, JobDone(job_id=msg.job_id, num_frames=n))

    def _undo(self, peer: bytes, msg) -> None:
        from protocol.messages import Undone

        job_id = None
        if self._counts and self.finished:
            job_id = self.finished.pop()
            self._points = self._counts.pop()
        self.undos.append(msg.request_id)
        self.endpoint.send(peer, Undone(request_id=msg.request_id, scene_id=msg.scene_id,
                                        job_id=job_id, total_points=self._points))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.endpoint.close()
