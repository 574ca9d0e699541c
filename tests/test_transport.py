"""The transport over real ZeroMQ sockets on loopback."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import msgspec
import numpy as np
import pytest
import zmq

from protocol import codec
from protocol.limits import Limits
from protocol.messages import (
    PROTOCOL_VERSION,
    Cancel,
    Credit,
    Error,
    Frame,
    Hello,
    JobDone,
    OpenScene,
    Ping,
    Pong,
    Transition,
    Welcome,
)
from protocol.transport import (
    Client,
    ClientKeys,
    HandshakeError,
    Incoming,
    InsecureBindError,
    PeerGone,
    ServerEndpoint,
    ServerKeys,
    make_keys,
)


@pytest.fixture
def server():
    from protocol.endpoint import EndpointCaps

    # no message rate limit: the malformed-message test answers 10,000 at full speed
    ep = ServerEndpoint("tcp://127.0.0.1:0", heartbeat_s=0.2, peer_timeout_s=1.0,
                        limits=Limits(max_message_bytes=256 * 1024),
                        caps=EndpointCaps(max_messages_per_s=1e9, max_refusals_per_s=1e9))
    yield ep
    ep.close()


@pytest.fixture
def raw(server):
    """A bare DEALER socket on the server, for speaking the protocol by hand."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 3000)
    sock.connect(server.address)
    yield sock
    sock.close()
    ctx.term()


def recv_msg(sock):
    """Next non-heartbeat message on a raw socket."""
    while True:
        msg, blobs = codec.decode(sock.recv_multipart())
        if not isinstance(msg, (Ping, Pong)):
            return msg, blobs


def frame_msg(i: int, ref) -> Frame:
    return Frame(job_id="j", index=i, num_frames=100, pose=np.eye(4).ravel().tolist(),
                 K=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0], image=ref, fps=24.0)


def test_handshake_and_messages_both_ways(server):
    with Client(server.address, credits=4) as client:
        welcome = client.connect(timeout=3)
        assert welcome.protocol_version == PROTOCOL_VERSION
        assert welcome.engines == ["classic"]
        poses = np.tile(np.eye(4, dtype=np.float32), (5, 1, 1))
        ref, buf = codec.array_blob(poses, 0)
        client.send(Transition(job_id="t1", scene_id="s", poses=ref), [buf])
        ev = server.poll(timeout=3)
        assert isinstance(ev, Incoming) and ev.msg.job_id == "t1"
        assert np.array_equal(codec.read_array(ev.msg.poses, ev.blobs), poses)
        server.send(ev.peer, JobDone(job_id="t1", num_frames=5, timings={"total": 1.5}))
        back = client.poll(timeout=3)
        assert back.msg == JobDone(job_id="t1", num_frames=5, timings={"total": 1.5})


def test_version_mismatch_is_an_error_not_a_hang(server, raw):
    raw.send_multipart(codec.encode(Hello(protocol_version=PROTOCOL_VERSION + 1)))
    msg, _ = recv_msg(raw)
    assert isinstance(msg, Error) and msg.code == "version_mismatch"
    assert str(PROTOCOL_VERSION) in msg.message


def test_client_reports_version_mismatch(server, monkeypatch):
    import protocol.client

    monkeypatch.setattr(protocol.client, "PROTOCOL_VERSION", PROTOCOL_VERSION + 7)
    with Client(server.address) as client, pytest.raises(HandshakeError, match="protocol version"):
        client.connect(timeout=3)


def test_no_backend_is_a_clear_error():
    with (
        Client("tcp://127.0.0.1:1", heartbeat_s=0.1, peer_timeout_s=0.5) as client,
        pytest.raises(HandshakeError, match="no answer from the backend"),
    ):
        client.connect(timeout=0.5)


def test_messages_before_hello_are_refused(raw):
    raw.send_multipart(codec.encode(Cancel(job_id="x")))
    msg, _ = recv_msg(raw)
    assert isinstance(msg, Error) and msg.code == "handshake_required"


