"""The explorer side of the connection: one DEALER socket on one I/O thread."""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time

import zmq

from protocol.channel import Channel, next_event
from protocol.codec import Blob, decode, encode
from protocol.events import Incoming, PeerGone
from protocol.keys import ClientKeys
from protocol.limits import DEFAULT_LIMITS, Limits, ProtocolError
from protocol.messages import PROTOCOL_VERSION, Credit, Error, Hello, Message, Ping, Pong, Welcome
from protocol.multipart import NOBLOCK, more_waiting, recv_parts, send_parts

log = logging.getLogger(__name__)

HANDOVER_S = 0.002
"""The longest received messages wait on the I/O thread for the rest of their batch."""


class HandshakeError(ConnectionError):
    """The backend did not complete the Hello/Welcome handshake."""


class Client:
    """Explorer side of the connection (DEALER). Every method is safe from any thread.

    ``token`` is the loopback identity a previous :attr:`welcome` handed out (``welcome.token``):
    pass it to own the scenes it created. None asks the backend for a new one.
    """

    def __init__(
        self,
        address: str = "tcp://127.0.0.1:5555",
        *,
        credits: int = 8,
        heartbeat_s: float = 1.0,
        peer_timeout_s: float = 5.0,
        keys: ClientKeys | None = None,
        limits: Limits = DEFAULT_LIMITS,
        name: str = "explorer",
        token: str | None = None,
    ):
        if credits < 1:
            raise ValueError(f"credits must be >= 1, got {credits}")
        if peer_timeout_s <= heartbeat_s:
            raise ValueError("peer_timeout_s must be longer than heartbeat_s")
        self.address = address
        self.initial_credits = credits
        self.heartbeat_s = heartbeat_s
        self.peer_timeout_s = peer_timeout_s
        self.limits = limits
        self.name = name
        self.token = token
        self.welcome: Welcome | None = None
        self.rtt_s: float | None = None
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._handshake: queue.SimpleQueue = queue.SimpleQueue()
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        if keys is not None:
            pub, sec, server_pub = keys.load()
            self._sock.curve_publickey, self._sock.curve_secretkey = pub, sec
            self._sock.curve_serverkey = server_pub
        self._sock.connect(address)
        self._chan = Channel()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dj-client-io", daemon=True)
        self._thread.start()

    # -- public API --

    def connect(self, timeout: float = 5.0) -> Welcome:
        """Say Hello and wait for Welcome; raises HandshakeError with the reason."""
        self.send(Hello(protocol_version=PROTOCOL_VERSION, client=self.name,
                        credits=self.initial_credits, token=self.token))
        try:
            reply = self._handshake.get(timeout=timeout)
        except queue.Empty:
            raise HandshakeError(
                f"no answer from the backend at {self.address} within {timeout:.1f} s "
                "(is `dreamjourney serve` running there, and are the keys right?)"
            ) from None
        if isinstance(reply, Error):
            raise HandshakeError(f"backend refused the connection: {reply.message} [{reply.code}]")
        self.welcome = reply
        if reply.token:
            self.token = reply.token
        return reply

    def send(self, msg: Message, blobs: list[Blob] | tuple = ()) -> None:
        """Queue a message for the I/O thread; returns at once."""
        self._chan.put(encode(msg, blobs))

    def credit(self, frames: int) -> None:
        """Allow the backend to send ``frames`` more Frame messages."""
        if frames > 0:
            self.send(Credit(frames=frames))

    def poll(self, timeout: float | None = 0.0) -> Incoming | PeerGone | None:
        """Next event, waiting up to ``timeout`` seconds (None waits forever, 0 never waits)."""
        return next_event(self._events, timeout)

    def close(self) -> None:
        """Stop the I/O thread (it closes the socket it owns) and free the context."""
        self._stop.set()
        self._thread.join()
        self._chan.close()
        self._ctx.term()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- I/O thread --

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        chan_fd = self._chan.fileno()
        poller.register(chan_fd, zmq.POLLIN)
        seq = itertools.count()
        last_seen = time.monotonic()
        next_ping = time.monotonic() + self.heartbeat_s
        gone = False
        turn = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            stall = now - turn - 0.1  # a turn waits at most 0.1 s in poll
            if stall > 0.5:  # this process could not run: that is not the backend's silence
                last_seen += stall
            turn = now
            ready = dict(poller.poll(timeout=int(max(0.0, min(next_ping - now, 0.1)) * 1000)))
            if chan_fd in ready:
                for frames in self._chan.drain():
                    self._send(frames)
            if self._sock in ready and self._receive_some():
                last_seen, gone = time.monotonic(), False
            now = time.monotonic()
            if now >= next_ping:
                self._send(encode(Ping(seq=next(seq), sent_at=now)))
                next_ping = now + self.heartbeat_s
            if not gone and now - last_seen > self.peer_timeout_s:
                if self._sock.poll(0, zmq.POLLIN):
                    # Messages are waiting: this thread was what went quiet (it waited for the
                    # GIL since its poll, e.g. behind a long GL call of the render thread).
                    continue
                gone = True
                reason = f"no message from the backend for {self.peer_timeout_s:.1f} s"
                self._events.put(PeerGone(None, reason))
        self._sock.close(linger=0)

    def _receive_some(self) -> bool:
        """Read what is waiting (at most 256 messages); whether anything came.

        Messages reach the application a batch at a time: a poll() waiting for them wakes
        once per batch, not once per message (fewer GIL hand-offs; benchmarks/transport.py).
        A batch is handed over at least every ``HANDOVER_S``, so that in a busy process,
        where each message waits for the GIL, the first of a batch is not held back by the
        rest (benchmarks/hostile.py: the canary's p99 under a flood, 41 -> 110 ms without it).
        """
        batch: list[Incoming] = []
        since = time.monotonic()
        received = False
        for _ in range(256):
            try:
                frames = recv_parts(self._sock, NOBLOCK)
            except zmq.Again:
                break
            received = True
            try:
                self._on_message(frames, batch)
            except Exception:  # the I/O thread must outlive any one message
                log.exception("handling a message from the backend at %s failed", self.address)
            if self._chan.waiting():  # e.g. credit granted meanwhile: out at once,
                for out in self._chan.drain():  # not after the whole batch
                    self._send(out)
            if batch and time.monotonic() - since > HANDOVER_S:
                self._hand_over(batch)
                since = time.monotonic()
            if not more_waiting(self._sock):
                break
        self._hand_over(batch)
        return received

    def _hand_over(self, batch: list[Incoming]) -> None:
        for event in batch:
            self._events.put(event)
        batch.clear()

    def _send(self, frames: list) -> None:
        # Never block the I/O thread: with no backend connected a DEALER send would wait forever.
        try:
            send_parts(self._sock, frames, NOBLOCK)
        except zmq.Again:
            log.warning("backend at %s not reachable; a message was dropped", self.address)

    def _on_message(self, frames: list, batch: list[Incoming]) -> None:
        try:  # images are read where they are decoded (codec.decode_image), not on this thread
            msg, blobs = decode(frames, self.limits, image_headers=False)
        except ProtocolError as exc:
            log.warning("dropping a bad message from the backend: %s", exc)
            return
        if isinstance(msg, Ping):
            self._send(encode(Pong(seq=msg.seq, sent_at=msg.sent_at)))
        elif isinstance(msg, Pong):
            self.rtt_s = time.monotonic() - msg.sent_at
        elif isinstance(msg, Welcome) or (
            isinstance(msg, Error)
            and msg.code in ("version_mismatch", "handshake_required", "busy")
            and self.welcome is None
        ):
            self._handshake.put(msg)
        else:
            batch.append(Incoming(msg, blobs, None))
