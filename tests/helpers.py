"""Helpers shared by the server tests: a test photo and a raw DEALER that speaks the wire."""

from __future__ import annotations

import numpy as np
import zmq

from protocol import codec
from protocol.messages import PROTOCOL_VERSION, Hello, Ping, Pong, Welcome


def scene(seed: int = 0, size: int = 64) -> np.ndarray:
    """A ``size`` x ``size`` RGB test photo: colour ramps with seeded noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([xx * 4, yy * 3, (xx + yy) * 2], -1) % 256
    return np.clip(base + rng.integers(-10, 10, (size, size, 3)), 0, 255).astype(np.uint8)


def raw_dealer(ctx: zmq.Context, address: str, hello: bool = True) -> zmq.Socket:
    """A DEALER on ``address`` (20 s receive timeout); with ``hello``, past the handshake."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 20_000)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.connect(address)
    if hello:
        sock.send_multipart(codec.encode(Hello(protocol_version=PROTOCOL_VERSION, credits=1000)))
        assert isinstance(next_msg(sock), Welcome)
    return sock


def next_msg(sock: zmq.Socket):
    """The next message that is not a heartbeat (Pings are answered on the way)."""
    while True:
        msg, _ = codec.decode(sock.recv_multipart())
        if isinstance(msg, Ping):
            sock.send_multipart(codec.encode(Pong(seq=msg.seq, sent_at=msg.sent_at)))
        elif not isinstance(msg, Pong):
            return msg