def test_credits_are_never_exceeded_on_the_wire(server, raw):
    raw.send_multipart(codec.encode(Hello(protocol_version=PROTOCOL_VERSION, credits=3)))
    assert isinstance(recv_msg(raw)[0], Welcome)
    raw.send_multipart(codec.encode(Cancel(job_id="hello")))
    peer = server.poll(timeout=3).peer
    ref, blob = codec.encode_image(np.zeros((16, 16, 3), np.uint8))
    for i in range(20):
        server.send(peer, frame_msg(i, ref), [blob])
    server.send(peer, JobDone(job_id="j", num_frames=20))

    def drain(quiet_s=0.3):
        """Messages until none but heartbeats came for ``quiet_s``; Pings are answered."""
        got, last = [], time.monotonic()
        while time.monotonic() - last < quiet_s:
            if not raw.poll(50):
                continue
            msg, _ = codec.decode(raw.recv_multipart())
            if isinstance(msg, Ping):
                raw.send_multipart(codec.encode(Pong(seq=msg.seq, sent_at=msg.sent_at)))
            else:
                got.append(msg)
                last = time.monotonic()
        return got

    got = drain()
    assert [type(m) for m in got] == [Frame] * 3  # exactly the credit, JobDone waits behind
    assert not server.wait_writable(peer, max_pending=17, timeout=0.05)
    raw.send_multipart(codec.encode(Credit(frames=5)))
    got = drain()
    assert [m.index for m in got] == [3, 4, 5, 6, 7]
    raw.send_multipart(codec.encode(Credit(frames=100)))
    got = drain()
    assert [m.index for m in got[:-1]] == list(range(8, 20))
    assert isinstance(got[-1], JobDone)  # order kept: the clip's end after its frames
    assert server.wait_writable(peer, max_pending=1, timeout=0.5)


def test_discarded_frames_never_reach_the_wire(server):
    with Client(server.address, credits=1) as client:
        client.connect(timeout=3)
        client.send(Cancel(job_id="hello"))
        peer = server.poll(timeout=3).peer
        ref, blob = codec.encode_image(np.zeros((8, 8, 3), np.uint8))
        for i in range(4):
            server.send(peer, frame_msg(i, ref), [blob])
        first = client.poll(timeout=3)
        assert isinstance(first.msg, Frame) and first.msg.index == 0
        server.discard_frames(peer, "j")  # the job was cancelled: 3 frames wait for credit
        server.send(peer, JobDone(job_id="j", num_frames=1))
        assert client.poll(timeout=3).msg == JobDone(job_id="j", num_frames=1)
        client.credit(10)
        time.sleep(0.3)
        assert client.poll(timeout=0) is None
        assert server.wait_writable(peer, max_pending=1, timeout=0.5)


def test_frames_made_after_a_cancel_never_go_out(server):
    with Client(server.address, credits=8) as client:
        client.connect(timeout=3)
        client.send(Cancel(job_id="j"))
        ev = server.poll(timeout=3)
        assert ev.msg == Cancel(job_id="j")
        ref, blob = codec.encode_image(np.zeros((8, 8, 3), np.uint8))
        server.send(ev.peer, frame_msg(0, ref), [blob])  # the job had not noticed yet
        server.send(ev.peer, JobDone(job_id="other", num_frames=0))
        assert client.poll(timeout=3).msg == JobDone(job_id="other", num_frames=0)
        assert client.poll(timeout=0.3) is None
        assert server.wait_writable(ev.peer, max_pending=1, timeout=0.5)


def test_silent_client_is_declared_gone(server, raw):
    raw.send_multipart(codec.encode(Hello(protocol_version=PROTOCOL_VERSION)))
    assert isinstance(recv_msg(raw)[0], Welcome)
    raw.send_multipart(codec.encode(Cancel(job_id="x")))
    peer = server.poll(timeout=3).peer
    start = time.monotonic()
    ev = server.poll(timeout=5)  # the raw socket never answers pings
    assert isinstance(ev, PeerGone) and ev.peer == peer
    assert time.monotonic() - start < 1.0 + 2 * 0.2 + 0.5  # timeout + ping slack
    assert not server.is_connected(peer)


def test_client_declares_silent_backend_gone():
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    try:
        with Client(f"tcp://127.0.0.1:{port}", heartbeat_s=0.1, peer_timeout_s=0.6) as client:
            ident, *frames = router.recv_multipart()  # the Hello or a Ping; never answered
            ev = client.poll(timeout=3)
            assert isinstance(ev, PeerGone) and "no message from the backend" in ev.reason
    finally:
        router.close(linger=0)
        ctx.term()


def test_live_client_stays_connected_past_the_timeout(server):
    with Client(server.address, heartbeat_s=0.2, peer_timeout_s=1.0) as client:
        client.connect(timeout=3)
        client.send(Cancel(job_id="x"))
        peer = server.poll(timeout=3).peer
        time.sleep(2.0)
        assert server.is_connected(peer)
        assert client.poll(timeout=0) is None  # no PeerGone either way
        assert client.rtt_s is not None and client.rtt_s < 0.5


