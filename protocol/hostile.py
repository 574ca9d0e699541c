"""Hostile messages for tests and benchmarks: every kind of bad input a peer can send.

Each generator returns ``(kind, frames)`` where ``frames`` is a multipart message that the
decoder must refuse (so the backend must answer it with an Error). Mutations that happen to
stay valid are filtered out with the decoder itself, under the limits the backend runs with.
"""

from __future__ import annotations

import io
import math

import msgspec
import numpy as np

from protocol import codec
from protocol.limits import Limits, ProtocolError
from protocol.messages import (
    ALL_MESSAGES,
    PROTOCOL_VERSION,
    ArrayRef,
    Arrow,
    Cancel,
    ClientQueue,
    Credit,
    Dynamics,
    Error,
    Frame,
    Hello,
    ImageRef,
    JobAccepted,
    JobDone,
    JobFailed,
    Message,
    OpenScene,
    Ping,
    PointsDelta,
    PointsMotion,
    Pong,
    Progress,
    RegionOutline,
    SceneOpened,
    SceneText,
    SelectRegion,
    Status,
    StatusReply,
    Transition,
    Undo,
    Undone,
    Welcome,
    WorkerState,
)

_enc = msgspec.msgpack.Encoder()
EYE = tuple(np.eye(4).ravel().tolist())
K = (100.0, 0.0, 32.0, 0.0, 100.0, 32.0, 0.0, 0.0, 1.0)


def valid_messages() -> list[tuple[Message, list[codec.Blob]]]:
    """One valid instance of every message type, with its blobs."""
    img_ref, img = codec.encode_image(np.zeros((8, 8, 3), np.uint8), "jpeg")
    poses_ref, poses = codec.array_blob(np.tile(np.eye(4, dtype=np.float32), (3, 1, 1)), 0)
    xyz, xyz_b = codec.array_blob(np.zeros((2, 3), np.float32), 0)
    rgb, rgb_b = codec.array_blob(np.zeros((2, 3), np.uint8), 1)
    rad, rad_b = codec.array_blob(np.zeros(2, np.float32), 2)
    idx, idx_b = codec.array_blob(np.arange(2, dtype=np.int32), 0)
    mot, mot_b = codec.array_blob(np.zeros((2, 4), np.float32), 1)
    out: list[tuple[Message, list[codec.Blob]]] = [
        (Hello(protocol_version=PROTOCOL_VERSION), []),
        (Welcome(protocol_version=PROTOCOL_VERSION, server="s", engines=["classic"], default_engine="classic",
                 heartbeat_s=1.0, max_message_bytes=1), []),
        (Ping(seq=1, sent_at=0.5), []),
        (Pong(seq=1, sent_at=0.5), []),
        (Credit(frames=3), []),
        (Error(code="busy", message="m"), []),
        (OpenScene(request_id="r", scene_id="s", image=img_ref, K=K,
                   text=SceneText(style="a", content="b")), [img]),
        (SceneOpened(request_id="r", scene_id="s", engine="classic", width=8, height=8, K=K,
                     pose=EYE, median_depth=2.0, num_points=4), []),
        (PointsDelta(scene_id="s", chunk=0, last=True, xyz=xyz, rgb=rgb, radius=rad,
                     total_points=2), [xyz_b, rgb_b, rad_b]),
        (PointsMotion(scene_id="s", index=idx, motion=mot, regions=["water"], total_points=2),
         [idx_b, mot_b]),
        (Transition(job_id="j", scene_id="s", poses=poses_ref, fps=24.0, prompt="p"), [poses]),
        (Dynamics(job_id="j", scene_id="s", pose=EYE, num_frames=8,
                  arrows=[Arrow(start=(1.0, 2.0), vector=(0.5, 0.0))]), []),
        (SelectRegion(request_id="r", scene_id="s", pose=EYE,
                      arrows=[Arrow(start=(1.0, 2.0), vector=(0.5, 0.0))]), []),
        (RegionOutline(request_id="r", scene_id="s", points=xyz, lengths=[2], coverage=0.1), [xyz_b]),
        (Cancel(job_id="j"), []),
        (Undo(request_id="r", scene_id="s"), []),
        (Undone(request_id="r", scene_id="s", job_id="j", total_points=3), []),
        (JobAccepted(job_id="j", kind="transition", num_frames=3, queue_position=0), []),
        (Progress(job_id="j", stage="grow", step=1, total=2), []),
        (Frame(job_id="j", index=0, num_frames=3, pose=EYE, K=K, image=img_ref, fps=24.0), [img]),
        (JobDone(job_id="j", num_frames=3, timings={"total": 1.0}), []),
        (JobFailed(job_id="j", code="busy", message="m"), []),
        (Status(request_id="r"), []),
        (StatusReply(request_id="r", cluster="", workers=[WorkerState(
            name="local-0", node="h", device="cpu", engines=["classic"], state="idle")],
            clients=[ClientQueue(client="token:ab", running=0, queued=0)], jobs_running=0,
            jobs_queued=0), []),
    ]
    assert {type(m) for m, _ in out} == set(ALL_MESSAGES)
    return out


