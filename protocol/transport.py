"""ZeroMQ transport: an explorer Client (DEALER) and a backend ServerEndpoint (ROUTER).

Each side owns its socket on one I/O thread. Other threads hand outgoing messages to that
thread over an inproc PUSH/PULL pair (zero-copy), and receive what arrives from a queue. The
I/O thread also does the protocol's housekeeping, so applications only see their messages:

- Handshake: the client's first message is Hello; the server answers Welcome or, on a
  protocol version mismatch, Error(version_mismatch). Messages before Hello get
  Error(handshake_required).
- Heartbeats (Paranoid Pirate): both sides Ping every ``heartbeat_s`` and answer Pings with
  Pongs. Anything received counts as a sign of life; a peer silent for ``peer_timeout_s`` is
  declared gone (a :class:`PeerGone` event).
- Credits (the guide's credit-based flow control): Hello carries the client's initial frame
  credit and Credit messages add to it. The server never has more Frame messages on the
  wire to a client than credit allows; frames beyond it wait, in order with everything sent
  after them, until credit arrives. :meth:`ServerEndpoint.wait_writable` lets a producer block
  instead of piling frames up.
- Bad input: every undecodable or invalid message is answered with an Error carrying a code
  and a sentence; the server goes on serving everyone.
- Security: off loopback the server needs CurveZMQ keys (see :func:`make_keys`) and refuses
  to bind without them.
"""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import itertools
import logging
import queue
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from protocol.codec import Blob, decode, encode
from protocol.limits import DEFAULT_LIMITS, Limits, ProtocolError
from protocol.messages import (
    PROTOCOL_VERSION,
    Cancel,
    Credit,
    Error,
    Frame,
    Hello,
    Message,
    Ping,
    Pong,
    Welcome,
)

log = logging.getLogger(__name__)

_ids = itertools.count()


class Incoming(NamedTuple):
    """A message that arrived. ``peer`` is the client's routing id on the server, None on a client."""

    msg: Message
    blobs: list[memoryview]
    peer: bytes | None = None


class PeerGone(NamedTuple):
    """The other side stopped answering (or, on the server, a client was dropped)."""

    peer: bytes | None
    reason: str


class HandshakeError(ConnectionError):
    """The backend did not complete the Hello/Welcome handshake."""


class InsecureBindError(PermissionError):
    """A non-loopback bind was asked for without CurveZMQ keys."""


@dataclass(frozen=True)
class ServerKeys:
    """CurveZMQ key files for the server: its secret key and a folder of allowed client keys."""

    secret_file: Path
    """``server.key_secret`` made by ``dreamjourney keys``."""
    authorized_dir: Path
    """Folder of client ``*.key`` public key files; only these clients may connect."""

    @classmethod
    def from_folder(cls, folder: str | Path) -> ServerKeys:
        """The keys ``dreamjourney keys FOLDER`` wrote; raises FileNotFoundError naming what is missing."""
        root = Path(folder)
        keys = cls(root / "server.key_secret", root / "authorized_clients")
        for path in (keys.secret_file, keys.authorized_dir):
            if not path.exists():
                raise FileNotFoundError(f"{path} is missing: run `dreamjourney keys {root}` first")
        return keys


@dataclass(frozen=True)
class ClientKeys:
    """CurveZMQ key files for a client: its own secret key and the server's public key."""

    secret_file: Path
    server_public_file: Path

    @classmethod
    def from_folder(cls, folder: str | Path, client_name: str = "client") -> ClientKeys:
        """The keys ``dreamjourney keys FOLDER`` wrote; raises FileNotFoundError naming what is missing."""
        root = Path(folder)
        keys = cls(root / f"{client_name}.key_secret", root / "server.key")
        for path in (keys.secret_file, keys.server_public_file):
            if not path.exists():
                raise FileNotFoundError(f"{path} is missing: run `dreamjourney keys {root}` first")
        return keys


def make_keys(folder: str | Path, client_name: str = "client") -> dict[str, Path]:
    """Create a server and a client key pair under ``folder`` and authorise the client."""
    root = Path(folder)
    (root / "authorized_clients").mkdir(parents=True, exist_ok=True)
    server_pub, server_sec = zmq.auth.create_certificates(root, "server")
    client_pub, client_sec = zmq.auth.create_certificates(root, client_name)
    allowed = root / "authorized_clients" / Path(client_pub).name
    allowed.write_bytes(Path(client_pub).read_bytes())
    return {
        "server_public": Path(server_pub),
        "server_secret": Path(server_sec),
        "client_public": Path(client_pub),
        "client_secret": Path(client_sec),
        "authorized_dir": root / "authorized_clients",
    }