def test_non_loopback_bind_needs_keys():
    with pytest.raises(InsecureBindError, match="dreamjourney keys"):
        ServerEndpoint("tcp://0.0.0.0:0")
    with pytest.raises(InsecureBindError):
        ServerEndpoint("tcp://*:0")


def test_curve_right_key_served_missing_or_wrong_key_refused(tmp_path):
    good = make_keys(tmp_path / "good")
    bad = make_keys(tmp_path / "bad")  # a client key the server never authorised
    server = ServerEndpoint("tcp://127.0.0.1:0", keys=ServerKeys.from_folder(tmp_path / "good"))
    try:
        with Client(server.address, keys=ClientKeys.from_folder(tmp_path / "good")) as c:
            assert c.connect(timeout=3).protocol_version == PROTOCOL_VERSION
        no_key = None
        wrong_client = ClientKeys(bad["client_secret"], good["server_public"])
        wrong_server = ClientKeys(good["client_secret"], bad["server_public"])

        def refused(keys) -> bool:
            with Client(server.address, keys=keys) as c, pytest.raises(HandshakeError):
                c.connect(timeout=1)
            return True

        # each its own client, at once: a refusal is a second without a Welcome
        with ThreadPoolExecutor(3) as pool:
            assert list(pool.map(refused, [no_key, wrong_client, wrong_server])) == [True] * 3
    finally:
        server.close()


def test_key_folder_errors_name_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="dreamjourney keys"):
        ServerKeys.from_folder(tmp_path)


# --- malformed input ----------------------------------------------------------------------

_enc = msgspec.msgpack.Encoder()


def _malformed(rng: np.random.Generator, kind: str) -> tuple[list[bytes], set[str]]:
    """One bad message of ``kind`` and the Error codes that are a right answer to it."""
    good = codec.encode(OpenScene(request_id="r", scene_id="s"))[0]
    if kind == "random":
        data = rng.bytes(int(rng.integers(1, 64)))
        return [data], {"bad_message", "bad_value", "unknown_type"}
    if kind == "truncated":
        return [good[: int(rng.integers(1, len(good)))]], {"bad_message"}
    if kind == "unknown_tag":
        return [_enc.encode({"type": f"nope{rng.integers(1000)}", "x": 1})], {"unknown_type"}
    if kind == "wrong_types":
        return [_enc.encode({"type": "open_scene", "request_id": 5, "scene_id": [1]})], {"bad_value"}
    if kind == "blob_index":
        ref = codec.ImageRef(blob=int(rng.integers(1, 9)), codec="jpeg", width=8, height=8)
        return codec.encode(OpenScene(request_id="r", scene_id="s", image=ref), [b"x"]), {"bad_blob"}
    if kind == "oversized":
        # over the limit in total, each frame under it (one frame over it is a drop: below)
        return [good, b"\0" * (150 * 1024), b"\0" * (150 * 1024)], {"too_large"}
    if kind == "bad_array":
        ref = codec.ArrayRef(blob=0, dtype="float32", shape=[8, 4, 4])
        return codec.encode(Transition(job_id="j", scene_id="s", poses=ref), [b"\0" * 100]), {"bad_array"}
    raise ValueError(kind)


KINDS = ["random", "truncated", "unknown_tag", "wrong_types", "blob_index", "oversized", "bad_array"]


def test_ten_thousand_malformed_messages_then_a_normal_handshake(server, raw):
    rng = np.random.default_rng(1)
    # Hello first, so that well-formed but unexpected messages are judged on content.
    raw.send_multipart(codec.encode(Hello(protocol_version=PROTOCOL_VERSION)))
    assert isinstance(recv_msg(raw)[0], Welcome)
    n, batch = 10_000, 200
    seen_codes: dict[str, set[str]] = {k: set() for k in KINDS}
    for start in range(0, n, batch):
        kinds = [KINDS[(start + i) % len(KINDS)] for i in range(batch)]
        expected = []
        for kind in kinds:
            frames, codes = _malformed(rng, kind)
            raw.send_multipart(frames)
            expected.append((kind, codes))
        for kind, codes in expected:
            msg, _ = recv_msg(raw)
            assert isinstance(msg, Error), msg
            assert msg.code in codes, (kind, msg)
            assert msg.message
            seen_codes[kind].add(msg.code)
    assert server.stats.errors_sent >= n
    assert seen_codes["oversized"] == {"too_large"}
    assert seen_codes["bad_array"] == {"bad_array"}
    with Client(server.address) as client:
        assert client.connect(timeout=3).protocol_version == PROTOCOL_VERSION


