"""Hostile and careless clients shared by tests/test_hostile.py and benchmarks/hostile.py:
connections that never speak, a client that never grants credit, a flood of valid requests."""

from __future__ import annotations

import collections
import socket
import time

import numpy as np
import zmq

from protocol import codec
from protocol.messages import (
    Error,
    JobAccepted,
    JobDone,
    JobFailed,
    OpenScene,
    SceneOpened,
    Transition,
)
from protocol.trajectory import stock_path
from protocol.transport import Client
from tests.helpers import next_msg, raw_dealer, scene


def silent_connections(address: str, reconnect_ivl_ms: int | None = None):
    """400 bare TCP connections (no ZMTP greeting) and 100 DEALERs that never say Hello;
    returns (tcp sockets, zmq context, dealers). ``reconnect_ivl_ms`` None keeps ZeroMQ's
    default, so a DEALER the server shuts comes back as a new silent connection."""
    port = int(address.rsplit(":", 1)[1])
    tcp = [socket.create_connection(("127.0.0.1", port)) for _ in range(400)]
    ctx = zmq.Context()
    dealers = []
    for _ in range(100):
        d = ctx.socket(zmq.DEALER)
        d.setsockopt(zmq.LINGER, 0)
        if reconnect_ivl_ms is not None:
            d.setsockopt(zmq.RECONNECT_IVL, reconnect_ivl_ms)
        d.connect(address)
        dealers.append(d)
    return tcp, ctx, dealers


def never_credits(address: str, result: dict, scene_id: str = "stingy") -> None:
    """Grants one frame of credit, asks for a 16-frame clip, and never grants more."""
    with Client(address, credits=1) as client:
        client.connect(timeout=10)
        img_ref, data = codec.encode_image(scene(2), "png")
        client.send(OpenScene(request_id="o", scene_id=scene_id, image=img_ref), [data])
        t0 = time.monotonic()
        poses_ref, buf = None, None
        while time.monotonic() - t0 < 60:
            ev = client.poll(timeout=1)
            if ev is None:
                continue
            msg = ev.msg
            if isinstance(msg, SceneOpened):
                poses = stock_path("forward", 16, msg.median_depth).astype(np.float32)
                poses_ref, buf = codec.array_blob(poses, 0)
                client.send(Transition(job_id="stuck", scene_id=scene_id, poses=poses_ref), [buf])
                t0 = time.monotonic()
            elif isinstance(msg, JobFailed):
                result["failed"] = msg
                result["after_s"] = time.monotonic() - t0
                return


def flooder(address: str, result: dict, scene_id: str = "flood") -> None:
    """300 valid transitions as fast as possible on one connection."""
    ctx = zmq.Context()
    sock = raw_dealer(ctx, address)
    try:
        img_ref, data = codec.encode_image(scene(3), "png")
        sock.send_multipart(codec.encode(OpenScene(request_id="o", scene_id=scene_id, image=img_ref), [data]))
        while not isinstance(opened := next_msg(sock), SceneOpened):
            pass
        poses = stock_path("forward", 3, opened.median_depth).astype(np.float32)
        ref, buf = codec.array_blob(poses, 0)
        for i in range(300):
            sock.send_multipart(codec.encode(Transition(job_id=f"f{i}", scene_id=scene_id, poses=ref), [buf]))
        ends = collections.Counter()
        answered = set()
        while len(answered) < 300:
            msg = next_msg(sock)
            if isinstance(msg, (JobDone, JobFailed)):
                answered.add(msg.job_id)
                ends[msg.code if isinstance(msg, JobFailed) else "done"] += 1
            elif isinstance(msg, Error) and msg.request_id and msg.request_id.startswith("f"):
                answered.add(msg.request_id)
                ends[f"error:{msg.code}"] += 1
            elif isinstance(msg, JobAccepted):
                ends["accepted"] += 1
        result["ends"] = ends
    except BaseException as exc:
        result["error"] = exc
    finally:
        sock.close()
        ctx.term()
