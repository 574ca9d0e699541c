"""The fair scheduler: round-robin across clients, one job per client at a time, caps."""

from __future__ import annotations

import threading

import pytest

from backend.scheduler import FairScheduler, Ticket
from protocol.errors import Busy


def test_round_robin_across_clients_with_caps():
    order, gate = [], threading.Event()
    sched = FairScheduler(slots=1, max_per_client=4)
    try:
        def job(name: str):
            def run() -> None:
                gate.wait(5)  # the first job holds the slot until everything is queued
                order.append(name)
            return run

        tickets = [Ticket("A", f"a{i}", job(f"a{i}")) for i in range(4)]
        tickets += [Ticket("B", "b0", job("b0")), Ticket("C", "c0", job("c0"))]
        for t in tickets:
            sched.submit(t)
        with pytest.raises(Busy, match="limit per client is 4"):
            sched.submit(Ticket("A", "a4", job("a4")))
        dropped = threading.Event()
        sched.submit(Ticket("C", "c1", job("c1"), on_dropped=dropped.set))
        assert sched.remove("C", "c1") and dropped.is_set()
        gate.set()
        for t in tickets:
            assert t.done.wait(10)
        # a0 was running; then each client in turn, not A's whole backlog first
        assert order == ["a0", "b0", "c0", "a1", "a2", "a3"], order
        assert sched.pending("A") == 0
    finally:
        sched.shutdown()


def test_a_raising_job_does_not_kill_its_slot():
    sched = FairScheduler(slots=1, max_per_client=2)
    try:
        def boom() -> None:
            raise RuntimeError("bug")

        ran = threading.Event()
        first = Ticket("A", "x", boom)
        sched.submit(first)
        assert first.done.wait(5)
        sched.submit(Ticket("A", "y", ran.set))
        assert ran.wait(5) and sched.alive()
    finally:
        sched.shutdown()