def test_one_frame_over_the_limit_drops_the_connection_not_the_server(server, raw):
    raw.send_multipart(codec.encode(Hello(protocol_version=PROTOCOL_VERSION)))
    assert isinstance(recv_msg(raw)[0], Welcome)
    raw.send_multipart([codec.encode(Cancel(job_id="x"))[0], b"\0" * (300 * 1024)])
    deadline = time.monotonic() + 5
    while server.stats.peers_gone == 0 and time.monotonic() < deadline:
        ev = server.poll(timeout=0.2)
        if isinstance(ev, PeerGone):
            break
    with Client(server.address) as client:
        assert client.connect(timeout=3).protocol_version == PROTOCOL_VERSION
    assert server.alive()


def test_secret_key_files_are_private(tmp_path):
    import stat

    paths = make_keys(tmp_path / "k")
    for name in ("server_secret", "client_secret"):
        assert stat.S_IMODE(paths[name].stat().st_mode) == 0o600
    assert stat.S_IMODE(paths["server_public"].stat().st_mode) == 0o644


def test_silent_connections_are_shut_after_the_hello_timeout():
    from protocol.endpoint import EndpointCaps

    caps = EndpointCaps(hello_timeout_s=0.5)
    with ServerEndpoint("tcp://127.0.0.1:0", heartbeat_s=0.2, peer_timeout_s=1.0, caps=caps) as ep:
        ctx = zmq.Context()
        silent = [ctx.socket(zmq.DEALER) for _ in range(5)]
        for s in silent:
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.RECONNECT_IVL, 60_000)  # stay away once shut
            s.connect(ep.address)
        deadline = time.monotonic() + 10
        while ep.stats.connections_shut < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ep.stats.connections_shut >= 5
        with Client(ep.address) as client:  # a well-behaved client is not affected
            assert client.connect(timeout=3).protocol_version == PROTOCOL_VERSION
        for s in silent:
            s.close()
        ctx.term()


def test_a_connection_over_the_message_rate_is_shut_out():
    from protocol.endpoint import EndpointCaps

    caps = EndpointCaps(max_messages_per_s=500, max_refusals_per_s=1e9)
    with ServerEndpoint("tcp://127.0.0.1:0", heartbeat_s=0.2, peer_timeout_s=5.0, caps=caps) as ep:
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 3000)
        sock.connect(ep.address)
        sock.send_multipart(codec.encode(Hello(protocol_version=PROTOCOL_VERSION)))
        assert isinstance(recv_msg(sock)[0], Welcome)
        for _ in range(3000):
            sock.send_multipart([b"garbage"])
        codes = []
        try:
            while True:
                msg = recv_msg(sock)[0]
                codes.append(msg.code)
                if "per second" in msg.message:
                    break
        except zmq.Again:
            pass
        assert codes[-1] == "busy" and len(codes) < 1000, (len(codes), codes[-3:])
        assert ep.stats.rate_limited == 1
        sock.close()
        ctx.term()
        with Client(ep.address) as client:  # everyone else is served
            assert client.connect(timeout=3).protocol_version == PROTOCOL_VERSION
        assert ep.alive()


def test_multipart_helpers_send_and_receive_whole_messages():
    """send_parts/recv_parts (the I/O threads' hot path) keep message boundaries, hand
    zmq.Frame parts through, and with NOBLOCK raise Again when nothing waits."""
    from protocol.multipart import NOBLOCK, recv_parts, send_parts

    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        a.bind("inproc://multipart-test")
        b.connect("inproc://multipart-test")
        big = np.arange(300_000, dtype=np.uint8)  # above pyzmq's zero-copy threshold
        send_parts(a, [b"one"])
        send_parts(a, [b"h", memoryview(b"mv"), big, zmq.Frame(b"frame")], copy=False)
        send_parts(a, [b"x", b"y"], copy=True)
        assert [f.bytes for f in recv_parts(b)] == [b"one"]
        parts = recv_parts(b)
        assert [f.bytes for f in parts[:2]] == [b"h", b"mv"]
        assert np.array_equal(np.frombuffer(parts[2].buffer, np.uint8), big)
        assert parts[3].bytes == b"frame"
        assert [f.bytes for f in recv_parts(b)] == [b"x", b"y"]
        with pytest.raises(zmq.Again):
            recv_parts(b, NOBLOCK)
    finally:
        a.close(linger=0)
        b.close(linger=0)
        ctx.term()