def refused(frames: list[bytes], limits: Limits) -> bool:
    """True when the decoder refuses ``frames`` (so the backend must answer with an Error)."""
    try:
        codec.decode(frames, limits)
    except ProtocolError:
        return True
    return False


class HostileMessages:
    """Generators of messages the backend must refuse, one method per kind."""

    def __init__(self, limits: Limits, seed: int = 0):
        self.limits = limits
        self.rng = np.random.default_rng(seed)
        self.valid = [(codec.encode(m, b)) for m, b in valid_messages()]
        self._png_bomb = _png_bomb(4096)
        self._jpeg = codec.encode_image(np.full((16, 16, 3), 128, np.uint8), "jpeg")[1]

    def kinds(self) -> list[str]:
        return [name[5:] for name in dir(self) if name.startswith("kind_")]

    def make(self, kind: str) -> list[bytes]:
        """One refused message of ``kind`` (mutations retried until the decoder refuses)."""
        make = getattr(self, f"kind_{kind}")
        for _ in range(100):
            frames = [bytes(f) for f in make()]
            if refused(frames, self.limits):
                return frames
        raise RuntimeError(f"could not make a refused {kind} message")

    HEAVY = {"oversized_multipart": 200, "png_bomb": 300, "deep_nesting": 300, "jpeg_bomb": 600}
    """Kinds that cost much to send (big frames, 10^4-level nesting), with their most per batch."""

    def batch(self, n: int) -> list[tuple[str, list[bytes]]]:
        """``n`` messages, kinds in turn; heavy kinds at most ``HEAVY[kind]`` times, drawn
        from a few pre-made instances (the same bytes sent again cost no memory here)."""
        kinds, used = self.kinds(), dict.fromkeys(self.HEAVY, 0)
        out: list[tuple[str, list[bytes]]] = []
        pools = {k: [self.make(k) for _ in range(8)] for k in self.HEAVY}
        i = 0
        while len(out) < n:
            kind = kinds[i % len(kinds)]
            i += 1
            if kind in used:
                if used[kind] >= self.HEAVY[kind]:
                    continue
                used[kind] += 1
                out.append((kind, pools[kind][used[kind] % len(pools[kind])]))
            else:
                out.append((kind, self.make(kind)))
        return out

    # -- kinds --

    def _pick(self) -> list:
        return self.valid[int(self.rng.integers(len(self.valid)))]

    def kind_bitflip(self) -> list:
        frames = list(self._pick())
        header = bytearray(frames[0])
        for _ in range(int(self.rng.integers(1, 4))):
            i = int(self.rng.integers(len(header) * 8))
            header[i // 8] ^= 1 << (i % 8)
        return [bytes(header), *frames[1:]]

    def kind_splice(self) -> list:
        a, b = self._pick()[0], self._pick()[0]
        i, j = int(self.rng.integers(1, len(a))), int(self.rng.integers(0, len(b)))
        return [a[:i] + b[j:]]

    def kind_truncated(self) -> list:
        a = self._pick()
        return [a[0][: int(self.rng.integers(0, len(a[0])))], *a[1:]]

    def kind_random_bytes(self) -> list:
        return [self.rng.bytes(int(self.rng.integers(1, 200)))]

    def kind_invalid_utf8(self) -> list:
        bad = bytes(self.rng.integers(0x80, 0x100, 3, dtype=np.uint8)) + b"\xff"
        return [b"\x83\xa4type\xaaopen_scene\xaarequest_id" + bytes([0xA0 | len(bad)]) + bad
                + b"\xa8scene_id\xa1s"]

    def kind_deep_nesting(self) -> list:
        depth = int(self.rng.integers(1000, 50_000))
        if self.rng.random() < 0.5:  # nested before the tag
            return [b"\x82\xa1x" + b"\x81\xa1a" * depth + b"\x01" + b"\xa4type\xa5hello"]
        return [b"\x83\xa4type\xaaopen_scene\xaarequest_id\xa1r\xa4text" + b"\x91" * depth + b"\x01"]

    def kind_jpeg_bomb(self) -> list:
        data = bytearray(self._jpeg)
        sof = data.find(b"\xff\xc0")
        side = int(self.rng.integers(20_000, 65_000))
        data[sof + 5 : sof + 9] = side.to_bytes(2, "big") * 2  # height, width
        ref = ImageRef(blob=0, codec="jpeg", width=side, height=side)
        return codec.encode(OpenScene(request_id="r", scene_id="bomb", image=ref), [bytes(data)])

    def kind_png_bomb(self) -> list:
        ref = ImageRef(blob=0, codec="png", width=4096, height=4096)
        return codec.encode(OpenScene(request_id="r", scene_id="bomb", image=ref), [self._png_bomb])

    def kind_oversized_multipart(self) -> list:
        part = self.limits.max_message_bytes // 3 + 1
        return [codec.encode(Cancel(job_id="j"))[0], b"\0" * part, b"\0" * part, b"\0" * part]

    def kind_too_many_frames(self) -> list:
        return [codec.encode(Cancel(job_id="j"))[0]] + [b"x"] * (self.limits.max_blobs + 2)

    def kind_non_finite(self) -> list:
        bad = [math.nan, math.inf, -math.inf, 1e300][int(self.rng.integers(4))]
        pick = int(self.rng.integers(4))
        if pick == 0:
            ref, buf = codec.array_blob(np.tile(np.eye(4, dtype=np.float32), (3, 1, 1)), 0)
            return codec.encode(Transition(job_id="j", scene_id="s", poses=ref, fps=bad), [buf])
        if pick == 1:
            pose = list(EYE)
            pose[int(self.rng.integers(16))] = bad
            return codec.encode(Dynamics(job_id="j", scene_id="s", pose=tuple(pose)))
        if pick == 2:
            return codec.encode(Ping(seq=1, sent_at=bad))
        k = list(K)
        k[int(self.rng.integers(9))] = bad
        return codec.encode(OpenScene(request_id="r", scene_id="s", K=tuple(k)))

    def kind_wrong_tuple_length(self) -> list:
        pick = int(self.rng.integers(3))
        n = int(self.rng.integers(0, 30))
        if pick == 0:
            n = n if n != 16 else 15
            return codec.encode(Dynamics(job_id="j", scene_id="s", pose=(0.0,) * n))
        if pick == 1:
            n = n if n != 9 else 8
            return codec.encode(OpenScene(request_id="r", scene_id="s", K=(1.0,) * n))
        n = n if n != 2 else 1
        arrow = {"start": [1.0] * n, "vector": [0.0, 1.0]}
        return [_enc.encode({"type": "dynamics", "job_id": "j", "scene_id": "s",
                             "pose": list(EYE), "arrows": [arrow]})]

    def kind_shape_overflow(self) -> list:
        shape = [[2**32, 2**32], [2**31, 2**31], [-1, 4, 4], [2**20, 2**20, 4]][int(self.rng.integers(4))]
        header = _enc.encode({"type": "transition", "job_id": "j", "scene_id": "s",
                              "poses": {"blob": 0, "dtype": "float32", "shape": shape}})
        return [header, b"\0" * 64]

    def kind_unknown_type(self) -> list:
        return [_enc.encode({"type": f"nope{int(self.rng.integers(1000))}", "x": 1})]

    def kind_wrong_types(self) -> list:
        return [_enc.encode({"type": "open_scene", "request_id": 5, "scene_id": [1]})]

    def kind_huge_string(self) -> list:
        return codec.encode(Transition(job_id="j", scene_id="s" * 5000,
                                       poses=ArrayRef(blob=0, dtype="float32", shape=[2, 4, 4])),
                            [b"\0" * 128])


def _png_bomb(side: int) -> bytes:
    """A small PNG (tens of KB) that decodes to side x side x 3 zeros."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (side, side)).save(buf, format="PNG", compress_level=9)
    return buf.getvalue()


__all__ = ["HostileMessages", "refused", "valid_messages"]
