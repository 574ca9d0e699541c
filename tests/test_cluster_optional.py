"""Ray is an optional extra: without --cluster nothing imports it, and --cluster says what to install."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from backend.cluster import ClusterConfig, ClusterConfigError

NO_RAY = textwrap.dedent("""
    import sys

    class NoRay:  # ray cannot be imported, and every attempt is recorded
        tried = []
        def find_spec(self, name, path=None, target=None):
            if name == "ray" or name.startswith("ray."):
                NoRay.tried.append(name)
                raise ImportError(f"No module named {name!r} (hidden by the test)", name=name)
            return None

    sys.meta_path.insert(0, NoRay())
""")

SERVE_AND_FLY = NO_RAY + textwrap.dedent("""
    import numpy as np, tempfile
    from backend.server import Backend, BackendConfig
    from protocol.messages import JobDone, Status, StatusReply
    from protocol.scripted import ScriptedClient
    from protocol.trajectory import stock_path

    config = BackendConfig(bind="tcp://127.0.0.1:0", sessions=tempfile.mkdtemp())
    with Backend(config) as backend, ScriptedClient(backend.address) as client:
        img = (np.indices((64, 64)).sum(0) % 255).astype(np.uint8)[..., None].repeat(3, -1)
        opened = client.open_scene(img, scene_id="noray")
        job = client.transition("noray", stock_path("forward", 5, opened.scene.median_depth))
        assert isinstance(job.outcome, JobDone), job.outcome
        client.client.send(Status(request_id="s"))
        while not isinstance((ev := client.client.poll(timeout=10)).msg, StatusReply):
            pass
        assert ev.msg.cluster == "" and ev.msg.workers[0].name == "local-0", ev.msg
    assert "ray" not in sys.modules and not NoRay.tried, NoRay.tried
    print("ok", len(job.frames))
""")


@pytest.mark.slow  # a backend process started and flown end to end
def test_backend_serves_without_ray(tmp_path):
    script = tmp_path / "noray.py"
    script.write_text(SERVE_AND_FLY)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok 5")


@pytest.mark.slow  # a `dreamjourney serve` process
def test_cluster_without_ray_is_a_one_line_error(tmp_path):
    script = tmp_path / "serve.py"
    script.write_text(NO_RAY + "from explorer.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    out = subprocess.run([sys.executable, str(script), "serve", "--bind", "tcp://127.0.0.1:0",
                          "--sessions", str(tmp_path / "s"), "--cluster", "auto"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 2
    assert out.stderr.strip() == "error: --cluster needs Ray: pip install 'dreamjourney[cluster]'"


def test_cluster_options_are_checked():
    assert ClusterConfig.from_dict({"workers": 3}).workers == 3
    with pytest.raises(ClusterConfigError, match="unknown field `worker`"):
        ClusterConfig.from_dict({"worker": 3})
    with pytest.raises(ClusterConfigError, match="frames_ahead must be at least 1"):
        ClusterConfig.from_dict({"frames_ahead": 0})
