"""`dreamjourney demo` end to end: a real backend process, the headless app, a real MP4."""

from __future__ import annotations

import json
import subprocess
import sys

import av
import numpy as np
import pytest


@pytest.mark.slow
@pytest.mark.timeout(2400)  # five clips' worth of work, rendered headless on the CPU
# (at 320x180, like the other window tests' small windows: 88 CPU-seconds, 62 s on a quiet
# 2-core machine, against 242 CPU-seconds and 159 s at the default 640x360; several times
# that beside busy cores)
def test_demo_writes_a_journey_of_at_least_ten_seconds(tmp_path):
    out = tmp_path / "journey.mp4"
    proc = subprocess.run(
        [sys.executable, "-m", "explorer.cli", "demo", "--out", str(out), "--size", "320x180"],
        capture_output=True, text=True, timeout=2400, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        fps = float(stream.average_rate)
    assert stream.codec_context.name == "h264"
    assert len(frames) / fps >= 10.0
    # the journey moves: frames across the clip differ, and none is blank
    means = np.array([f.mean() for f in frames])
    assert means.min() > 10
    assert np.abs(frames[len(frames) // 2].astype(int) - frames[0]).mean() > 5
    assert np.abs(frames[-1].astype(int) - frames[len(frames) // 2]).mean() > 5
    # the backend saved the committed transitions in the session; the pause asked for dynamics
    manifests = list((tmp_path / "sessions").glob("*/manifest.json"))
    assert len(manifests) == 1
    clips = json.loads(manifests[0].read_text())["clips"]
    assert [c["kind"] for c in clips].count("transition") >= 3
    assert "dynamics at the current view" in proc.stdout + proc.stderr
    # the keyframe editor flew the packaged camera path (configs/paths/demo.json) and sent it
    assert "keyframe path sent" in proc.stdout + proc.stderr
