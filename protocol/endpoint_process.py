"""The server endpoint in a process of its own, so that its heartbeats keep their time
whatever the application's threads do.

An application that runs heavy work in its own threads (the backend's engines) can hold the
GIL for a second at a time (numpy calls that do not release it: ``np.unique`` on a million
keys holds it for ~0.5 s); an endpoint I/O thread in that process then pings late, and under
load late enough for a client to declare the backend gone. :class:`EndpointProcess` has the
API of :class:`~protocol.endpoint.ServerEndpoint` but runs the endpoint in a child process
(``python -m protocol.endpoint_process``): the child owns the socket, the handshakes, the
heartbeats, the credits and the caps, and nothing of the application's runs there.

Between the two, two ZeroMQ PAIR sockets over ``ipc://`` in a private folder, one each way:

- down (application -> endpoint): ``send`` (peer, job id of a Frame or empty, refusal flag,
  the encoded message), ``discard`` (peer, job id), ``occupancy`` (who owns scenes and
  which connections have work, pushed every ``OCCUPANCY_S`` and ahead of every message that
  is not a Frame), ``stats?`` and ``stop``;
- up (endpoint -> application): ``in`` (peer, the message re-encoded after the child
  decoded and checked it), ``gone``, ``welcomed`` (peer, identity), ``released`` (frames
  that left the wait for credit), ``stats`` and, first, ``ready`` (the bound address) or
  ``failed``.

The parent mirrors what it needs to answer at once (who is connected and as whom, the
frames each peer has waiting for credit). The child ends when told, when its parent ends,
or when the parent has sent nothing for ``PARENT_SILENCE_S`` (a hung backend must not look
alive to its clients forever).

(Just over 400 lines: the parent's bridge and the child's loop are the two ends of one pipe
protocol, kept in one module so that both ends of every message are read side by side.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence

import msgspec
import zmq

from protocol.admission import AdmissionCaps
from protocol.channel import Channel, next_event
from protocol.codec import Blob, decode, encode
from protocol.endpoint import ServerEndpoint, public_message
from protocol.endpoint_caps import DEFAULT_CAPS, PEER_TIMEOUT_S, EndpointCaps, EndpointStats, Occupancy
from protocol.errors import ErrorCode
from protocol.events import Incoming, PeerGone, Released, Welcomed
from protocol.keys import ServerKeys
from protocol.ledger import PeerLedger
from protocol.limits import DEFAULT_LIMITS, Limits
from protocol.messages import Error, Frame, Message

log = logging.getLogger(__name__)

OCCUPANCY_S = 0.25
"""How often the application's occupancy is pushed to the endpoint."""
PARENT_SILENCE_S = 120.0
"""The endpoint ends when its application has sent nothing for this long."""
START_TIMEOUT_S = 120.0


