"""A scene belongs to the client that created it: on loopback (a token only the backend
issues) and under CURVE (the client's public key), another client can neither resume it,
open over it, nor cancel its jobs, nor learn that it exists (scene ids are per client)."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
import zmq.auth

from backend.server import Backend, BackendConfig
from protocol.keys import ClientKeys, make_keys
from protocol.messages import JobDone, JobFailed, Transition
from protocol.scripted import ScriptedClient, ScriptError
from protocol.trajectory import stock_path
from tests.helpers import scene


def _owner_and_intruder(address: str, owner_opts: dict, intruder_opts: dict,
                        owner_again_opts: dict) -> None:
    with ScriptedClient(address, credits=1, **owner_opts) as owner:
        opened = owner.open_scene(scene(5), scene_id="mine")
        poses = stock_path("forward", 24, opened.scene.median_depth)
        with ScriptedClient(address, **intruder_opts) as intruder:
            # resuming it answers exactly as resuming a scene nobody has: no existence oracle
            with pytest.raises(ScriptError) as theirs:
                intruder.open_scene(None, scene_id="mine", resume=True)
            with pytest.raises(ScriptError) as nobodys:
                intruder.open_scene(None, scene_id="never-made", resume=True)
            assert str(theirs.value).replace("mine", "X") == \
                str(nobodys.value).replace("never-made", "X")
            assert "[unknown_scene]" in str(theirs.value)
            # cancel the owner's running job: unknown to the intruder, the job finishes
            from protocol import codec

            ref, buf = codec.array_blob(poses.astype(np.float32), 0)
            owner.client.send(Transition(job_id="owned-job", scene_id="mine", poses=ref), [buf])
            # Status shows the intruder that someone is busy, not who nor on which scene (the
            # owner grants no credit meanwhile: its job waits on its slot for the next frame)
            # (the Status may overtake the Transition on its way to a slot: ask until it runs)
            mine = _status(owner).clients
            deadline = time.monotonic() + 120
            others = _status(intruder)
            while not any(w.state == "busy" for w in others.workers) and time.monotonic() < deadline:
                time.sleep(0.05)
                others = _status(intruder)
            assert len(mine) == 1 and mine[0].client.startswith(("token:", "curve:")), mine
            assert [c.client for c in others.clients] == ["other-1"], others
            assert any(w.state == "busy" for w in others.workers), others.workers
            assert all(w.scene_id is None for w in others.workers), others.workers
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
            # a scene of the same id is its own, in a session folder of its own
            own = intruder.open_scene(scene(6), scene_id="mine")
            assert own.scene.session != opened.scene.session
            assert own.scene.session.startswith("mine-") and opened.scene.session.startswith("mine-")
    # after the owner left, "mine" still means the intruder's own scene to the intruder
    with ScriptedClient(address, **intruder_opts) as intruder:
        again = intruder.open_scene(None, scene_id="mine", resume=True)
        assert again.scene.session == own.scene.session
    # the owner, on a new connection, resumes its scene with everything it made
    with ScriptedClient(address, **owner_again_opts) as owner:
        resumed = owner.open_scene(None, scene_id="mine", resume=True)
        assert resumed.scene.resumed and resumed.scene.session == opened.scene.session
        assert resumed.scene.num_points > opened.scene.num_points  # the clip grew it
        with pytest.raises(ScriptError, match=r"\[scene_exists\]"):
            owner.open_scene(scene(5), scene_id="mine")  # never overwritten, even by its owner


def _status(client: ScriptedClient):
    from protocol.messages import Status, StatusReply

    client.client.send(Status(request_id="st"))
    while not isinstance((ev := client.client.poll(timeout=10)).msg, StatusReply):
        FRAMES_SEEN.append(ev.msg)  # its job's messages: frames are credited by _collect
    return ev.msg


FRAMES_SEEN: list = []


def _collect(client: ScriptedClient, job_id: str):
    seen = [m for m in FRAMES_SEEN if hasattr(m, "index") and m.job_id == job_id]
    FRAMES_SEEN.clear()
    client.client.credit(len(seen))
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
        # tokens are only the backend's: one a client makes up gets a new identity instead
        with ScriptedClient(backend.address, token="a") as guesser:
            assert guesser.client.token not in ("a", token)
        forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
        with ScriptedClient(backend.address, token=forged) as forger:
            assert forger.client.token not in (forged, token)
            intruder_token = forger.client.token
        _owner_and_intruder(backend.address, {"token": token}, {"token": intruder_token},
                            {"token": token})


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
