"""Identities that cost something and quotas that name their limit, on the real Backend:
cheap identities holding every client slot are evicted for a returning owner and for a
newcomer; probing for scene ids gets the prober shut out; saved scenes, bytes on disk and
resident scenes are bounded per identity and in total; an unloaded scene comes back on
demand with its points."""

from __future__ import annotations

import time

import numpy as np
import pytest
import zmq

from backend.config import ConnectionsConfig, QuotasConfig, SchedulerConfig
from backend.server import Backend, BackendConfig
from backend.session import folder_bytes
from protocol import codec
from protocol.messages import (
    PROTOCOL_VERSION,
    Error,
    Hello,
    OpenScene,
    Ping,
    Pong,
    Status,
    StatusReply,
    Welcome,
)
from protocol.scripted import ScriptedClient, ScriptError
from protocol.trajectory import stock_path
from tests.helpers import next_msg, raw_dealer, scene


def make_backend(tmp_path, quotas: dict | None = None, **connections) -> Backend:
    return Backend(BackendConfig(
        bind="tcp://127.0.0.1:0", sessions=str(tmp_path / "s"), heartbeat_s=0.5,
        scheduler=SchedulerConfig(job_slots=1, open_slots=1),
        connections=ConnectionsConfig(**connections),
        quotas=QuotasConfig(**(quotas or {}))))


def test_cheap_identities_holding_every_slot_are_evicted_for_owners_and_newcomers(tmp_path):
    with make_backend(tmp_path, max_peers=4) as backend:
        with ScriptedClient(backend.address) as owner:
            owner.open_scene(scene(1), scene_id="mine")
            token = owner.client.token
        ctx = zmq.Context()
        try:
            holders = [raw_dealer(ctx, backend.address) for _ in range(4)]  # every slot
            # a newcomer gets in: the longest-idle holder (owning nothing) makes room; then
            # the returning owner gets in however the slots are held, and resumes its scene
            with ScriptedClient(backend.address) as newcomer, \
                    ScriptedClient(backend.address, token=token) as returning:
                assert newcomer.welcome.token
                resumed = returning.open_scene(None, scene_id="mine", resume=True)
                assert resumed.scene.resumed
            assert backend.endpoint.stats.evicted == 2
            told = [m for sock in holders for m in not_pings(sock)]
            evicted = [m for m in told if isinstance(m, Error) and "longest idle" in m.message]
            assert len(evicted) == 2, told
        finally:
            ctx.destroy(linger=0)


def not_pings(sock: zmq.Socket) -> list:
    """What ``sock`` has received so far, heartbeats left out (it reads what is there)."""
    out = []
    while sock.poll(200):
        msg, _ = codec.decode(sock.recv_multipart())
        if not isinstance(msg, (Ping, Pong)):
            out.append(msg)
    return out


def test_a_client_with_work_is_never_evicted(tmp_path, monkeypatch):
    """Every slot held by a client with a job: a newcomer is refused, naming the limit.

    The endpoint (a process of its own) learns who owns what with each message the backend
    sends, not only from the periodic push: here the push is an hour apart, so the owner
    must be known from its SceneOpened on (a newcomer in that gap once evicted it)."""
    from protocol import endpoint_process

    monkeypatch.setattr(endpoint_process, "OCCUPANCY_S", 3600.0)
    with make_backend(tmp_path, max_peers=1) as backend, \
            ScriptedClient(backend.address, credits=1) as busy:
        busy.client.send(Status(request_id="s"))  # the first push goes with its answer:
        assert isinstance(busy._next(time.monotonic() + 60).msg, StatusReply)  # owns nothing
        busy.open_scene(scene(1), scene_id="b")
        from protocol import requests

        busy.client.send(*requests.transition("long", "b", stock_path("forward", 64, 1.0)))
        ctx = zmq.Context()
        try:
            sock = raw_dealer(ctx, backend.address, hello=False)
            sock.send_multipart(codec.encode(Hello(protocol_version=PROTOCOL_VERSION)))
            msg = next_msg(sock)
            assert isinstance(msg, Error) and msg.code == "busy", msg
            assert "connections.max_peers" in msg.message
        finally:
            ctx.destroy(linger=0)


