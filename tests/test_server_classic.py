"""`dreamjourney serve` with the classic engine, over real sockets on loopback."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import cv2
import numpy as np
import pytest
from PIL import Image

from backend.server import Backend, BackendConfig
from backend.session import read_mp4
from protocol.messages import Arrow, JobDone, JobFailed
from protocol.scripted import ScriptedClient, ScriptError
from protocol.trajectory import stock_path

SIZE = 192  # scenes are shrunk so the whole suite stays quick on two cores


def load(path, size=SIZE) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    """One backend for the module's tests: each connects as its own identity with its own
    scene names, as independent explorers would (a backend start costs ~1 CPU-second)."""
    config = BackendConfig(bind="tcp://127.0.0.1:0",
                           sessions=tmp_path_factory.mktemp("classic") / "sessions",
                           heartbeat_s=0.2, peer_timeout_s=1.5, cpu_jobs=2)
    with Backend(config) as b:
        yield b


@pytest.mark.slow  # every shared scene opened and flown end to end
def test_every_shared_scene_opens_and_flies(backend, scenes_dir):
    paths = sorted(scenes_dir.glob("*.jpg"))
    assert len(paths) >= 10
    with ScriptedClient(backend.address, credits=4) as client:
        for path in paths:
            image = load(path)
            opened = client.open_scene(image, scene_id=path.stem)
            assert opened.scene.width == SIZE and opened.points.count() >= SIZE * SIZE * 0.9
            poses = stock_path("backward", n_frames=9, median_depth=opened.scene.median_depth)
            job = client.transition(path.stem, poses)
            assert isinstance(job.outcome, JobDone), job.outcome
            assert len(job.frames) == 9 and job.outcome.num_frames == 9
            for sent, got in zip(poses, job.poses, strict=True):
                np.testing.assert_allclose(got, sent, atol=1e-5)
            assert psnr(job.frames[0], image) > 28, path.stem  # JPEG on the wire, so not exact
            pairs = zip(job.frames, job.frames[1:], strict=False)
            diffs = [np.abs(a.astype(int) - b).mean() for a, b in pairs]
            assert min(diffs) > 0.05, f"{path.stem}: frames do not change along the path"
            assert np.abs(job.frames[-1].astype(int) - job.frames[0]).mean() > 3
            assert job.points.total >= opened.points.count()  # the cloud grew (or kept)


def test_two_clients_at_once_both_finish(backend, scenes_dir):
    images = [load(scenes_dir / "09_countryside.jpg"), load(scenes_dir / "12_desert.jpg")]
    results = [None, None]

    def fly(i):
        with ScriptedClient(backend.address, credits=2) as client:
            opened = client.open_scene(images[i], scene_id=f"two-{i}")
            poses = stock_path("rotate_left", n_frames=13, median_depth=opened.scene.median_depth)
            results[i] = client.transition(f"two-{i}", poses)

    threads = [threading.Thread(target=fly, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    for r in results:
        assert r is not None and isinstance(r.outcome, JobDone) and len(r.frames) == 13


def test_cancel_stops_within_one_frame(backend, scenes_dir):
    with ScriptedClient(backend.address, credits=1) as client:
        opened = client.open_scene(load(scenes_dir / "16_ink_lake.jpg"), scene_id="cancel")
        poses = stock_path("forward", n_frames=40, median_depth=opened.scene.median_depth)
        job = client.transition("cancel", poses, cancel_after=3)
        assert isinstance(job.outcome, JobFailed) and job.outcome.code == "cancelled"
        assert len(job.frames) <= 3 + 1  # the credit granted before the Cancel, no more
        # the connection keeps working afterwards
        again = client.transition("cancel", poses[:5])
        assert isinstance(again.outcome, JobDone)


def test_unknown_scene_and_bad_poses_are_clear_errors(backend, scenes_dir):
    with ScriptedClient(backend.address) as client:
        with pytest.raises(ScriptError, match="unknown_scene"):
            client.transition("nope", np.tile(np.eye(4), (3, 1, 1)))
        client.open_scene(load(scenes_dir / "03_ancient.jpg", 64), scene_id="bad")
        poses = np.tile(np.eye(4), (3, 1, 1))
        poses[1, :3, :3] *= 2  # not a rotation
        job = client.transition("bad", poses)
        assert isinstance(job.outcome, JobFailed) and job.outcome.code == "bad_request"
        assert "pose 1" in job.outcome.message


KILLED_CLIENT = textwrap.dedent("""
    import sys, numpy as np
    from protocol.scripted import ScriptedClient
    from protocol.trajectory import stock_path
    c = ScriptedClient(sys.argv[1], credits=1)
    img = (np.indices((96, 96)).sum(0) % 255).astype(np.uint8)[..., None].repeat(3, -1)
    o = c.open_scene(img, scene_id="victim")
    from protocol import codec
    from protocol.messages import Transition
    poses = stock_path("forward", n_frames=200, median_depth=o.scene.median_depth)
    ref, buf = codec.array_blob(poses.astype(np.float32), 0)
    c.client.send(Transition(job_id="victim-job", scene_id="victim", poses=ref), [buf])
    while True:
        ev = c.client.poll(timeout=5)
        if getattr(ev, "msg", None).__class__.__name__ == "Frame":
            print("frame", flush=True)