def test_job_threads_streaming_to_one_peer_keep_order_credit_and_the_peer_heard(server, raw):
    """Three job threads stream Frames and a JobDone each to one peer while it grants
    credit a few at a time and keeps sending requests: every thread's messages arrive
    complete and in order, no Frame beyond the credit granted, every request and Credit
    is received by the endpoint, and no Frame is left pending in the ledger. (It holds for
    any way the endpoint moves a job's messages to the socket, e.g. a job thread sending
    itself when the I/O thread is not in the socket: branch wire4-direct.)"""
    import threading

    raw.send_multipart(codec.encode(Hello(protocol_version=PROTOCOL_VERSION, credits=4)))
    assert isinstance(recv_msg(raw)[0], Welcome)
    raw.send_multipart(codec.encode(Cancel(job_id="hello")))
    peer = server.poll(timeout=3).peer
    ref, blob = codec.encode_image(np.zeros((16, 16, 3), np.uint8))
    per_thread, jobs = 300, ["a", "b", "c"]

    def produce(job: str) -> None:
        for i in range(per_thread):
            assert server.wait_writable(peer, max_pending=3, timeout=10)
            server.send(peer, Frame(job_id=job, index=i, num_frames=per_thread,
                                    pose=np.eye(4).ravel().tolist(),
                                    K=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0], image=ref, fps=24.0),
                        [blob])
        server.send(peer, JobDone(job_id=job, num_frames=per_thread))

    threads = [threading.Thread(target=produce, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    seen: dict[str, list] = {job: [] for job in jobs}
    done: set[str] = set()
    granted, frames, requests = 4, 0, 0
    while len(done) < len(jobs):
        msg, _ = codec.decode(raw.recv_multipart())  # RCVTIMEO 3 s: a stall fails here
        if isinstance(msg, Ping):
            raw.send_multipart(codec.encode(Pong(seq=msg.seq, sent_at=msg.sent_at)))
        elif isinstance(msg, Frame):
            frames += 1
            assert frames <= granted, "a Frame beyond the credit granted"
            assert msg.job_id not in done
            seen[msg.job_id].append(msg.index)
            if frames % 2 == 0:
                raw.send_multipart(codec.encode(Credit(frames=2)))
                granted += 2
            if frames % 25 == 0:
                raw.send_multipart(codec.encode(Cancel(job_id=f"r{frames}")))
                requests += 1
        elif isinstance(msg, JobDone):
            assert seen[msg.job_id] == list(range(per_thread)), msg.job_id
            done.add(msg.job_id)
    for t in threads:
        t.join(timeout=10)
    got = []
    while len(got) < requests:
        ev = server.poll(timeout=3)
        assert isinstance(ev, Incoming), f"{len(got)} of {requests} requests received"
        got.append(ev.msg.job_id)
    assert got == [f"r{n}" for n in range(25, frames + 1, 25)]
    assert server.wait_writable(peer, max_pending=1, timeout=1)
    assert server.credit_report(peer) == (granted - frames, frames)
    assert server.stats.io_faults == 0


def test_a_slow_client_thread_hands_over_what_it_has_read_without_the_rest(server, monkeypatch):
    """In a busy process every message waits for the GIL on the client's I/O thread; the
    messages it has read reach the application every ``HANDOVER_S``, not when the batch of
    everything waiting is done."""
    with Client(server.address) as client:
        client.connect(timeout=3)
        client.send(Cancel(job_id="hello"))
        peer = server.poll(timeout=3).peer
        handled: list[float] = []
        on_message = client._on_message

        def slow(frames, batch):
            on_message(frames, batch)
            time.sleep(0.01)
            handled.append(time.monotonic())

        monkeypatch.setattr(client, "_on_message", slow)
        for i in range(20):
            server.send(peer, JobDone(job_id=f"j{i}", num_frames=1))
        first = client.poll(timeout=5)
        first_at = time.monotonic()
        rest = [client.poll(timeout=5) for _ in range(19)]
        assert [e.msg.job_id for e in [first, *rest]] == [f"j{i}" for i in range(20)]
        assert first_at < handled[-1] - 0.05, (first_at, handled)