def test_probing_for_scene_ids_gets_the_prober_shut_out(tmp_path):
    with make_backend(tmp_path, max_refusals_per_s=5.0) as backend:
        ctx = zmq.Context()
        try:
            sock = raw_dealer(ctx, backend.address)
            for i in range(60):
                sock.send_multipart(codec.encode(OpenScene(request_id=f"r{i}", scene_id=f"x{i}",
                                                           resume=True)))
            answers = []
            while not (answers and "per second" in answers[-1].message):
                msg = next_msg(sock)
                if isinstance(msg, Error):
                    answers.append(msg)
            assert all(a.code == "unknown_scene" for a in answers[:-1])
            assert 15 <= len(answers) - 1 < 60, len(answers)  # the burst, then shut out
        finally:
            ctx.destroy(linger=0)


def test_scene_and_disk_quotas_name_their_limit_and_keep_nothing_over(tmp_path):
    quota_mb = 0.5
    with make_backend(tmp_path, {"scenes_per_client": 2, "disk_mb_per_client": quota_mb,
                                 "min_free_disk_mb": 0}) as backend, \
            ScriptedClient(backend.address, timeout_s=600) as client:
        opened = client.open_scene(scene(1), scene_id="a")
        client.open_scene(scene(2), scene_id="b")
        with pytest.raises(ScriptError, match=r"\[busy\].*quotas\.scenes_per_client"):
            client.open_scene(scene(3), scene_id="c")
        pose, outcomes = np.eye(4), []
        while len(outcomes) < 40 and not hasattr(outcomes[-1:] and outcomes[-1], "code"):
            job = client.transition("a", stock_path("backward", 48, opened.scene.median_depth,
                                                start=pose))
            outcomes.append(job.outcome)
            pose = job.poses[-1] if job.poses else pose
        assert outcomes[-1].code == "quota", outcomes
        assert "quotas.disk_mb_per_client" in outcomes[-1].message
        used = sum(folder_bytes(p) for p in (tmp_path / "s").iterdir() if not p.name.startswith("."))
        assert used <= quota_mb * (1 << 20), used
        assert not list((tmp_path / "s").glob("*/clips/.*"))  # the refused clip left nothing
    with make_backend(tmp_path / "2", {"min_free_disk_mb": 1e9}) as backend, \
            ScriptedClient(backend.address) as client, \
            pytest.raises(ScriptError, match=r"\[busy\].*quotas\.min_free_disk_mb"):
        client.open_scene(scene(1), scene_id="a")


def test_idle_scenes_leave_memory_and_come_back_on_demand(tmp_path):
    with make_backend(tmp_path, {"resident_scenes_per_client": 1}) as backend, \
            ScriptedClient(backend.address, timeout_s=600) as client:
        a = client.open_scene(scene(1), scene_id="a")
        first = client.transition("a", stock_path("backward", 6, a.scene.median_depth))
        client.open_scene(scene(2), scene_id="b")  # a is unloaded to make room
        from protocol.identity import token_identity

        me = token_identity(client.client.token)
        assert backend.scenes.get(me, "a").scene is None
        assert backend.scenes.get(me, "b").scene is not None
        job = client.transition("a", stock_path("forward", 4, a.scene.median_depth,
                                            start=first.poses[-1]))  # a comes back, b leaves
        assert job.outcome.__class__.__name__ == "JobDone", job.outcome
        assert backend.scenes.get(me, "a").scene is not None
        assert backend.scenes.get(me, "b").scene is None
        total = a.points.count() + first.points.count() + job.points.count()
        assert len(backend.scenes.get(me, "a").scene.cloud) == total
        np.testing.assert_allclose(job.poses[0], first.poses[-1], atol=1e-5)
        undone = client.undo("a")  # undo reaches back across the unload
        assert undone.job_id == job.job_id
        assert undone.total_points == a.points.count() + first.points.count()


def test_a_token_the_backend_did_not_issue_is_replaced(tmp_path):
    with make_backend(tmp_path) as backend:
        ctx = zmq.Context()
        try:
            sock = raw_dealer(ctx, backend.address, hello=False)
            sock.send_multipart(codec.encode(Hello(protocol_version=PROTOCOL_VERSION, token="a")))
            welcome = next_msg(sock)
            assert isinstance(welcome, Welcome) and welcome.token != "a" and len(welcome.token) == 46
            assert backend.endpoint.stats.tokens_replaced == 1
        finally:
            ctx.destroy(linger=0)
