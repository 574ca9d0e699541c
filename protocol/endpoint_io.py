"""The server endpoint's I/O thread: its loop, and what the loop does with each message.

:class:`EndpointIO` is the half of :class:`~protocol.endpoint.ServerEndpoint` that only
its I/O thread runs: the poll loop, bounded receives, the glue between the per-peer state
(:class:`~protocol.peer.Peer`), the policing (:class:`~protocol.policing.Police`) and the
TCP connections (:class:`~protocol.connections.Connections`), frames sent under credit,
heartbeats and departures. The handshake (``_on_hello``, ``_welcome``) is the endpoint's.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from typing import Any

import zmq

from protocol.channel import Channel
from protocol.codec import decode, encode
from protocol.connections import Conn, Connections
from protocol.endpoint_caps import EndpointCaps, EndpointStats
from protocol.errors import ErrorCode, public_text
from protocol.events import Incoming, PeerGone, Released
from protocol.ledger import PeerLedger
from protocol.limits import Limits, ProtocolError
from protocol.messages import Cancel, Credit, Error, Hello, Message, Ping, Pong
from protocol.multipart import more_waiting, send_parts
from protocol.peer import Peer
from protocol.policing import Police

log = logging.getLogger("protocol.endpoint")

Outgoing = tuple[bytes, str | None, list | None, bool]
"""(peer, job id of a Frame or None, encoded frames or None to discard that job's Frames,
whether it answers a request with an Error), queued by application threads."""


class EndpointIO:
    """What the endpoint's I/O thread does; the endpoint sets these up before it starts."""

    caps: EndpointCaps
    limits: Limits
    heartbeat_s: float
    peer_timeout_s: float
    stats: EndpointStats
    ledger: PeerLedger
    _sock: zmq.Socket
    _conns: Connections
    _chan: Channel
    _police: Police
    _peers: dict[bytes, Peer]
    """Welcomed peers by routing id (this thread's own)."""
    _events: queue.SimpleQueue[Any]
    _report_state: bool
    _stop: threading.Event

    def _on_hello(self, peer_id: bytes, hello: Hello, frame: Any) -> None:
        raise NotImplementedError

    def _welcome(self, arrival: Any) -> None:
        raise NotImplementedError

    # -- the loop --

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(self._conns.monitor, zmq.POLLIN)
        poller.register(self._chan.fileno(), zmq.POLLIN)
        chan_fd = self._chan.fileno()
        seq = itertools.count()
        next_ping = last_turn = time.monotonic() + self.heartbeat_s
        while not self._stop.is_set():
            try:
                last_turn = self._forgive_own_stall(last_turn)
                ready = dict(poller.poll(timeout=100))
                if self._conns.monitor in ready:
                    self._conns.refresh()
                if self._sock in ready:
                    self._receive_some()
                if chan_fd in ready:
                    self._on_outgoing(self._chan.drain())
                for arrival in self._police.hellos_ready():
                    self._welcome(arrival)
                for peer_id, conn in self._police.due():
                    self._shut_due(peer_id, conn)
                now = time.monotonic()
                if now >= next_ping:
                    next_ping = now + self.heartbeat_s
                    self._heartbeat(now, next(seq))
            except Exception:  # the I/O thread must outlive any single fault
                self.stats.io_faults += 1
                log.exception("transport I/O loop fault (continuing)")

    def _forgive_own_stall(self, last_turn: float) -> float:
        """When this loop itself could not run for a while (its process starved of CPU),
        that time does not count against the peers' silence: their messages wait unread in
        the socket. Returns the time of this turn."""
        now = time.monotonic()
        stall = now - last_turn - 0.1  # a turn waits at most 0.1 s in poll
        if stall > 0.5:
            for peer in self._peers.values():
                peer.last_seen += stall
        return now

    def _receive_some(self) -> None:
        for i in range(256):
            if i and not more_waiting(self._sock):
                return
            try:
                frames = self._recv_bounded()
            except zmq.Again:
                return
            peer_id = frames[0].bytes
            if len(frames) > 1 and self._admitted(peer_id, frames):
                try:
                    self._on_message(peer_id, frames)
                except Exception as exc:
                    self.stats.io_faults += 1
                    log.exception("handling a message from peer %s failed", peer_id.hex())
                    self._error(peer_id, "internal",
                                f"the backend failed on this message: {type(exc).__name__}")
            self._shut_if_over_refusals(peer_id, frames)

    def _recv_bounded(self) -> list:
        """One multipart message; only its routing id when it broke the frame or byte limits
        (answered)."""
        frames = [self._sock.recv(zmq.NOBLOCK, copy=False)]
        total, too_many = 0, False
        while frames[-1].more:
            part = self._sock.recv(copy=False)
            total += len(part)
            if len(frames) > self.limits.max_blobs + 1 or total > self.limits.max_message_bytes:
                too_many = True  # keep draining the parts, but keep none of them
                frames = frames[:1] + [part]
            else:
                frames.append(part)
        if too_many:
            self.stats.messages_received += 1
            self._refuse(frames[0].bytes, "too_large",
                         f"message over {self.limits.max_message_bytes} bytes or "
                         f"{self.limits.max_blobs} blobs")
            return frames[:1]
        return frames

    # -- policing --

    def _admitted(self, peer_id: bytes, frames: list) -> bool:
        """False when ``peer_id`` is shut out, or over its message rate (then shut out)."""
        verdict = self._police.admit(peer_id)
        if verdict == "over_rate":
            self.stats.rate_limited += 1
            rate = self.caps.max_messages_per_s
            self._shut_out(peer_id, self._conn_of(peer_id, frames),
                           f"more than {rate:g} messages per second")
        return verdict == "ok"

    def _shut_if_over_refusals(self, peer_id: bytes, frames: list | None = None) -> None:
        if self._police.take_over_refusals(peer_id):
            self.stats.refusal_limited += 1
            conn = self._conn_of(peer_id, frames or [])
            self._shut_out(peer_id, conn, f"more than {self.caps.max_refusals_per_s:g} "
                           "refused messages per second")

    def _shut_out(self, peer_id: bytes, conn: Conn | None, why: str) -> None:
        """Tell the peer ``why`` (one ``busy`` Error), drop what it has queued unread, and shut
        its connection a moment later (so the Error gets out first)."""
        if self._police.ban(peer_id, conn):
            log.warning("peer %s sent %s: disconnecting it", peer_id.hex(), why)
            self._error(peer_id, "busy", f"{why}: disconnected")

    def _shut_due(self, peer_id: bytes, conn: Conn | None) -> None:
        if peer_id in self._peers:
            self._drop(peer_id, "over the message rate")
        else:
            self._shut(conn)

    def _conn_of(self, peer_id: bytes, frames: list) -> Conn | None:
        """The connection a message came in on (its peer's, once welcomed)."""
        peer = self._peers.get(peer_id)
        if peer is not None and peer.conn is not None:
            return peer.conn
        return self._conns.of_frame(frames[1]) if len(frames) > 1 else None

    def _refuse(self, peer_id: bytes, code: ErrorCode, message: str, request_id: str | None = None) -> None:
        """Answer a peer's bad message with an Error; past ``max_refusals_per_s`` of them the
        peer is shut out (checked once the message is handled)."""
        self._error(peer_id, code, message, request_id)
        self._police.refused(peer_id)

    def _error(self, peer_id: bytes, code: ErrorCode, message: str, request_id: str | None = None) -> None:
        self.stats.errors_sent += 1
        send_parts(self._sock, [peer_id, *encode(Error(code=code, message=public_text(message),
                                                        request_id=request_id))], copy=True)

    # -- incoming messages --

    def _on_message(self, peer_id: bytes, frames: list) -> None:
        self.stats.messages_received += 1
        peer = self._peers.get(peer_id)
        if peer is not None:
            peer.last_seen = time.monotonic()
        try:
            msg, blobs = decode(frames[1:], self.limits)
        except ProtocolError as exc:
            self._refuse(peer_id, exc.code, str(exc), exc.request_id)
            return
        if peer is not None and not isinstance(msg, (Ping, Pong)):
            peer.last_active = peer.last_seen
        if isinstance(msg, Hello):
            self._on_hello(peer_id, msg, frames[1])
        elif isinstance(msg, Ping):
            send_parts(self._sock, [peer_id, *encode(Pong(seq=msg.seq, sent_at=msg.sent_at))], copy=True)
        elif isinstance(msg, Pong):
            pass
        elif peer is None:
            self._refuse(peer_id, "handshake_required", "send Hello before anything else")
        elif isinstance(msg, Credit):
            peer.credits += msg.frames
            self._flush(peer)
        elif isinstance(msg, Cancel):
            # Frames of a cancelled job never go out once its Cancel is here: not those
            # waiting for credit, nor those the job makes before it notices the Cancel.
            self._release(peer_id, peer.cancel(msg.job_id))
            self._deliver(peer_id, msg, blobs)
        else:
            self._deliver(peer_id, msg, blobs)

    def _deliver(self, peer_id: bytes, msg: Message, blobs: list) -> None:
        if not self.ledger.try_queue(peer_id):
            self._refuse(peer_id, "busy", f"more than {self.caps.max_queued_per_peer} of your "
                         "requests are waiting: slow down", getattr(msg, "job_id", None))
            return
        self._events.put(Incoming(msg, blobs, peer_id))

    # -- outgoing messages --

    def _on_outgoing(self, items: list[Outgoing]) -> None:
        """What application threads queued, in order. A peer is flushed once at the end, so
        a job waiting for room wakes once per batch, not once per frame; but at once after an
        Error that answers its request, so that when that Error puts it over its refusal
        budget, the notice it is shut out follows that Error, not the whole batch."""
        touched: dict[bytes, Peer] = {}
        for peer_id, frame_of, frames, refusal in items:
            peer = self._peers.get(peer_id)
            if peer is None:
                if frame_of is not None:
                    self.ledger.drop_pending(peer_id)
                if frames is not None and frame_of is None:
                    send_parts(self._sock, [peer_id, *frames])  # e.g. an Error
                continue
            if frames is None:
                self._release(peer_id, peer.discard(frame_of))
            elif not peer.hold(frame_of, frames):
                self._release(peer_id, 1)  # produced before the job saw its Cancel
            if refusal:
                self._police.refused(peer_id)
                self._flush(peer)
                self._shut_if_over_refusals(peer_id)
            else:
                touched[peer_id] = peer
        for peer in touched.values():
            self._flush(peer)

    def _flush(self, peer: Peer) -> None:
        """Send what ``peer``'s credit allows of what is held for it."""
        ready, frames = peer.sendable()
        sock, rid = self._sock, peer.rid
        for parts in ready:
            send_parts(sock, [rid, *parts])
        if frames:
            self.stats.frames_sent += frames
            self._release(peer.rid, frames)

    def _release(self, peer_id: bytes, frames: int) -> None:
        if not frames:
            return
        self.ledger.released(peer_id, frames)
        if self._report_state:
            self._events.put(Released(peer_id, frames))

    # -- liveness and departures --

    def _heartbeat(self, now: float, seq: int) -> None:
        ping = encode(Ping(seq=seq, sent_at=now))
        for peer in list(self._peers.values()):
            if now - peer.last_seen > self.peer_timeout_s:
                self._drop(peer.rid, f"no message for {self.peer_timeout_s:.1f} s")
            else:
                send_parts(self._sock, [peer.rid, *ping], copy=True)
        self.stats.connections_shut += self._conns.sweep(self.caps.hello_timeout_s,
                                                         self.caps.max_pending_connections)
        self._police.forget_idle(keep=self._peers)

    def _drop(self, peer_id: bytes, reason: str, shut_later: bool = False) -> None:
        peer = self._peers.pop(peer_id, None)
        self.ledger.gone(peer_id)
        if peer is not None and shut_later:
            self._police.shut_later(peer_id, peer.conn)
        elif peer is not None:
            self._shut(peer.conn)
        self.stats.peers_gone += 1
        self._events.put(PeerGone(peer_id, reason))

    def _on_closed(self, conn: Conn) -> None:
        """The client closed ``conn``: its peers are gone now, not at their timeout."""
        for peer in [p for p in self._peers.values() if p.conn is conn]:
            peer.conn = None  # closed already: nothing to shut
            self._drop(peer.rid, "connection closed")

    def _shut(self, conn: Conn | None) -> None:
        if self._conns.shut(conn):
            self.stats.connections_shut += 1
