"""A scene belongs to the client that created it: on loopback (server-issued token) and under
CURVE (the client's public key), another client can neither resume it, open over it, nor
cancel its jobs."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import zmq.auth

from backend.server import Backend, BackendConfig
from protocol.keys import ClientKeys, make_keys
from protocol.messages import JobDone, JobFailed, Transition
from protocol.scripted import ScriptedClient, ScriptError
from protocol.trajectory import preset
from tests.test_hostile import scene


def _owner_and_intruder(address: str, owner_opts: dict, intruder_opts: dict,
                        owner_again_opts: dict) -> None:
    with ScriptedClient(address, **owner_opts) as owner:
        opened = owner.open_scene(scene(5), scene_id="mine")
        poses = preset("forward", 24, opened.scene.median_depth)
        with ScriptedClient(address, **intruder_opts) as intruder:
            # open over it while it is open, resume it, and open a scene of the same id
            with pytest.raises(ScriptError, match=r"\[forbidden\]"):
                intruder.open_scene(scene(6), scene_id="mine")
            with pytest.raises(ScriptError, match=r"\[forbidden\]"):
                intruder.open_scene(None, scene_id="mine", resume=True)
            # cancel the owner's running job: unknown to the intruder, the job finishes
            from protocol import codec

            ref, buf = codec.array_blob(poses.astype(np.float32), 0)
            owner.client.send(Transition(job_id="owned-job", scene_id="mine", poses=ref), [buf])
            # Status shows the intruder that someone is busy, not who nor on which scene
            mine = _status(owner).clients
            theirs = _status(intruder)
            assert len(mine) == 1 and mine[0].client.startswith(("token:", "curve:")), mine
            assert [c.client for c in theirs.clients] == ["other-1"], theirs
            assert any(w.state == "busy" for w in theirs.workers), theirs.workers
            assert all(w.scene_id is None for w in theirs.workers), theirs.workers
            from protocol.messages import Cancel

            intruder.client.send(Cancel(job_id="owned-job"))
            ev = intruder.client.poll(timeout=10)
            assert ev.msg.code == "unknown_job", ev.msg
            job = _collect(owner, "owned-job")
            assert isinstance(job, JobDone), job
            # its own Transition on the owner's scene id: no such scene for it
            intruder.client.send(Transition(job_id="x", scene_id="mine", poses=ref), [buf])
            ev = intruder.client.poll(timeout=10)
            assert ev.msg.code == "unknown_scene", ev.msg
    # after the owner left, the saved session is still not the intruder's
    with ScriptedClient(address, **intruder_opts) as intruder:
        with pytest.raises(ScriptError, match=r"\[forbidden\]"):
            intruder.open_scene(None, scene_id="mine", resume=True)
        with pytest.raises(ScriptError, match=r"\[scene_exists\]"):
            intruder.open_scene(scene(6), scene_id="mine")
    # the owner, on a new connection, resumes it with everything it made
    with ScriptedClient(address, **owner_again_opts) as owner:
        resumed = owner.open_scene(None, scene_id="mine", resume=True)
        assert resumed.scene.resumed
        with pytest.raises(ScriptError, match=r"\[scene_exists\]"):
            owner.open_scene(scene(5), scene_id="mine")  # never overwritten, even by its owner


def _status(client: ScriptedClient):
    from protocol.messages import Status, StatusReply

    client.client.send(Status(request_id="st"))
    while not isinstance((ev := client.client.poll(timeout=10)).msg, StatusReply):
        if getattr(ev.msg, "job_id", None) and hasattr(ev.msg, "index"):
            client.client.credit(1)  # a Frame of its running job, as _collect would
    return ev.msg


def _collect(client: ScriptedClient, job_id: str):
    while True:
        ev = client.client.poll(timeout=30)
        assert ev is not None, "no answer"
        if isinstance(ev.msg, (JobDone, JobFailed)) and ev.msg.job_id == job_id:
            return ev.msg
        if hasattr(ev.msg, "index") and getattr(ev.msg, "job_id", None) == job_id:
            client.client.credit(1)


def test_loopback_token_owns_the_scene(tmp_path):
    config = BackendConfig(bind="tcp://127.0.0.1:0", sessions=str(tmp_path / "s"), heartbeat_s=0.5)
    with Backend(config) as backend:
        with ScriptedClient(backend.address) as probe:
            token = probe.client.token
        assert token and len(token) >= 24
        _owner_and_intruder(backend.address, {"token": token}, {}, {"token": token})


def test_curve_key_owns_the_scene(tmp_path):
    keys = tmp_path / "keys"
    make_keys(keys, client_name="alice")
    pub, _ = zmq.auth.create_certificates(keys, "mallory")
    shutil.copy(pub, keys / "authorized_clients")
    config = BackendConfig(bind="tcp://127.0.0.1:0", sessions=str(tmp_path / "s"), heartbeat_s=0.5,
                           keys=str(keys))
    with Backend(config) as backend:
        alice = {"keys": ClientKeys.from_folder(keys, "alice")}
        mallory = {"keys": ClientKeys.from_folder(keys, "mallory")}
        # under CURVE the key is the identity: a token does not make mallory alice
        with ScriptedClient(backend.address, **alice) as probe:
            assert probe.welcome.token == ""
        _owner_and_intruder(backend.address, alice, mallory, alice)
