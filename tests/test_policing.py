"""The endpoint's policing on its own, on a fake clock: rates, refusal budgets, bans."""

from __future__ import annotations

from protocol.admission import AdmissionCaps
from protocol.endpoint_caps import EndpointCaps
from protocol.peer import Peer
from protocol.policing import Police


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_new_connection_gets_a_small_burst_then_the_rate_and_welcomed_ones_the_whole_rate():
    clock = Clock()
    police = Police(EndpointCaps(max_messages_per_s=100.0, first_burst=3.0), clock)
    assert [police.admit(b"a") for _ in range(4)] == ["ok", "ok", "ok", "over_rate"]
    clock.now += 0.011  # one token back at 100 per second
    assert police.admit(b"a") == "ok" and police.admit(b"a") == "over_rate"
    police.admit(b"b")
    police.welcomed(b"b")
    assert all(police.admit(b"b") == "ok" for _ in range(100))
    assert police.admit(b"b") == "over_rate"


def test_refusals_past_the_budget_mark_the_connection_once():
    clock = Clock()
    police = Police(EndpointCaps(max_refusals_per_s=1.0, refusal_burst=2.0), clock)
    police.refused(b"a")
    police.refused(b"a")
    assert not police.take_over_refusals(b"a")
    police.refused(b"a")
    assert police.take_over_refusals(b"a") and not police.take_over_refusals(b"a")
    clock.now += 1.0
    police.refused(b"a")  # a token came back
    assert not police.take_over_refusals(b"a")


def test_a_ban_drops_messages_shuts_after_the_grace_and_is_forgotten():
    clock = Clock()
    police = Police(EndpointCaps(), clock, grace_s=0.2, ban_s=60.0)
    assert police.ban(b"a", "conn-a") and not police.ban(b"a", "again")
    assert police.admit(b"a") == "banned"
    assert police.due() == []
    clock.now += 0.25
    assert police.due() == [(b"a", "conn-a")] and police.due() == []
    clock.now += 61.0
    police.forget_idle()
    assert not police.is_banned(b"a") and police.admit(b"a") == "ok"


def test_hellos_wait_for_the_admission_rate_on_the_police_clock():
    clock = Clock()
    police = Police(EndpointCaps(admission=AdmissionCaps(new_per_s=2.0, new_burst=1.0)), clock)
    assert police.offer_hello("n1", 1, known=False) == "welcome"
    assert police.offer_hello("n2", 2, known=False) == "wait"
    assert police.hellos_ready() == []
    clock.now += 0.5
    assert police.hellos_ready() == [2]


def test_a_peer_sends_under_its_credit_in_order_and_drops_cancelled_frames():
    peer = Peer(b"p", "token:x", credits=1, last_seen=0.0)
    peer.hold("job", [b"f0"])
    peer.hold(None, [b"progress"])
    peer.hold("job", [b"f1"])
    assert peer.sendable() == ([[b"f0"], [b"progress"]], 1)
    assert peer.sendable() == ([], 0)  # no credit: f1 waits
    assert peer.cancel("job") == 1 and not peer.hold("job", [b"f2"])
    peer.credits += 1
    assert peer.sendable() == ([], 0) and peer.frames_sent == 1


def test_a_welcomed_peer_keeps_its_whole_rate_through_a_long_silence():
    # A client whose process could not run for a while (its GIL held, its machine starved)
    # answers the pings that piled up all at once: that backlog is not a flood. Its budget
    # once forgotten, it came back as a newcomer's small burst and the peer was cut.
    clock = Clock()
    police = Police(EndpointCaps(max_messages_per_s=100.0, first_burst=3.0), clock, forget_s=10.0)
    police.admit(b"p")
    police.welcomed(b"p")
    clock.now += 30.0
    police.forget_idle(keep={b"p"})
    assert all(police.admit(b"p") == "ok" for _ in range(40))
    clock.now += 11.0  # once it left (the caller keeps it no more), its budget goes
    police.forget_idle()
    assert [police.admit(b"p") for _ in range(4)] == ["ok", "ok", "ok", "over_rate"]
