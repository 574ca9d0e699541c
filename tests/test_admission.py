"""Hello admission: newcomers and reconnections each have a rate; the rest wait, in order."""

from __future__ import annotations

import time

import zmq

from protocol import codec
from protocol.admission import AdmissionCaps, HelloGate
from protocol.endpoint import EndpointCaps
from protocol.messages import PROTOCOL_VERSION, Error, Hello, Welcome
from protocol.transport import Client, ServerEndpoint


def test_gate_lets_newcomers_in_at_their_rate_and_in_arrival_order():
    gate = HelloGate(AdmissionCaps(new_per_s=2.0, new_burst=2.0, max_waiting=3))
    now = 100.0
    gate._newcomers.last = now
    assert [gate.offer(f"n{i}", i, now) for i in range(6)] == [
        "welcome", "welcome", "wait", "wait", "wait", "refuse"]
    assert gate.ready(now + 0.1) == []
    assert gate.ready(now + 0.5) == [2]  # one token per half second
    assert gate.offer("n9", 9, now + 0.5) == "wait"  # no overtaking of those waiting
    assert gate.ready(now + 1.5) == [3, 4]
    assert gate.ready(now + 2.0) == [9] and len(gate) == 0


def test_gate_gives_known_clients_their_own_budget():
    gate = HelloGate(AdmissionCaps(new_per_s=1.0, new_burst=1.0, per_client_per_s=1.0,
                                   per_client_burst=2.0))
    now = 10.0
    gate._newcomers.last = now
    assert gate.offer("a", "a", now) == "welcome"
    gate.welcomed("a")
    assert gate.offer("b", "b", now) == "wait"  # newcomers' budget spent
    assert gate.offer("a", "a2", now) == "welcome"  # a reconnects on its own budget
    assert gate.offer("a", "a3", now) == "welcome"
    assert gate.offer("a", "a4", now) == "wait"  # a's burst spent: a reconnect loop waits
    assert gate.ready(now + 1.01) == ["b", "a4"]


def _hello(sock: zmq.Socket, token: str | None = None) -> None:
    sock.send_multipart(codec.encode(Hello(protocol_version=PROTOCOL_VERSION, token=token)))


def _dealer(ctx: zmq.Context, address: str) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    sock.connect(address)
    return sock


def test_a_reconnect_loop_is_slowed_to_the_admission_rate_while_known_clients_get_in():
    caps = EndpointCaps(admission=AdmissionCaps(new_per_s=4.0, new_burst=2.0, max_waiting=4))
    with ServerEndpoint("tcp://127.0.0.1:0", heartbeat_s=0.2, peer_timeout_s=5.0, caps=caps) as ep:
        with Client(ep.address) as known:
            known.connect(timeout=5)
            token = known.token
        ctx = zmq.Context()
        socks = [_dealer(ctx, ep.address) for _ in range(6)]
        t0 = time.monotonic()
        for s in socks:
            _hello(s)
        replies = [codec.decode(s.recv_multipart())[0] for s in socks]
        spread = time.monotonic() - t0
        welcomed = [r for r in replies if isinstance(r, Welcome)]
        refused = [r for r in replies if isinstance(r, Error)]
        # one newcomer left in the burst after `known`, four wait (0.25 s apart), one refused
        assert len(welcomed) == 5 and len(refused) == 1, replies
        assert refused[0].code == "busy" and "waiting to connect" in refused[0].message
        assert ep.stats.hellos_waited == 4 and ep.stats.hellos_refused == 1
        assert spread >= 0.7, spread  # four waited for tokens at 4 per second
        with Client(ep.address, token=token) as again:  # a known client is not behind them
            t1 = time.monotonic()
            again.connect(timeout=5)
            assert time.monotonic() - t1 < 0.5
        for s in socks:
            s.close()
        ctx.term()
        assert ep.alive()


def test_a_connection_over_the_refusal_rate_is_shut_out():
    caps = EndpointCaps(max_refusals_per_s=5.0, refusal_burst=10.0)
    with ServerEndpoint("tcp://127.0.0.1:0", heartbeat_s=0.2, peer_timeout_s=5.0, caps=caps) as ep:
        ctx = zmq.Context()
        sock = _dealer(ctx, ep.address)
        _hello(sock)
        assert isinstance(codec.decode(sock.recv_multipart())[0], Welcome)
        for _ in range(200):
            sock.send_multipart([b"\x93garbage"])
        replies = []
        sock.setsockopt(zmq.RCVTIMEO, 1500)
        try:
            while True:
                replies.append(codec.decode(sock.recv_multipart())[0])
        except zmq.Again:
            pass
        errors = [r for r in replies if isinstance(r, Error)]
        assert errors[-1].code == "busy" and "refused messages per second" in errors[-1].message
        assert 10 <= len(errors) - 1 <= 12, len(errors)  # the burst, then shut; the rest unread
        assert ep.stats.refusal_limited == 1
        sock.close()
        ctx.term()
        with Client(ep.address) as client:  # everyone else is served
            assert client.connect(timeout=3).protocol_version == PROTOCOL_VERSION
