"""The backend side of the connection: one ROUTER socket on one I/O thread, many explorers.

The I/O thread does the protocol's housekeeping so the application only sees its messages:

- Handshake: a client's first message is Hello; the answer is Welcome (with the client's
  identity token on loopback), or an Error (``version_mismatch``, ``busy`` when a connection
  cap is reached). Requests before Hello get ``handshake_required``. Connections that have not
  said Hello within ``hello_timeout_s`` are shut down. Hellos are let in at a bounded rate
  (``protocol.admission``): newcomers together, each known client on its own; the rest wait.
- Identity: under CURVE a client is its public key (ZAP's User-Id); on loopback it is the
  token the first Welcome handed out (``protocol.identity``: signed by the backend, so a
  client presents one it was given, never one it made up).
- Occupancy: when every client slot (or every connection of one identity) is taken, a
  Hello evicts the longest-idle connection without work (the application says which have
  work and which identities own something, :class:`Occupancy`): a client that owns scenes
  may evict anyone idle, a newcomer only idle clients that own nothing; so a returning
  owner gets in however many cheap identities hold slots.
- Heartbeats (Paranoid Pirate): Ping every ``heartbeat_s``, answer Pings; a peer silent for
  ``peer_timeout_s`` is dropped (a :class:`PeerGone` event) and its connection shut down.
- Credits: Frames to a peer never exceed the credit it granted; they wait, in order with
  everything sent after them, until credit arrives (:meth:`ServerEndpoint.wait_writable`).
- Bad input: anything undecodable is answered with an Error naming the problem; nothing a
  peer sends can end the I/O thread (every step is guarded and logged with the peer's id).
  A message over ``max_message_bytes`` in one frame is refused by ZeroMQ itself (MAXMSGSIZE,
  the connection is dropped); over it in total, or with too many frames, gets ``too_large``.
- Flooding: at most ``max_queued_per_peer`` of a peer's requests wait for the application;
  beyond that the peer gets ``busy``. A connection sending more than ``max_messages_per_s``
  gets one ``busy`` Error and is shut; what it had queued is dropped unread. Errors the
  application answers (``error``) count against the peer's refusal budget like the
  endpoint's own, so probing costs the prober.
- No absolute path leaves in an Error or JobFailed text (``protocol.errors.public_text``).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import os
import queue
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

import msgspec
import zmq
from zmq.auth.thread import ThreadAuthenticator

from protocol.admission import AdmissionCaps, HelloGate, TokenBucket
from protocol.channel import Channel, next_event
from protocol.codec import Blob, decode, encode
from protocol.errors import ErrorCode, public_text
from protocol.events import Incoming, PeerGone, Released, Welcomed
from protocol.identity import TokenSigner, token_identity
from protocol.keys import ServerKeys
from protocol.limits import DEFAULT_LIMITS, Limits, ProtocolError
from protocol.loopback import check_bind
from protocol.messages import (
    PROTOCOL_VERSION,
    Cancel,
    Credit,
    Error,
    Frame,
    Hello,
    JobFailed,
    Message,
    Ping,
    Pong,
    Welcome,
)

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Conn:
    """One TCP connection, as the socket monitor reported it."""

    fd: int
    accepted_at: float
    greeted: bool = False
    """A Hello came in on it."""


@dataclass(frozen=True)
class _Arrival:
    """A Hello that passed its checks, waiting to be welcomed."""

    peer_id: bytes
    credits: int
    identity: str
    token: str
    conn: _Conn | None


class Occupancy(Protocol):
    """What the application tells the endpoint about its clients (called on the I/O
    thread: answer at once, without blocking)."""

    def owns(self, identity: str) -> bool:
        """Whether ``identity`` owns scenes (saved or open)."""

    def working(self, peer: bytes) -> bool:
        """Whether the connection ``peer`` has work (a job or a scene opening)."""


class NoOccupancy:
    """No identity owns anything and no connection has work (a bare endpoint)."""

    def owns(self, identity: str) -> bool:
        return False

    def working(self, peer: bytes) -> bool:
        return False


@dataclass
class _Peer:
    credits: int
    last_seen: float
    identity: str
    conn: _Conn | None = None
    last_active: float = 0.0
    """When it last sent anything but a heartbeat (its idleness, for eviction)."""
    held: collections.deque = field(default_factory=collections.deque)
    frames_sent: int = 0
    cancelled: set = field(default_factory=set)
    """Jobs the peer cancelled: their frames are dropped, even ones produced after the Cancel."""


@dataclass
class EndpointStats:
    """Counters, for tests and logs."""

    errors_sent: int = 0
    frames_sent: int = 0
    messages_received: int = 0
    peers_gone: int = 0
    connections_shut: int = 0
    """Connections shut by the endpoint (no Hello in time, dropped peers, over the caps)."""
    rate_limited: int = 0
    """Connections shut for sending faster than ``max_messages_per_s``."""
    refusal_limited: int = 0
    """Connections shut for more refused messages than ``max_refusals_per_s``."""
    evicted: int = 0
    """Idle connections shut to make room for a Hello (see :class:`Occupancy`)."""
    tokens_replaced: int = 0
    """Hellos with a token this backend did not issue (given a new identity)."""
    io_faults: int = 0
    """Exceptions caught in the I/O loop (each logged with the peer's id); 0 in a healthy run."""
    hellos_waited: int = 0
    """Hellos that waited for the admission rate (see protocol.admission)."""
    hellos_refused: int = 0
    """Hellos refused because the admission waiting room was full."""


@dataclass(frozen=True)
class EndpointCaps:
    """Bounds on connections and queued requests, so one client cannot take everything."""

    hello_timeout_s: float = 5.0
    """A connection that has not said Hello by then is shut."""
    max_peers: int = 256
    """Handshaken clients at once, all identities together."""
    max_connections_per_client: int = 4
    """Handshaken connections of one identity at once."""
    max_queued_per_peer: int = 64
    """A peer's requests waiting for the application; more are answered ``busy``."""
    max_pending_connections: int = 512
    """Connections not yet said Hello; beyond it the oldest are shut at once."""
    max_messages_per_s: float = 2000.0
    """Messages one connection may send per second (a burst of as many is allowed); a
    connection over it gets one ``busy`` Error and is shut, and what it had queued is dropped
    unread. An explorer sends a few dozen per second."""
    first_burst: float = 32.0
    """Messages a connection may send at once before its Hello is welcomed; once welcomed
    (admission bounds how often that happens) it may send ``max_messages_per_s`` at once."""
    max_refusals_per_s: float = 5.0
    """Messages of one connection answered with an Error (undecodable, refused) per second;
    past that (and a burst of ``refusal_burst``) it is shut like a flooder. A working
    explorer is almost never refused."""
    refusal_burst: float = 20.0
    admission: AdmissionCaps = AdmissionCaps()
    """How fast new clients and reconnections are welcomed (a flooder shut out above comes
    back no faster than this)."""


class ServerEndpoint:
    """Backend side of the connection (ROUTER), serving many explorers at once."""

    def __init__(
        self,
        address: str = "tcp://127.0.0.1:5555",
        *,
        engines: list[str] | tuple[str, ...] = ("classic",),
        default_engine: str | None = None,
        name: str = "dreamjourney-backend",
        heartbeat_s: float = 1.0,
        peer_timeout_s: float = 5.0,
        keys: ServerKeys | None = None,
        limits: Limits = DEFAULT_LIMITS,
        caps: EndpointCaps = EndpointCaps(),
        token_key: bytes | None = None,
        occupancy: Occupancy | None = None,
        report_state: bool = False,
    ):
        """``token_key`` signs the loopback identity tokens (a random key when None: tokens
        then last as long as this endpoint); ``occupancy`` says who owns what and who has
        work, for eviction (none when None); ``report_state`` adds :class:`Welcomed` and
        :class:`Released` events to :meth:`poll` (for ``protocol.endpoint_process``)."""
        check_bind(address, keys is not None)
        if peer_timeout_s <= heartbeat_s:
            raise ValueError("peer_timeout_s must be longer than heartbeat_s")
        self.limits = limits
        self.caps = caps
        self.heartbeat_s = heartbeat_s
        self.peer_timeout_s = peer_timeout_s
        self.protocol_version = PROTOCOL_VERSION
        self.stats = EndpointStats()
        self.curve = keys is not None
        self._welcome_msg = Welcome(
            protocol_version=PROTOCOL_VERSION,
            server=name,
            engines=list(engines),
            default_engine=default_engine or engines[0],
            heartbeat_s=heartbeat_s,
            max_message_bytes=limits.max_message_bytes,
        )
        self._gate = HelloGate(caps.admission)
        self._signer = TokenSigner(token_key)
        self._occupancy = occupancy or NoOccupancy()
        self._report_state = report_state
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._peers: dict[bytes, _Peer] = {}
        self._pending: collections.Counter = collections.Counter()
        self._queued: collections.Counter = collections.Counter()
        self._cond = threading.Condition()
        self._buckets: dict[bytes, TokenBucket] = {}
        """Routing id -> the per-connection message budget."""
        self._refusals: dict[bytes, TokenBucket] = {}
        """Routing id -> its budget of refused messages (see ``max_refusals_per_s``)."""
        self._over_refusals: set[bytes] = set()
        self._banned: dict[bytes, float] = {}
        self._shut_due: collections.deque = collections.deque()
        """(when, routing id, connection) of peers to shut once their last Error is out."""
        """Routing ids shut for flooding -> when; their queued messages are dropped unread."""
        self._conns: dict[int, _Conn] = {}
        """Open TCP connections by fd (a closed fd may be reused: compare _Conn objects)."""
        self._ctx = zmq.Context()
        self._auth: ThreadAuthenticator | None = None
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE, limits.max_message_bytes)
        self._sock.setsockopt(zmq.HANDSHAKE_IVL, int(caps.hello_timeout_s * 1000))
        self._sock.setsockopt(zmq.RCVHWM, 64)
        if keys is not None:
            self._auth = ThreadAuthenticator(self._ctx)
            self._auth.start()
            self._auth.configure_curve(domain="*", location=str(keys.authorized_dir))
            try:
                self._sock.curve_publickey, self._sock.curve_secretkey = keys.load()
            except ValueError:
                self._teardown()
                raise
            self._sock.curve_server = True
        self._monitor = self._sock.get_monitor_socket(zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
        try:
            _bind(self._sock, address)
        except zmq.ZMQError as exc:
            self._teardown()
            raise OSError(f"cannot bind {address}: {exc}") from None
        self.address = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._chan = Channel()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dj-server-io", daemon=True)
        self._thread.start()

    # -- public API --

    def send(self, peer: bytes, msg: Message, blobs: list[Blob] | tuple = ()) -> None:
        """Queue a message to ``peer``; Frames wait for the peer's credit, in order."""
        self._queue_out(peer, msg, blobs, refusal=False)

    def error(self, peer: bytes, code: ErrorCode, message: str, request_id: str | None = None) -> None:
        """Send ``Error(code, message)`` to ``peer`` (from any thread); it counts against the
        peer's refusal budget (``max_refusals_per_s``)."""
        self._queue_out(peer, Error(code=code, message=message, request_id=request_id), (),
                        refusal=True)

    def _queue_out(self, peer: bytes, msg: Message, blobs, refusal: bool) -> None:
        is_frame = isinstance(msg, Frame)
        self.send_encoded(peer, msg.job_id if is_frame else None, encode(_public(msg), blobs),
                          refusal)

    def send_encoded(self, peer: bytes, frame_of: str | None, frames: list, refusal: bool) -> None:
        """Queue a message already encoded (with paths taken out): ``frame_of`` is the job id
        of a Frame, None for other messages; ``refusal`` as for :meth:`error`."""
        if frame_of is not None:
            with self._cond:
                self._pending[peer] += 1
        self._chan.put((peer, frame_of, frames, refusal))

    def discard_frames(self, peer: bytes, job_id: str) -> None:
        """Drop the Frames of ``job_id`` still waiting for credit (a Cancel does this too)."""
        self._chan.put((peer, job_id, None, False))

    def wait_writable(self, peer: bytes, max_pending: int = 2, timeout: float | None = None) -> bool:
        """Block while ``max_pending`` or more Frames to ``peer`` wait for credit.

        Returns False on timeout or when the peer is gone, True when there is room.
        """
        return wait_for_room(self._cond, self._pending, self._peers, peer, max_pending, timeout)

    def is_connected(self, peer: bytes) -> bool:
        with self._cond:
            return peer in self._peers

    def identity(self, peer: bytes) -> str | None:
        """Who ``peer`` is: ``curve:<public key>`` or ``token:<digest>``; None once gone."""
        with self._cond:
            p = self._peers.get(peer)
            return p.identity if p is not None else None

    def poll(self, timeout: float | None = 0.0) -> Incoming | PeerGone | None:
        """Next application event (Incoming or PeerGone), waiting up to ``timeout`` seconds."""
        ev = next_event(self._events, timeout)
        if isinstance(ev, Incoming):
            with self._cond:
                self._queued[ev.peer] -= 1
        return ev

    def alive(self) -> bool:
        """True while the I/O thread runs."""
        return self._thread.is_alive()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._chan.close()
        self._teardown()

    def __enter__(self) -> ServerEndpoint:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _teardown(self) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self._sock.disable_monitor()
        if getattr(self, "_monitor", None) is not None:
            self._monitor.close(linger=0)
        self._sock.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
        self._ctx.term()

    # -- I/O thread --

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        poller.register(self._chan.fileno(), zmq.POLLIN)
        seq = itertools.count()
        next_ping = last_turn = time.monotonic() + self.heartbeat_s
        while not self._stop.is_set():
            try:
                last_turn = self._forgive_own_stall(last_turn)
                ready = dict(poller.poll(timeout=100))
                if self._monitor in ready:
                    self._on_monitor()
                if self._sock in ready:
                    self._receive_some()
                if self._chan.fileno() in ready:
                    for item in self._chan.drain():
                        self._on_outgoing(*item)
                now = time.monotonic()
                if len(self._gate):
                    for arrival in self._gate.ready(now):
                        self._welcome(arrival)
                self._shut_overdue(now)
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
        for _ in range(256):
            try:
                frames = self._recv_bounded()
            except zmq.Again:
                return
            peer_id = frames[0].bytes
            if len(frames) > 1 and not self._over_budget(peer_id, frames):
                try:
                    self._on_message(peer_id, frames)
                except Exception as exc:
                    self.stats.io_faults += 1
                    log.exception("handling a message from peer %s failed", peer_id.hex())
                    self._error(peer_id, "internal",
                                f"the backend failed on this message: {type(exc).__name__}")
            if peer_id in self._over_refusals:
                self._shut_if_over_refusals(peer_id, self._conn_of(peer_id, frames))

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

    def _over_budget(self, peer_id: bytes, frames: list) -> bool:
        """True when ``peer_id`` is over its message rate (it is then shut, once)."""
        if peer_id in self._banned:
            return True
        now = time.monotonic()
        rate = self.caps.max_messages_per_s
        bucket = self._buckets.get(peer_id)
        if bucket is None:  # a new connection starts with a small burst, so reconnecting buys little
            bucket = self._buckets[peer_id] = TokenBucket(rate, rate, min(rate, self.caps.first_burst), now)
        if bucket.take(now):
            return False
        self.stats.rate_limited += 1
        self._shut_out(peer_id, self._conn_of(peer_id, frames), f"more than {rate:g} messages per second")
        return True

    def _conn_of(self, peer_id: bytes, frames: list) -> _Conn | None:
        """The connection a message came in on (its peer's, once welcomed)."""
        peer = self._peers.get(peer_id)
        if peer is not None and peer.conn is not None:
            return peer.conn
        if len(frames) < 2:
            return None
        self._on_monitor()
        return self._conns.get(_source_fd(frames[1]))

    def _shut_if_over_refusals(self, peer_id: bytes, conn: _Conn | None) -> None:
        if peer_id in self._over_refusals:
            self._over_refusals.discard(peer_id)
            self.stats.refusal_limited += 1
            self._shut_out(peer_id, conn, f"more than {self.caps.max_refusals_per_s:g} "
                           "refused messages per second")

    def _shut_out(self, peer_id: bytes, conn: _Conn | None, why: str) -> None:
        """Tell the peer ``why`` (one ``busy`` Error), drop what it has queued unread, and shut
        its connection a moment later (so the Error gets out first)."""
        if peer_id in self._banned:
            return
        now = time.monotonic()
        self._banned[peer_id] = now
        log.warning("peer %s sent %s: disconnecting it", peer_id.hex(), why)
        self._error(peer_id, "busy", f"{why}: disconnected")
        self._shut_due.append((now + 0.2, peer_id, conn))

    def _shut_overdue(self, now: float) -> None:
        while self._shut_due and self._shut_due[0][0] <= now:
            _, peer_id, conn = self._shut_due.popleft()
            if peer_id in self._peers:
                self._drop(peer_id, "over the message rate")
            else:
                self._shut(conn)

    def _forget_idle(self, now: float) -> None:
        """Drop rate buckets of quiet routing ids and old bans (routing ids are per connection)."""
        for peer_id in [p for p, b in self._buckets.items() if now - b.last > 10.0]:
            del self._buckets[peer_id]
        for peer_id in [p for p, b in self._refusals.items() if now - b.last > 10.0]:
            del self._refusals[peer_id]
        for peer_id in [p for p, t in self._banned.items() if now - t > 60.0]:
            del self._banned[peer_id]

    def _on_monitor(self) -> None:
        """Apply the socket monitor's accept/disconnect events, in order."""
        from zmq.utils.monitor import recv_monitor_message

        while True:
            try:
                ev = recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            fd = int(ev["value"])
            if ev["event"] == zmq.EVENT_ACCEPTED:
                self._conns[fd] = _Conn(fd, time.monotonic())
                continue
            conn = self._conns.pop(fd, None)
            if conn is None:
                continue
            gone = [pid for pid, p in self._peers.items() if p.conn is conn]
            for peer_id in gone:  # the client closed its connection: gone now, not at timeout
                self._peers[peer_id].conn = None  # closed already: nothing to shut
                self._drop(peer_id, "connection closed")

    def _shut(self, conn: _Conn | None) -> None:
        """Shut the TCP connection down; ZeroMQ notices and closes it."""
        self._on_monitor()  # a stale fd may already belong to a newer connection
        if conn is None or self._conns.get(conn.fd) is not conn:
            return
        del self._conns[conn.fd]
        try:
            dup = socket.socket(fileno=os.dup(conn.fd))
        except OSError:
            return
        with contextlib.suppress(OSError):
            dup.shutdown(socket.SHUT_RDWR)
        dup.close()
        self.stats.connections_shut += 1

    def _sweep_connections(self, now: float) -> None:
        """Shut connections that never said Hello in time, and the oldest when too many wait."""
        self._on_monitor()
        waiting = sorted((c for c in self._conns.values() if not c.greeted),
                         key=lambda c: c.accepted_at)
        excess = max(0, len(waiting) - self.caps.max_pending_connections)
        for i, conn in enumerate(waiting):
            if i < excess or now - conn.accepted_at > self.caps.hello_timeout_s:
                self._shut(conn)

    def _heartbeat(self, now: float, seq: int) -> None:
        ping = encode(Ping(seq=seq, sent_at=now))
        for peer_id, peer in list(self._peers.items()):
            if now - peer.last_seen > self.peer_timeout_s:
                self._drop(peer_id, f"no message for {self.peer_timeout_s:.1f} s")
            else:
                self._sock.send_multipart([peer_id, *ping])
        self._sweep_connections(now)
        self._forget_idle(now)

    def _drop(self, peer_id: bytes, reason: str, shut_later: bool = False) -> None:
        with self._cond:
            peer = self._peers.pop(peer_id, None)
            self._pending.pop(peer_id, None)
            self._cond.notify_all()
        if peer is not None and shut_later:
            self._shut_due.append((time.monotonic() + 0.2, peer_id, peer.conn))
        elif peer is not None:
            self._shut(peer.conn)
        self.stats.peers_gone += 1
        self._events.put(PeerGone(peer_id, reason))

    def _refuse(self, peer_id: bytes, code: ErrorCode, message: str, request_id: str | None = None) -> None:
        """Answer a peer's bad message with an Error; past ``max_refusals_per_s`` of them the
        peer is shut out (checked by the receive loop once the message is handled)."""
        self._error(peer_id, code, message, request_id)
        self._count_refusal(peer_id)

    def _count_refusal(self, peer_id: bytes) -> None:
        bucket = self._refusals.get(peer_id)
        if bucket is None:
            bucket = self._refusals[peer_id] = TokenBucket(self.caps.max_refusals_per_s,
                                                           self.caps.refusal_burst)
        if not bucket.take(time.monotonic()):
            self._over_refusals.add(peer_id)

    def _error(self, peer_id: bytes, code: ErrorCode, message: str, request_id: str | None = None) -> None:
        self.stats.errors_sent += 1
        self._sock.send_multipart([peer_id, *encode(Error(code=code, message=public_text(message),
                                                          request_id=request_id))])

    def _deliver(self, peer_id: bytes, msg: Message, blobs: list) -> None:
        with self._cond:
            if self._queued[peer_id] >= self.caps.max_queued_per_peer:
                full = True
            else:
                full = False
                self._queued[peer_id] += 1
        if full:
            self._refuse(peer_id, "busy", f"more than {self.caps.max_queued_per_peer} of your "
                        "requests are waiting: slow down", getattr(msg, "job_id", None))
            return
        self._events.put(Incoming(msg, blobs, peer_id))

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
            self._sock.send_multipart([peer_id, *encode(Pong(seq=msg.seq, sent_at=msg.sent_at))])
        elif isinstance(msg, Pong):
            pass
        elif peer is None:
            self._refuse(peer_id, "handshake_required", "send Hello before anything else")
        elif isinstance(msg, Credit):
            peer.credits += msg.frames
            self._flush(peer_id, peer)
        elif isinstance(msg, Cancel):
            # Frames of a cancelled job never go out once its Cancel is here: not those
            # waiting for credit, nor those the job makes before it notices the Cancel.
            if len(peer.cancelled) > 4096:
                peer.cancelled.clear()
            peer.cancelled.add(msg.job_id)
            self._discard(peer_id, peer, msg.job_id)
            self._deliver(peer_id, msg, blobs)
        else:
            self._deliver(peer_id, msg, blobs)

    def _identity_of(self, hello: Hello, frame) -> tuple[str, str]:
        """(identity, token to hand back) of a Hello's sender: its token if this backend
        issued it, else a new one."""
        if self.curve:
            return f"curve:{frame.get('User-Id')}", ""
        token = hello.token
        if not self._signer.valid(token):
            if token:
                self.stats.tokens_replaced += 1
                log.info("a Hello presented a token this backend did not issue: new identity")
            token = self._signer.issue()
        return token_identity(token), token

    def _on_hello(self, peer_id: bytes, hello: Hello, frame) -> None:
        if hello.protocol_version != self.protocol_version:
            self._refuse(
                peer_id,
                "version_mismatch",
                f"this backend speaks protocol version {self.protocol_version}, the explorer "
                f"speaks {hello.protocol_version}: update one of them",
            )
            return
        if hello.credits < 1:
            self._refuse(peer_id, "bad_value", f"initial credits must be >= 1, got {hello.credits}")
            return
        identity, token = self._identity_of(hello, frame)
        self._on_monitor()  # so the connection this Hello came on is known, not a stale fd's
        conn = self._conns.get(_source_fd(frame))
        arrival = _Arrival(peer_id, hello.credits, identity, token, conn)
        verdict = self._gate.offer(identity, arrival, time.monotonic(),
                                   known=self._occupancy.owns(identity))
        if verdict == "welcome":
            self._welcome(arrival)
        elif verdict == "wait":
            self.stats.hellos_waited += 1
            if conn is not None:
                conn.greeted = True  # it said Hello; it is not one of the silent ones
        else:
            self.stats.hellos_refused += 1
            self._refuse(peer_id, "busy", f"{self.caps.admission.max_waiting} clients are "
                        "waiting to connect: retry in a few seconds")

    def _welcome(self, arrival: _Arrival) -> None:
        """Register the peer and answer Welcome, or ``busy`` when a cap is reached."""
        peer_id, identity, conn = arrival.peer_id, arrival.identity, arrival.conn
        if conn is not None and self._conns.get(conn.fd) is not conn:
            return  # its connection closed while it waited
        refusal = None if peer_id in self._peers else self._make_room(identity)
        if refusal is None:
            now = time.monotonic()
            with self._cond:
                self._peers[peer_id] = _Peer(credits=arrival.credits, last_seen=now,
                                             identity=identity, conn=conn, last_active=now)
        if conn is not None:
            conn.greeted = refusal is None
        if refusal is not None:
            self._refuse(peer_id, "busy", refusal)
            return
        if self._report_state:
            self._events.put(Welcomed(peer_id, identity))
        bucket = self._buckets.get(peer_id)
        if bucket is not None:  # welcomed: the full message rate at once from now on
            bucket.burst = bucket.tokens = self.caps.max_messages_per_s
        self._gate.welcomed(identity)
        welcome = self._welcome_msg if not arrival.token else _with_token(self._welcome_msg, arrival.token)
        self._sock.send_multipart([peer_id, *encode(welcome)])

    def _make_room(self, identity: str) -> str | None:
        """Evict an idle connection when the client slots, or this identity's connections,
        are full; the refusal (naming the limit) when none may go."""
        peers = self._peers
        mine = [pid for pid, p in peers.items() if p.identity == identity]
        if len(mine) >= self.caps.max_connections_per_client:
            if self._evict(mine, "another connection of this client needs its place"):
                return None
            return (f"at most {self.caps.max_connections_per_client} connections per client "
                    "(connections.max_connections_per_client), all busy: close one first")
        if len(peers) < self.caps.max_peers:
            return None
        owner = self._occupancy.owns(identity)
        candidates = [pid for pid, p in peers.items()
                      if owner or not self._occupancy.owns(p.identity)]
        if self._evict(candidates, "the backend is full and this connection was the longest idle"):
            return None
        return (f"the backend serves at most {self.caps.max_peers} clients at once "
                "(connections.max_clients) and none of them is idle: retry later")

    def _evict(self, candidates: list[bytes], why: str) -> bool:
        """Shut the longest-idle of ``candidates`` that has no work; False when all have."""
        idle = sorted((self._peers[pid].last_active, pid) for pid in candidates
                      if not self._occupancy.working(pid))
        if not idle:
            return False
        peer_id = idle[0][1]
        log.info("evicting idle client %s: %s", peer_id.hex(), why)
        self.stats.evicted += 1
        self._error(peer_id, "busy", f"disconnected: {why}")
        self._drop(peer_id, "evicted", shut_later=True)  # the Error goes out first
        return True

    def _on_outgoing(self, peer_id: bytes, frame_of: str | None, frames: list | None,
                     refusal: bool) -> None:
        """``frame_of`` is the job id of a Frame (None for other messages); ``frames`` None
        asks to discard that job's held frames; ``refusal`` marks an Error answering one of
        the peer's requests (it counts against the peer's refusal budget)."""
        peer = self._peers.get(peer_id)
        if refusal and peer is not None:
            self._count_refusal(peer_id)
        if peer is None:
            if frame_of is not None:
                with self._cond:
                    self._pending.pop(peer_id, None)
            if frames is not None and frame_of is None:
                self._sock.send_multipart([peer_id, *frames], copy=False)  # e.g. an Error
            return
        if frames is None:
            self._discard(peer_id, peer, frame_of)
        elif frame_of is not None and frame_of in peer.cancelled:
            self._release_pending(peer_id, 1)  # produced before the job saw its Cancel
        else:
            peer.held.append((frame_of, frames))
        self._flush(peer_id, peer)
        if refusal:
            self._shut_if_over_refusals(peer_id, peer.conn)

    def _discard(self, peer_id: bytes, peer: _Peer, job_id: str) -> None:
        kept = collections.deque(item for item in peer.held if item[0] != job_id)
        dropped = len(peer.held) - len(kept)
        if dropped:
            peer.held = kept
            self._release_pending(peer_id, dropped)

    def _release_pending(self, peer_id: bytes, frames: int) -> None:
        with self._cond:
            self._pending[peer_id] -= frames
            self._cond.notify_all()
        if self._report_state:
            self._events.put(Released(peer_id, frames))

    def _flush(self, peer_id: bytes, peer: _Peer) -> None:
        sent_frames = 0
        while peer.held:
            frame_of, frames = peer.held[0]
            is_frame = frame_of is not None
            if is_frame and peer.credits <= 0:
                break
            peer.held.popleft()
            self._sock.send_multipart([peer_id, *frames], copy=False)
            if is_frame:
                peer.credits -= 1
                peer.frames_sent += 1
                sent_frames += 1
        if sent_frames:
            self.stats.frames_sent += sent_frames
            self._release_pending(peer_id, sent_frames)


def wait_for_room(cond: threading.Condition, pending: collections.Counter, peers: dict,
                  peer: bytes, max_pending: int, timeout: float | None) -> bool:
    """Under ``cond``, wait while ``pending[peer]`` is at ``max_pending`` or more: True once
    there is room, False on timeout or when ``peer`` left ``peers``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with cond:
        while pending[peer] >= max_pending:
            if peer not in peers:
                return False
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            cond.wait(left if left is not None else 0.5)
        return peer in peers


def _bind(sock: zmq.Socket, address: str, patience_s: float = 2.0) -> None:
    """Bind, waiting up to ``patience_s`` while the address is in use (a backend that was
    just killed may still be letting its port go)."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            sock.bind(address)
            return
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _source_fd(frame) -> int:
    """The TCP connection's file descriptor a message came in on (-1 when unknown)."""
    try:
        return int(frame.get(zmq.SRCFD))
    except (zmq.ZMQError, AttributeError, TypeError, ValueError):
        return -1


def _with_token(welcome: Welcome, token: str) -> Welcome:
    return msgspec.structs.replace(welcome, token=token)


def _public(msg: Message) -> Message:
    """``msg`` with any absolute path in its text replaced (Error and JobFailed)."""
    if isinstance(msg, (Error, JobFailed)):
        text = public_text(msg.message)
        if text != msg.message:
            return msgspec.structs.replace(msg, message=text)
    return msg
