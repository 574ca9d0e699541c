"""4D points in a session, through a real `dreamjourney serve` on loopback: a dynamics result's
motion is sent with the points, survives SIGKILL and resume, and undo takes it back (also on
disk)."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest

from protocol.messages import Arrow
from protocol.scripted import ScriptedClient
from tests.test_classic_dynamics import SIZE, _image
from tests.test_crash_sessions import free_port, start_server

pytestmark = pytest.mark.slow  # a real serve killed and started again


def _manifest(sessions) -> dict:
    (folder,) = [p for p in sessions.iterdir() if not p.name.startswith(".")]
    return json.loads((folder / "manifest.json").read_text())


def _kill(proc) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_motion_survives_sigkill_and_resume_and_undo_removes_it(tmp_path):
    sessions = tmp_path / "sessions"
    address = f"tcp://127.0.0.1:{free_port()}"
    depth = np.full((SIZE, SIZE), 5.0, np.float32)
    arrows = [Arrow(start=(30.0, 30.0), vector=(1.0, 0.0))]
    proc = start_server(address, sessions)
    try:
        # 1. dynamics with an arrow on the water: its points start moving, told to the client
        with ScriptedClient(address, timeout_s=600) as client:
            token = client.client.token
            client.open_scene(_image(), scene_id="river", depth=depth)
            job = client.dynamics("river", np.eye(4), num_frames=8, arrows=arrows)
            assert type(job.outcome).__name__ == "JobDone", job.outcome
            (msg, index, motion), = [m for m in client.motions if m[0].job_id == job.job_id]
            assert len(index) > 500 and (motion[:, 3] > 0).all() and msg.regions
        _kill(proc)  # the moment the job is done: the session must hold the motion already
        proc = start_server(address, sessions)
        # 2. resumed: the same points move the same way, the HUD's regions with them; a
        #    second dynamics on the bank, then undo: the bank's points get their rest back
        with ScriptedClient(address, token=token, timeout_s=600) as client:
            client.open_scene(None, scene_id="river", resume=True)
            again, r_index, r_motion = client.next_motion("river")
            order = np.argsort(index)
            np.testing.assert_array_equal(r_index, index[order])
            np.testing.assert_array_equal(r_motion, motion[order])
            assert again.regions == msg.regions
            bank = client.dynamics("river", np.eye(4), num_frames=8,
                                   arrows=[Arrow(start=(30.0, 100.0), vector=(0.0, 1.0))])
            (more, b_index, b_motion), = [m for m in client.motions if m[0].job_id == bank.job_id]
            assert len(b_index) > 500 and not np.isin(b_index, index).any()
            assert more.regions == [*msg.regions, more.regions[-1]]
            assert client.undo("river").job_id == bank.job_id
            (taken, u_index, u_motion) = client.motions[-1]
            np.testing.assert_array_equal(u_index, b_index)
            assert (u_motion == 0).all() and taken.regions == msg.regions
        clips = _manifest(sessions)["clips"]
        assert [(c["kind"], c["undone"], c["region"]) for c in clips] == [
            ("dynamics", False, msg.regions[0]), ("dynamics", True, more.regions[-1])]
        _kill(proc)
        proc = start_server(address, sessions)
        # 3. resumed after the undo: the water moves, the bank does not
        with ScriptedClient(address, token=token, timeout_s=600) as client:
            client.open_scene(None, scene_id="river", resume=True)
            last, l_index, l_motion = client.next_motion("river")
            np.testing.assert_array_equal(l_index, index[order])
            np.testing.assert_array_equal(l_motion, motion[order])
            assert last.regions == msg.regions
    finally:
        proc.kill()
        proc.wait()