def is_loopback(address: str) -> bool:
    """True for tcp addresses on the loopback range, and for ipc:// and inproc://."""
    scheme, _, rest = address.partition("://")
    if scheme in ("ipc", "inproc"):
        return True
    if scheme != "tcp":
        return False
    host = rest.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", interface names and host names are not loopback


class _Channel:
    """Thread-safe hand-off from any thread to the I/O thread: a deque plus a wake-up fd.

    Cheaper than an inproc socket hop (no per-message zmq frames): appending is atomic under
    the GIL, and the writer only signals when the I/O thread has not been signalled already.
    """

    def __init__(self) -> None:
        self._items: collections.deque = collections.deque()
        self._rx, self._tx = socket.socketpair()
        self._rx.setblocking(False)
        self._tx.setblocking(False)
        self._signalled = False
        self._lock = threading.Lock()

    def fileno(self) -> int:
        return self._rx.fileno()

    def put(self, item: object) -> None:
        self._items.append(item)
        if not self._signalled:
            with self._lock:
                self._signalled = True
                with contextlib.suppress(BlockingIOError):
                    self._tx.send(b"\0")

    def drain(self) -> list:
        """Everything queued so far (call on the I/O thread when fileno() is readable)."""
        with contextlib.suppress(BlockingIOError):
            self._rx.recv(4096)
        self._signalled = False  # cleared before popping: a later put signals again
        out = []
        while self._items:
            out.append(self._items.popleft())
        return out

    def close(self) -> None:
        self._rx.close()
        self._tx.close()


def _next_event(events: queue.SimpleQueue, timeout: float | None):
    try:
        return events.get_nowait() if timeout == 0 else events.get(timeout=timeout)
    except queue.Empty:
        return None


def _send_error(sock: zmq.Socket, prefix: list, code: str, message: str, request_id=None) -> None:
    sock.send_multipart(prefix + encode(Error(code=code, message=message, request_id=request_id)))


# --- client -------------------------------------------------------------------------------


class Client:
    """Explorer side of the connection (DEALER). Every method is safe from any thread."""

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
        self.welcome: Welcome | None = None
        self.rtt_s: float | None = None
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._handshake: queue.SimpleQueue = queue.SimpleQueue()
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        if keys is not None:
            pub, sec = zmq.auth.load_certificate(keys.secret_file)
            server_pub, _ = zmq.auth.load_certificate(keys.server_public_file)
            self._sock.curve_publickey, self._sock.curve_secretkey = pub, sec
            self._sock.curve_serverkey = server_pub
        self._sock.connect(address)
        self._chan = _Channel()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dj-client-io", daemon=True)
        self._thread.start()

    # -- public API --

    def connect(self, timeout: float = 5.0) -> Welcome:
        """Say Hello and wait for Welcome; raises HandshakeError with the reason."""
        self.send(Hello(protocol_version=PROTOCOL_VERSION, client=self.name, credits=self.initial_credits))
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
        return _next_event(self._events, timeout)

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
        poller.register(self._chan.fileno(), zmq.POLLIN)
        seq = itertools.count()
        last_seen = time.monotonic()
        next_ping = time.monotonic() + self.heartbeat_s
        gone = False
        while not self._stop.is_set():
            now = time.monotonic()
            ready = dict(poller.poll(timeout=max(0.0, min(next_ping - now, 0.1)) * 1000))
            if self._chan.fileno() in ready:
                for frames in self._chan.drain():
                    self._send(frames)
            if self._sock in ready:
                for _ in range(256):
                    try:
                        frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    last_seen = time.monotonic()
                    gone = False
                    self._on_message(frames)
            now = time.monotonic()
            if now >= next_ping:
                self._send(encode(Ping(seq=next(seq), sent_at=now)))
                next_ping = now + self.heartbeat_s
            if not gone and now - last_seen > self.peer_timeout_s:
                gone = True
                reason = f"no message from the backend for {self.peer_timeout_s:.1f} s"
                self._events.put(PeerGone(None, reason))
        self._sock.close(linger=0)

    def _send(self, frames: list) -> None:
        # Never block the I/O thread: with no backend connected a DEALER send would wait forever.
        try:
            self._sock.send_multipart(frames, zmq.NOBLOCK, copy=False)
        except zmq.Again:
            log.warning("backend at %s not reachable; a message was dropped", self.address)

    def _on_message(self, frames: list) -> None:
        try:
            msg, blobs = decode(frames, self.limits)
        except ProtocolError as exc:
            log.warning("dropping a bad message from the backend: %s", exc)
            return
        if isinstance(msg, Ping):
            self._send(encode(Pong(seq=msg.seq, sent_at=msg.sent_at)))
        elif isinstance(msg, Pong):
            self.rtt_s = time.monotonic() - msg.sent_at
        elif isinstance(msg, Welcome) or (
            isinstance(msg, Error)
            and msg.code in ("version_mismatch", "handshake_required")
            and self.welcome is None
        ):
            self._handshake.put(msg)
        else:
            self._events.put(Incoming(msg, blobs, None))


