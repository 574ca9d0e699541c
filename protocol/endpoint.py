"""The backend side of the connection: one ROUTER socket on one I/O thread, many explorers.

Shaped like the ZeroMQ guide's Majordomo broker: the loop and the handshake are here, the
rest in modules with one job each, all owned by the I/O thread:

- :class:`~protocol.peer.Peer`: one welcomed client (credit, messages held back for credit,
  cancelled jobs, when it was last heard from);
- :class:`~protocol.policing.Police`: rate limits, refusal budgets, bans and Hello admission,
  driven by a clock;
- :class:`~protocol.connections.Connections`: the TCP connections under the socket (the
  silent ones shut, those of dropped peers shut);
- :class:`~protocol.ledger.PeerLedger`: what application threads may ask (who is connected
  and as whom, Frames waiting for credit, requests waiting for the application).

What the endpoint does so the application only sees its messages:

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

import itertools
import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import zmq
from zmq.auth.thread import ThreadAuthenticator

from protocol.channel import Channel, next_event
from protocol.codec import Blob, decode, encode
from protocol.connections import Conn, Connections
from protocol.endpoint_caps import DEFAULT_CAPS, EndpointCaps, EndpointStats, NoOccupancy, Occupancy
from protocol.errors import ErrorCode, public_text
from protocol.events import Incoming, PeerGone, Released, Welcomed
from protocol.identity import TokenSigner, token_identity
from protocol.keys import ServerKeys
from protocol.ledger import PeerLedger
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
from protocol.peer import Peer
from protocol.policing import Police

__all__ = ["EndpointCaps", "EndpointStats", "NoOccupancy", "Occupancy", "ServerEndpoint",
           "public_message"]

log = logging.getLogger(__name__)

COPY_BELOW_BYTES = 1 << 20
"""Blobs smaller than this are copied into ZeroMQ's messages (a memcpy without the GIL)
rather than sent zero-copy: every zero-copy message is handed back through pyzmq's
garbage-collector thread, one more thread taking the GIL per frame, which costs more than
copying a JPEG frame (``benchmarks/transport.py``: about 15% more frames per second)."""

Outgoing = tuple[bytes, str | None, list | None, bool]
"""(peer, job id of a Frame or None, encoded frames or None to discard that job's Frames,
whether it answers a request with an Error)."""


@dataclass(frozen=True)
class _Arrival:
    """A Hello that passed its checks, waiting to be welcomed."""

    peer_id: bytes
    credits: int
    identity: str
    token: str
    conn: Conn | None


class ServerEndpoint:
    """Backend side of the connection (ROUTER), serving many explorers at once."""

    def __init__(
        self,
        address: str = "tcp://127.0.0.1:5555",
        *,
        engines: Sequence[str] = ("classic",),
        default_engine: str | None = None,
        name: str = "dreamjourney-backend",
        heartbeat_s: float = 1.0,
        peer_timeout_s: float = 5.0,
        keys: ServerKeys | None = None,
        limits: Limits = DEFAULT_LIMITS,
        caps: EndpointCaps = DEFAULT_CAPS,
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
        self.ledger = PeerLedger(caps.max_queued_per_peer)
        self._welcome_msg = Welcome(
            protocol_version=PROTOCOL_VERSION, server=name, engines=list(engines),
            default_engine=default_engine or engines[0], heartbeat_s=heartbeat_s,
            max_message_bytes=limits.max_message_bytes)
        self._signer = TokenSigner(token_key)
        self._occupancy: Occupancy = occupancy or NoOccupancy()
        self._report_state = report_state
        self._events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._peers: dict[bytes, Peer] = {}
        """Welcomed peers by routing id (the I/O thread's own)."""
        self._police = Police(caps)
        self._ctx = zmq.Context()
        self._auth: ThreadAuthenticator | None = None
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE, limits.max_message_bytes)
        self._sock.setsockopt(zmq.HANDSHAKE_IVL, int(caps.hello_timeout_s * 1000))
        self._sock.setsockopt(zmq.RCVHWM, 64)
        self._sock.copy_threshold = COPY_BELOW_BYTES
        self._conns = Connections(self._sock, self._on_closed)
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
        try:
            _bind(self._sock, address)
        except zmq.ZMQError as exc:
            self._teardown()
            raise OSError(f"cannot bind {address}: {exc}") from None
        self.address: str = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._chan = Channel()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dj-server-io", daemon=True)
        self._thread.start()

    # -- public API (any thread) --

    def send(self, peer: bytes, msg: Message, blobs: Sequence[Blob] = ()) -> None:
        """Queue a message to ``peer``; Frames wait for the peer's credit, in order."""
        frame_of = msg.job_id if isinstance(msg, Frame) else None
        self.send_encoded(peer, frame_of, encode(public_message(msg), blobs), refusal=False)

    def error(self, peer: bytes, code: ErrorCode, message: str, request_id: str | None = None) -> None:
        """Send ``Error(code, message)`` to ``peer`` (from any thread); it counts against the
        peer's refusal budget (``max_refusals_per_s``)."""
        msg = Error(code=code, message=public_text(message), request_id=request_id)
        self.send_encoded(peer, None, encode(msg), refusal=True)

    def send_encoded(self, peer: bytes, frame_of: str | None, frames: list, refusal: bool) -> None:
        """Queue a message already encoded (with paths taken out): ``frame_of`` is the job id
        of a Frame, None for other messages; ``refusal`` as for :meth:`error`."""
        if frame_of is not None:
            self.ledger.frame_queued(peer)
        self._chan.put((peer, frame_of, frames, refusal))

    def discard_frames(self, peer: bytes, job_id: str) -> None:
        """Drop the Frames of ``job_id`` still waiting for credit (a Cancel does this too)."""
        self._chan.put((peer, job_id, None, False))

    def wait_writable(self, peer: bytes, max_pending: int = 2, timeout: float | None = None) -> bool:
        """Block while ``max_pending`` or more Frames to ``peer`` wait for credit.

        Returns False on timeout or when the peer is gone, True when there is room.
        """
        return self.ledger.wait_room(peer, max_pending, timeout)

    def is_connected(self, peer: bytes) -> bool:
        return self.ledger.is_connected(peer)

    def identity(self, peer: bytes) -> str | None:
        """Who ``peer`` is: ``curve:<public key>`` or ``token:<digest>``; None once gone."""
        return self.ledger.identity(peer)

    def credit_report(self, peer: bytes) -> tuple[int, int] | None:
        """(credit left, Frames sent) of ``peer`` as the I/O thread last left them (a
        snapshot for tests and logs); None when it is not connected."""
        p = self._peers.get(peer)
        return None if p is None else (p.credits, p.frames_sent)

    def poll(self, timeout: float | None = 0.0) -> Incoming | PeerGone | Welcomed | Released | None:
        """Next application event (Incoming or PeerGone), waiting up to ``timeout`` seconds."""
        ev = next_event(self._events, timeout)
        if isinstance(ev, Incoming) and ev.peer is not None:
            self.ledger.taken(ev.peer)
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

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _teardown(self) -> None:
        self._conns.close()
        self._sock.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
        self._ctx.term()

    # -- the I/O loop --

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
                    for item in self._chan.drain():
                        self._on_outgoing(*item)
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
        for _ in range(256):
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
        self._sock.send_multipart([peer_id, *encode(Error(code=code, message=public_text(message),
                                                          request_id=request_id))])

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
            self._sock.send_multipart([peer_id, *encode(Pong(seq=msg.seq, sent_at=msg.sent_at))])
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

    # -- the handshake --

    def _identity_of(self, hello: Hello, frame: Any) -> tuple[str, str]:
        """(identity, token to hand back) of a Hello's sender: its token if this backend
        issued it, else a new one."""
        if self.curve:
            return f"curve:{frame.get('User-Id')}", ""
        token = hello.token
        if token is None or not self._signer.valid(token):
            if token:
                self.stats.tokens_replaced += 1
                log.info("a Hello presented a token this backend did not issue: new identity")
            token = self._signer.issue()
        return token_identity(token), token

    def _on_hello(self, peer_id: bytes, hello: Hello, frame: Any) -> None:
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
        conn = self._conns.of_frame(frame)
        arrival = _Arrival(peer_id, hello.credits, identity, token, conn)
        verdict = self._police.offer_hello(identity, arrival, known=self._occupancy.owns(identity))
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
        if conn is not None and not self._conns.is_open(conn):
            return  # its connection closed while it waited
        old = self._peers.get(peer_id)
        refusal = None if old is not None else self._make_room(identity)
        if conn is not None:
            conn.greeted = refusal is None
        if refusal is not None:
            self._refuse(peer_id, "busy", refusal)
            return
        if old is not None:  # a second Hello on one connection starts it afresh
            self._release(peer_id, sum(f is not None for f, _ in old.held))
        now = time.monotonic()
        self._peers[peer_id] = Peer(peer_id, identity, arrival.credits, now, conn, last_active=now)
        self.ledger.welcomed(peer_id, identity)
        if self._report_state:
            self._events.put(Welcomed(peer_id, identity))
        self._police.welcomed(peer_id)
        self._police.hello_welcomed(identity)
        welcome = self._welcome_msg
        if arrival.token:
            welcome = msgspec.structs.replace(welcome, token=arrival.token)
        self._sock.send_multipart([peer_id, *encode(welcome)])

    def _make_room(self, identity: str) -> str | None:
        """Evict an idle connection when the client slots, or this identity's connections,
        are full; the refusal (naming the limit) when none may go."""
        peers = self._peers
        mine = [p for p in peers.values() if p.identity == identity]
        if len(mine) >= self.caps.max_connections_per_client:
            if self._evict(mine, "another connection of this client needs its place"):
                return None
            return (f"at most {self.caps.max_connections_per_client} connections per client "
                    "(connections.max_connections_per_client), all busy: close one first")
        if len(peers) < self.caps.max_peers:
            return None
        owner = self._occupancy.owns(identity)
        candidates = [p for p in peers.values() if owner or not self._occupancy.owns(p.identity)]
        if self._evict(candidates, "the backend is full and this connection was the longest idle"):
            return None
        return (f"the backend serves at most {self.caps.max_peers} clients at once "
                "(connections.max_clients) and none of them is idle: retry later")

    def _evict(self, candidates: list[Peer], why: str) -> bool:
        """Shut the longest-idle of ``candidates`` that has no work; False when all have."""
        idle = [p for p in candidates if not self._occupancy.working(p.rid)]
        if not idle:
            return False
        victim = min(idle, key=lambda p: (p.last_active, p.rid))
        log.info("evicting idle client %s: %s", victim.rid.hex(), why)
        self.stats.evicted += 1
        self._error(victim.rid, "busy", f"disconnected: {why}")
        self._drop(victim.rid, "evicted", shut_later=True)  # the Error goes out first
        return True

    # -- outgoing messages --

    def _on_outgoing(self, peer_id: bytes, frame_of: str | None, frames: list | None,
                     refusal: bool) -> None:
        """One item of :data:`Outgoing` from an application thread."""
        peer = self._peers.get(peer_id)
        if peer is None:
            if frame_of is not None:
                self.ledger.drop_pending(peer_id)
            if frames is not None and frame_of is None:
                self._sock.send_multipart([peer_id, *frames], copy=False)  # e.g. an Error
            return
        if refusal:
            self._police.refused(peer_id)
        if frames is None:
            self._release(peer_id, peer.discard(frame_of))
        elif not peer.hold(frame_of, frames):
            self._release(peer_id, 1)  # produced before the job saw its Cancel
        self._flush(peer)
        if refusal:
            self._shut_if_over_refusals(peer_id)

    def _flush(self, peer: Peer) -> None:
        """Send what ``peer``'s credit allows of what is held for it."""
        ready, frames = peer.sendable()
        for parts in ready:
            self._sock.send_multipart([peer.rid, *parts], copy=False)
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
                self._sock.send_multipart([peer.rid, *ping])
        self.stats.connections_shut += self._conns.sweep(self.caps.hello_timeout_s,
                                                         self.caps.max_pending_connections)
        self._police.forget_idle()

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


def public_message(msg: Message) -> Message:
    """``msg`` with any absolute path in its text replaced (Error and JobFailed)."""
    if isinstance(msg, (Error, JobFailed)):
        text = public_text(msg.message)
        if text != msg.message:
            return msgspec.structs.replace(msg, message=text)
    return msg