class EndpointProcess:
    """:class:`ServerEndpoint`'s API; the endpoint itself runs in a child process."""

    def __init__(
        self,
        address: str = "tcp://127.0.0.1:5555",
        *,
        engines: list[str] | tuple[str, ...] = ("classic",),
        default_engine: str | None = None,
        presets: list[str] | tuple[str, ...] = (),
        name: str = "dreamjourney-backend",
        heartbeat_s: float = 1.0,
        peer_timeout_s: float = PEER_TIMEOUT_S,
        keys: ServerKeys | None = None,
        limits: Limits = DEFAULT_LIMITS,
        caps: EndpointCaps = DEFAULT_CAPS,
        token_key: bytes | None = None,
        occupancy: Occupancy | None = None,
    ):
        self.limits = limits
        self.caps = caps
        self.heartbeat_s = heartbeat_s
        self.peer_timeout_s = peer_timeout_s
        self._occupancy = occupancy
        self._stats = EndpointStats()
        self._stats_seq = 0
        self._events: queue.SimpleQueue[Incoming | PeerGone] = queue.SimpleQueue()
        self.ledger = PeerLedger(caps.max_queued_per_peer)
        """The child's peers as relayed here, the Frames pending there, and the requests
        relayed here and not yet taken by :meth:`poll`."""
        self._cond = threading.Condition()
        """Guards the stats fetched from the child."""
        self._dir = tempfile.mkdtemp(prefix="dj-io-")  # 0700: only this user reaches the pipes
        self._ctx = zmq.Context()
        self._down = self._ctx.socket(zmq.PAIR)
        self._up = self._ctx.socket(zmq.PAIR)
        for sock, end in ((self._down, "down"), (self._up, "up")):
            sock.setsockopt(zmq.LINGER, 0)
            sock.bind(f"ipc://{self._dir}/{end}")
        settings = {
            "address": address, "engines": list(engines), "default_engine": default_engine,
            "presets": list(presets),
            "name": name, "heartbeat_s": heartbeat_s, "peer_timeout_s": peer_timeout_s,
            "keys": None if keys is None else [str(keys.secret_file), str(keys.authorized_dir)],
            "limits": dataclasses.asdict(limits), "caps": dataclasses.asdict(caps),
            "token_key": (token_key or os.urandom(32)).hex(), "pipes": self._dir,
            "parent": os.getpid(), "log_level": logging.getLogger().getEffectiveLevel(),
        }
        self._proc = subprocess.Popen([sys.executable, "-m", "protocol.endpoint_process"],
                                      stdin=subprocess.PIPE, text=True)
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(settings))
        self._proc.stdin.close()
        try:
            self.address = self._wait_ready()
        except BaseException:
            self._teardown()
            raise
        self._chan = Channel()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._send_loop, name="dj-io-down", daemon=True),
                         threading.Thread(target=self._receive_loop, name="dj-io-up", daemon=True)]
        for t in self._threads:
            t.start()

    def _wait_ready(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._up.poll(100):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise OSError("the network endpoint process did not start")
        kind, text = (f.decode() for f in self._up.recv_multipart())
        if kind != "ready":
            raise OSError(text) if kind == "failed" else ValueError(text)
        return text

    # -- the ServerEndpoint API --

    def send(self, peer: bytes, msg: Message, blobs: Sequence[Blob] = ()) -> None:
        """Queue a message to ``peer``; Frames wait for the peer's credit, in order."""
        self._queue_out(peer, msg, blobs, refusal=False)

    def error(self, peer: bytes, code: ErrorCode, message: str, request_id: str | None = None) -> None:
        """Send ``Error(code, message)`` to ``peer``; it counts against its refusal budget."""
        self._queue_out(peer, Error(code=code, message=message, request_id=request_id), (), True)

    def _queue_out(self, peer: bytes, msg: Message, blobs: Sequence[Blob], refusal: bool) -> None:
        frame_of = msg.job_id if isinstance(msg, Frame) else ""
        if frame_of:
            self.ledger.frame_queued(peer)
        self._chan.put([b"send", peer, frame_of.encode(), b"1" if refusal else b"0",
                        *encode(public_message(msg), blobs)])

    def discard_frames(self, peer: bytes, job_id: str) -> None:
        self._chan.put([b"discard", peer, job_id.encode()])

    def wait_writable(self, peer: bytes, max_pending: int = 2, timeout: float | None = None) -> bool:
        """Block while ``max_pending`` or more Frames to ``peer`` wait for credit; False on
        timeout or when the peer is gone."""
        return self.ledger.wait_room(peer, max_pending, timeout)

    def is_connected(self, peer: bytes) -> bool:
        return self.ledger.is_connected(peer)

    def identity(self, peer: bytes) -> str | None:
        return self.ledger.identity(peer)

    def poll(self, timeout: float | None = 0.0) -> Incoming | PeerGone | None:
        ev: Incoming | PeerGone | None = next_event(self._events, timeout)
        if isinstance(ev, Incoming) and ev.peer is not None:
            self.ledger.taken(ev.peer)
        return ev

    @property
    def stats(self) -> EndpointStats:
        """The endpoint's counters, fetched from the child (at most 2 s old)."""
        seen = self._stats_seq
        self._chan.put([b"stats?"])
        with self._cond:
            self._cond.wait_for(lambda: self._stats_seq > seen, timeout=2.0)
            return self._stats

    def alive(self) -> bool:
        return self._proc.poll() is None and all(t.is_alive() for t in self._threads)

    def close(self) -> None:
        self._chan.put([b"stop"])
        self._stop.set()
        for t in self._threads:
            t.join()
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._chan.close()
        self._teardown()

    def __enter__(self) -> EndpointProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _teardown(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._down.close(linger=0)
        self._up.close(linger=0)
        self._ctx.term()
        shutil.rmtree(self._dir, ignore_errors=True)

    # -- the bridge threads --

    def _send_loop(self) -> None:
        """Application -> endpoint: queued messages, and the occupancy every ``OCCUPANCY_S``
        and before any message that is not a Frame: the application changes what a client
        owns or has running before it tells the client (SceneOpened, a job's first Progress),
        so the endpoint knows it by the time the client does (a newcomer in between once
        evicted a client that had just opened a scene)."""
        poller = zmq.Poller()
        poller.register(self._chan.fileno(), zmq.POLLIN)
        next_push = 0.0
        while True:
            poller.poll(timeout=int(OCCUPANCY_S * 1000))
            items = self._chan.drain()
            if time.monotonic() >= next_push or any(_announces(f) for f in items):
                next_push = time.monotonic() + OCCUPANCY_S
                self._push_occupancy()
            for frames in items:
                self._down.send_multipart(frames, copy=False)
            if any(f[0] == b"stop" for f in items):
                return

    def _push_occupancy(self) -> None:
        try:
            blob = self._occupancy_blob()
        except Exception:  # the application's answer must not end the bridge
            log.exception("reading the application's occupancy failed")
            return
        self._down.send_multipart([b"occupancy", blob])

    def _occupancy_blob(self) -> bytes:
        snapshot = getattr(self._occupancy, "snapshot", None)
        owners, working = snapshot() if snapshot is not None else (set(), set())
        return msgspec.msgpack.encode({"owners": sorted(owners), "working": sorted(working)})

    def _receive_loop(self) -> None:
        """Endpoint -> application: messages, departures, and the state mirrored here."""
        while not self._stop.is_set():
            if not self._up.poll(100):
                if self._proc.poll() is not None:
                    log.error("the network endpoint process ended (code %s)", self._proc.returncode)
                    return
                continue
            kind, *rest = self._up.recv_multipart(copy=False)
            try:
                self._on_up(kind.bytes, rest)
            except Exception:  # a bad relay must not end the bridge
                log.exception("relaying %r from the network endpoint failed", kind.bytes)

    def _on_up(self, kind: bytes, rest: list) -> None:
        if kind == b"in":
            peer = rest[0].bytes
            msg, blobs = decode(rest[1:], self.limits)  # checked in the child already
            if not self.ledger.try_queue(peer):  # the application is behind: the same bound
                self.error(peer, "busy", f"more than {self.caps.max_queued_per_peer} of your "
                           "requests are waiting: slow down", getattr(msg, "job_id", None))
            else:
                self._events.put(Incoming(msg, blobs, peer))
        elif kind == b"welcomed":
            self.ledger.welcomed(rest[0].bytes, rest[1].bytes.decode())
        elif kind == b"released":
            self.ledger.released(rest[0].bytes, int(rest[1].bytes))
        elif kind == b"gone":
            peer = rest[0].bytes
            self.ledger.gone(peer)
            self._events.put(PeerGone(peer, rest[1].bytes.decode()))
        elif kind == b"stats":
            stats = EndpointStats(**msgspec.msgpack.decode(rest[0].bytes))
            with self._cond:
                self._stats, self._stats_seq = stats, self._stats_seq + 1
                self._cond.notify_all()


def _announces(item: list) -> bool:
    """Whether a queued ``send`` carries a message that is not a Frame (its job id part is
    empty)."""
    return item[0] == b"send" and not item[2]


# -- the child --------------------------------------------------------------------------


class _Occupancy:
    """The application's occupancy as last pushed (at most ``OCCUPANCY_S`` old)."""

    def __init__(self) -> None:
        self.owners: set[str] = set()
        self.busy: set[bytes] = set()

    def owns(self, identity: str) -> bool:
        return identity in self.owners

    def working(self, peer: bytes) -> bool:
        return peer in self.busy

    def update(self, blob: bytes) -> None:
        data = msgspec.msgpack.decode(blob)
        self.owners = set(data["owners"])
        self.busy = set(data["working"])


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel ends this process the moment its parent ends (a killed backend
    leaves no endpoint holding its port); elsewhere the command loop notices within 0.5 s."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes
        import ctypes.util
        import signal

        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        sys.exit(0)


def _child_main() -> int:
    settings = json.loads(sys.stdin.read())
    _die_with_parent(settings["parent"])
    logging.basicConfig(level=settings["log_level"],
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx = zmq.Context()
    down, up = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    for sock, end in ((down, "down"), (up, "up")):
        sock.setsockopt(zmq.LINGER, 1000)
        sock.connect(f"ipc://{settings['pipes']}/{end}")
    occupancy = _Occupancy()
    caps = dict(settings["caps"])
    caps["admission"] = AdmissionCaps(**caps["admission"])
    keys = settings["keys"]
    try:
        endpoint = ServerEndpoint(
            settings["address"], engines=settings["engines"],
            default_engine=settings["default_engine"], presets=settings["presets"],
            name=settings["name"],
            heartbeat_s=settings["heartbeat_s"], peer_timeout_s=settings["peer_timeout_s"],
            keys=None if keys is None else ServerKeys(*map(_path, keys)),
            limits=Limits(**settings["limits"]), caps=EndpointCaps(**caps),
            token_key=bytes.fromhex(settings["token_key"]), occupancy=occupancy,
            report_state=True)
    except (OSError, ValueError) as exc:
        up.send_multipart([b"failed", str(exc).encode()])
        up.close(linger=1000)
        ctx.term()
        return 2
    up.send_multipart([b"ready", endpoint.address.encode()])
    lock = threading.Lock()  # the up socket, shared by the relay and the command loop
    relay = threading.Thread(target=_relay_events, args=(endpoint, up, lock), daemon=True)
    relay.start()
    try:
        _command_loop(endpoint, down, up, lock, occupancy, settings["parent"])
    finally:
        endpoint.close()
        relay.join(timeout=5)
        down.close(linger=0)
        up.close(linger=0)
        ctx.term()
    return 0


def _path(text: str):
    from pathlib import Path

    return Path(text)


def _command_loop(endpoint: ServerEndpoint, down, up, lock, occupancy: _Occupancy,
                  parent: int) -> None:
    heard = time.monotonic()
    while True:
        if not down.poll(500):
            if os.getppid() != parent:
                return  # the application is gone
            if time.monotonic() - heard > PARENT_SILENCE_S:
                logging.getLogger(__name__).error("the backend sent nothing for %.0f s: the "
                                                  "network endpoint stops", PARENT_SILENCE_S)
                return
            continue
        heard = time.monotonic()
        kind, *rest = down.recv_multipart(copy=False)
        kind = kind.bytes
        if kind == b"send":
            peer, frame_of, refusal, *frames = rest
            endpoint.send_encoded(peer.bytes, frame_of.bytes.decode() or None, frames,
                                  refusal.bytes == b"1")
        elif kind == b"discard":
            endpoint.discard_frames(rest[0].bytes, rest[1].bytes.decode())
        elif kind == b"occupancy":
            occupancy.update(rest[0].bytes)
        elif kind == b"stats?":
            with lock:
                up.send_multipart([b"stats", msgspec.msgpack.encode(
                    dataclasses.asdict(endpoint.stats))])
        elif kind == b"stop":
            return


def _relay_events(endpoint: ServerEndpoint, up, lock) -> None:
    while endpoint.alive():
        ev = endpoint.poll(timeout=0.2)
        if ev is None:
            continue
        with lock:
            if isinstance(ev, Incoming):
                up.send_multipart([b"in", ev.peer, *encode(ev.msg, ev.blobs)], copy=False)
            elif isinstance(ev, PeerGone):
                up.send_multipart([b"gone", ev.peer, ev.reason.encode()])
            elif isinstance(ev, Welcomed):
                up.send_multipart([b"welcomed", ev.peer, ev.identity.encode()])
            elif isinstance(ev, Released):
                up.send_multipart([b"released", ev.peer, str(ev.frames).encode()])


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(_child_main())