# --- server -------------------------------------------------------------------------------


@dataclass
class _Peer:
    credits: int
    last_seen: float
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
    ):
        if keys is None and not is_loopback(address):
            raise InsecureBindError(
                f"refusing to bind {address} without CurveZMQ keys: make them with "
                "`dreamjourney keys DIR` and pass --keys DIR, or bind 127.0.0.1"
            )
        if peer_timeout_s <= heartbeat_s:
            raise ValueError("peer_timeout_s must be longer than heartbeat_s")
        self.limits = limits
        self.heartbeat_s = heartbeat_s
        self.peer_timeout_s = peer_timeout_s
        self.protocol_version = PROTOCOL_VERSION
        self.stats = EndpointStats()
        self._welcome = Welcome(
            protocol_version=PROTOCOL_VERSION,
            server=name,
            engines=list(engines),
            default_engine=default_engine or engines[0],
            heartbeat_s=heartbeat_s,
            max_message_bytes=limits.max_message_bytes,
        )
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._peers: dict[bytes, _Peer] = {}
        self._pending: collections.Counter = collections.Counter()
        self._cond = threading.Condition()
        self._ctx = zmq.Context()
        self._auth: ThreadAuthenticator | None = None
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
        # A hard guard per frame; decode() reports anything between the limit and this.
        self._sock.setsockopt(zmq.MAXMSGSIZE, 2 * limits.max_message_bytes)
        if keys is not None:
            self._auth = ThreadAuthenticator(self._ctx)
            self._auth.start()
            self._auth.configure_curve(domain="*", location=str(keys.authorized_dir))
            pub, sec = zmq.auth.load_certificate(keys.secret_file)
            if sec is None:
                raise ValueError(f"{keys.secret_file} holds no secret key")
            self._sock.curve_publickey, self._sock.curve_secretkey = pub, sec
            self._sock.curve_server = True
        try:
            self._sock.bind(address)
        except zmq.ZMQError as exc:
            self._teardown()
            raise OSError(f"cannot bind {address}: {exc}") from None
        self.address = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._chan = _Channel()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dj-server-io", daemon=True)
        self._thread.start()

    # -- public API --

    def send(self, peer: bytes, msg: Message, blobs: list[Blob] | tuple = ()) -> None:
        """Queue a message to ``peer``; Frames wait for the peer's credit, in order."""
        is_frame = isinstance(msg, Frame)
        if is_frame:
            with self._cond:
                self._pending[peer] += 1
        self._chan.put((peer, msg.job_id if is_frame else None, encode(msg, blobs)))

    def discard_frames(self, peer: bytes, job_id: str) -> None:
        """Drop the Frames of ``job_id`` still waiting for credit (a Cancel does this too)."""
        self._chan.put((peer, job_id, None))

    def wait_writable(self, peer: bytes, max_pending: int = 2, timeout: float | None = None) -> bool:
        """Block while ``max_pending`` or more Frames to ``peer`` wait for credit.

        Returns False on timeout or when the peer is gone, True when there is room.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._pending[peer] >= max_pending:
                if peer not in self._peers:
                    return False
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left if left is not None else 0.5)
            return peer in self._peers

    def is_connected(self, peer: bytes) -> bool:
        with self._cond:
            return peer in self._peers

    def poll(self, timeout: float | None = 0.0) -> Incoming | PeerGone | None:
        """Next application event (Incoming or PeerGone), waiting up to ``timeout`` seconds."""
        return _next_event(self._events, timeout)

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
        self._sock.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
        self._ctx.term()

    # -- I/O thread --

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(self._chan.fileno(), zmq.POLLIN)
        seq = itertools.count()
        next_ping = time.monotonic() + self.heartbeat_s
        while not self._stop.is_set():
            ready = dict(poller.poll(timeout=100))
            if self._sock in ready:
                for _ in range(256):
                    try:
                        frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self._on_message(frames)
            if self._chan.fileno() in ready:
                for item in self._chan.drain():
                    self._on_outgoing(*item)
            now = time.monotonic()
            if now >= next_ping:
                next_ping = now + self.heartbeat_s
                self._heartbeat(now, next(seq))

    def _heartbeat(self, now: float, seq: int) -> None:
        ping = encode(Ping(seq=seq, sent_at=now))
        for peer_id, peer in list(self._peers.items()):
            if now - peer.last_seen > self.peer_timeout_s:
                self._drop(peer_id, f"no message for {self.peer_timeout_s:.1f} s")
            else:
                self._sock.send_multipart([peer_id, *ping])

    def _drop(self, peer_id: bytes, reason: str) -> None:
        with self._cond:
            self._peers.pop(peer_id, None)
            self._pending.pop(peer_id, None)
            self._cond.notify_all()
        self.stats.peers_gone += 1
        self._events.put(PeerGone(peer_id, reason))

    def _error(self, peer_id: bytes, code: str, message: str, request_id: str | None = None) -> None:
        self.stats.errors_sent += 1
        _send_error(self._sock, [peer_id], code, message, request_id)

    def _on_message(self, frames: list) -> None:
        self.stats.messages_received += 1
        peer_id = frames[0].bytes
        peer = self._peers.get(peer_id)
        if peer is not None:
            peer.last_seen = time.monotonic()
        try:
            msg, blobs = decode(frames[1:], self.limits)
        except ProtocolError as exc:
            self._error(peer_id, exc.code, str(exc), exc.request_id)
            return
        if isinstance(msg, Hello):
            self._on_hello(peer_id, msg)
        elif isinstance(msg, Ping):
            self._sock.send_multipart([peer_id, *encode(Pong(seq=msg.seq, sent_at=msg.sent_at))])
        elif isinstance(msg, Pong):
            pass
        elif peer is None:
            self._error(peer_id, "handshake_required", "send Hello before anything else")
        elif isinstance(msg, Credit):
            if msg.frames < 0:
                self._error(peer_id, "bad_value", f"credit must be >= 0, got {msg.frames}")
                return
            peer.credits += msg.frames
            self._flush(peer_id, peer)
        elif isinstance(msg, Cancel):
            # Frames of a cancelled job never go out once its Cancel is here: not those
            # waiting for credit, nor those the job makes before it notices the Cancel.
            peer.cancelled.add(msg.job_id)
            self._discard(peer_id, peer, msg.job_id)
            self._events.put(Incoming(msg, blobs, peer_id))
        else:
            self._events.put(Incoming(msg, blobs, peer_id))

    def _on_hello(self, peer_id: bytes, hello: Hello) -> None:
        if hello.protocol_version != self.protocol_version:
            self._error(
                peer_id,
                "version_mismatch",
                f"this backend speaks protocol version {self.protocol_version}, the explorer "
                f"speaks {hello.protocol_version}: update one of them",
            )
            return
        if hello.credits < 1:
            self._error(peer_id, "bad_value", f"initial credits must be >= 1, got {hello.credits}")
            return
        with self._cond:
            self._peers[peer_id] = _Peer(credits=hello.credits, last_seen=time.monotonic())
        self._sock.send_multipart([peer_id, *encode(self._welcome)])

    def _on_outgoing(self, peer_id: bytes, frame_of: str | None, frames: list | None) -> None:
        """``frame_of`` is the job id of a Frame (None for other messages); ``frames`` None
        asks to discard that job's held frames."""
        peer = self._peers.get(peer_id)
        if peer is None:
            if frame_of is not None:
                with self._cond:
                    self._pending.pop(peer_id, None)
            return  # the peer left; its jobs are being cancelled
        if frames is None:
            self._discard(peer_id, peer, frame_of)
        elif frame_of is not None and frame_of in peer.cancelled:
            self._release_pending(peer_id, 1)  # produced before the job saw its Cancel
        else:
            peer.held.append((frame_of, frames))
        self._flush(peer_id, peer)

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