""")


def test_killed_client_leaves_server_serving(backend, scenes_dir, tmp_path):
    script = tmp_path / "victim.py"
    script.write_text(KILLED_CLIENT)
    proc = subprocess.Popen([sys.executable, str(script), backend.address], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "frame"  # mid-job
    finally:
        proc.kill()
        proc.wait()
    with ScriptedClient(backend.address) as client:
        opened = client.open_scene(load(scenes_dir / "58_woodland.jpg", 96), scene_id="after")
        job = client.transition("after", stock_path("forward", 5, opened.scene.median_depth))
        assert isinstance(job.outcome, JobDone)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "victim-job" in backend.jobs.job_ids():
        time.sleep(0.1)
    assert "victim-job" not in backend.jobs.job_ids()  # the dead client's job was cancelled


def test_dynamics_follows_arrows_and_loops(backend):
    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8), (SIZE, SIZE),
                      interpolation=cv2.INTER_CUBIC)  # textured, so flow is measurable
    depth = np.full((SIZE, SIZE), 5.0, np.float32)
    arrow = Arrow(start=[SIZE / 2, SIZE / 2], vector=[1.5, 0.0])
    with ScriptedClient(backend.address) as client:
        client.open_scene(base, scene_id="dyn", depth=depth)
        job = client.dynamics("dyn", np.eye(4), num_frames=16, arrows=[arrow])
    assert isinstance(job.outcome, JobDone) and len(job.frames) == 16
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in job.frames]
    flow = cv2.calcOpticalFlowFarneback(grey[2], grey[3], None, 0.5, 3, 15, 3, 5, 1.2, 0)
    # Random texture has no region for the arrow to segment, so the motion stays near the
    # stroke (tests/test_classic_dynamics.py measures motion inside a segmented region).
    corner = np.abs(flow[:16, :16]).mean()
    assert corner < 0.2  # far from the arrow nothing moves
    steps = [np.abs(a.astype(float) - b).mean() for a, b in zip(job.frames, job.frames[1:], strict=False)]
    seam = np.abs(job.frames[-1].astype(float) - job.frames[0]).mean()
    assert seam <= np.median(steps) * 1.05, (seam, np.median(steps))


def test_session_resumes_after_restart(tmp_path, scenes_dir):
    config = BackendConfig(bind="tcp://127.0.0.1:0", sessions=tmp_path / "s")
    image = load(scenes_dir / "56_village.jpg", 128)
    with Backend(config) as backend, ScriptedClient(backend.address) as client:
        opened = client.open_scene(image, scene_id="village")
        poses = stock_path("rotate_right", 7, opened.scene.median_depth)
        job = client.transition("village", poses)
        assert isinstance(job.outcome, JobDone)
        before = np.concatenate(opened.points.xyz + job.points.xyz)
        clip = job.outcome.clip
        token = client.client.token  # the loopback identity that owns "village"
    with Backend(config) as backend, ScriptedClient(backend.address, token=token) as client:
        resumed = client.open_scene(None, scene_id="village", resume=True)
        assert resumed.scene.resumed
        after = np.concatenate(resumed.points.xyz)
        np.testing.assert_array_equal(np.sort(after, axis=0), np.sort(before, axis=0))
        np.testing.assert_allclose(np.array(resumed.scene.pose).reshape(4, 4), poses[-1], atol=1e-6)
        # the clip's path is relative to the sessions root, in the scene's session folder
        folder = resumed.scene.session
        assert folder.startswith("village-") and clip == f"{folder}/clips/0001.mp4"
        frames = read_mp4(tmp_path / "s" / clip)
        assert len(frames) == 7
        assert psnr(frames[0], job.frames[0]) > 30
        more = client.transition("village", stock_path("forward", 5, resumed.scene.median_depth,
                                                    start=poses[-1]))
        assert isinstance(more.outcome, JobDone)
        assert (tmp_path / "s" / folder / "clips" / "0002.mp4").is_file()


def test_raw_frames_are_the_engines_own_pixels(backend, scenes_dir):
    """A clip asked for as ``raw`` arrives exactly as the engine rendered it (the same engine
    run here on the photo as the backend decoded it); as ``jpeg`` it carries the codec's
    noise."""
    from backend.engines.base import FrameOut, OpenRequest, TransitionRequest
    from backend.engines.classic import ClassicEngine
    from protocol import codec, requests

    image = load(scenes_dir / "03_ancient.jpg")
    poses = None
    with ScriptedClient(backend.address, credits=4) as client:
        clips = {}
        for name in ("raw", "jpeg"):
            opened = client.open_scene(image, scene_id=name)
            poses = stock_path("rotate_right", n_frames=5, median_depth=opened.scene.median_depth)
            clips[name] = client.transition(name, poses, frame_codec=name)
    sent, blobs = requests.open_scene("local", image)
    photo = codec.decode_image(sent.image, [memoryview(b) for b in blobs])
    engine = ClassicEngine(depth_model="none")
    scene, _ = engine.open_scene(OpenRequest("local", photo))
    wire = poses.astype(np.float32).astype(np.float64)  # poses travel as float32
    local = [ev.image for ev in engine.transition(scene, TransitionRequest(wire))
             if isinstance(ev, FrameOut)]
    assert len(local) == len(clips["raw"].frames) == 5
    for ours, raw, jpeg in zip(local, clips["raw"].frames, clips["jpeg"].frames, strict=True):
        np.testing.assert_array_equal(raw, ours)
        assert 35 < psnr(jpeg, ours) < 80
