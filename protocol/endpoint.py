"""The backend side of the connection: one ROUTER socket on one I/O thread, many explorers.

Shaped like the ZeroMQ guide's Majordomo broker: the API and the handshake are here, the
I/O thread's loop in :mod:`protocol.endpoint_io`, and the rest in modules with one job
each, all owned by the I/O thread:

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
from protocol.codec import Blob, encode
from protocol.connections import Conn, Connections
from protocol.endpoint_caps import (
    DEFAULT_CAPS,
    PEER_TIMEOUT_S,
    EndpointCaps,
    EndpointStats,
    NoOccupancy,
    Occupancy,
)
from protocol.endpoint_io import EndpointIO
from protocol.errors import ErrorCode, public_text
from protocol.events import Incoming, PeerGone, Released, Welcomed
from protocol.identity import TokenSigner, token_identity
from protocol.keys import ServerKeys
from protocol.ledger import PeerLedger
from protocol.limits import DEFAULT_LIMITS, Limits
from protocol.loopback import check_bind
from protocol.messages import (
    PROTOCOL_VERSION,
    Error,
    Frame,
    Hello,
    JobFailed,
    Message,
    Welcome,
)
from protocol.multipart import send_parts
from protocol.peer import Peer, Room, make_room
from protocol.policing import Police

__all__ = ["EndpointCaps", "EndpointStats", "NoOccupancy", "Occupancy", "ServerEndpoint",
           "public_message"]

log = logging.getLogger(__name__)

COPY_BELOW_BYTES = 1 << 20
"""Blobs smaller than this are copied into ZeroMQ's messages (a memcpy without the GIL)
rather than sent zero-copy: every zero-copy message is handed back through pyzmq's
garbage-collector thread, one more thread taking the GIL per frame, which costs more than
copying a JPEG frame (``benchmarks/transport.py``: about 15% more frames per second)."""

@dataclass(frozen=True)
class _Arrival:
    """A Hello that passed its checks, waiting to be welcomed."""

    peer_id: bytes
    credits: int
    identity: str
    token: str
    conn: Conn | None


class ServerEndpoint(EndpointIO):
    """Backend side of the connection (ROUTER), serving many explorers at once."""

    def __init__(
        self,
        address: str = "tcp://127.0.0.1:5555",
        *,
        engines: Sequence[str] = ("classic",),
        default_engine: str | None = None,
        presets: Sequence[str] = (),
        name: str = "dreamjourney-backend",
        heartbeat_s: float = 1.0,
        peer_timeout_s: float = PEER_TIMEOUT_S,
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
            max_message_bytes=limits.max_message_bytes, presets=list(presets))
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
        room = Room() if old is not None else make_room(self._peers.values(), identity,
                                                         self.caps, self._occupancy)
        if room.evict is not None:
            self._evict(room.evict, room.why)
        refusal = room.refusal
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
        send_parts(self._sock, [peer_id, *encode(welcome)], copy=True)

    def _evict(self, victim: Peer, why: str) -> None:
        log.info("evicting idle client %s: %s", victim.rid.hex(), why)
        self.stats.evicted += 1
        self._error(victim.rid, "busy", f"disconnected: {why}")
        self._drop(victim.rid, "evicted", shut_later=True)  # the Error goes out first



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
