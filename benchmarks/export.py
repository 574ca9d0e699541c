"""Exporting a large world as 3D Gaussian splats: time and peak memory.

A world of ``--points`` points (default 4M) is made the way the classic engine makes one:
three shared scenes' photos lifted with the horizon prior from a row of viewpoints a little
apart (each view a full 512 x 512 grid of points). It is saved as a session cloud PLY, then
``dreamjourney export --as splats`` runs on it in a fresh child process (the command's own
code path), which reports:

- ``export_s``: wall time of the export (reading the session's PLY, normals, writing), and
  ``cpu_s`` the CPU time it took (all threads: on a busy machine the wall time grows, this
  does not);
- ``peak_mb``: the child's peak resident memory during the export over its resident memory
  just before it (imports done, nothing read), so the interpreter itself is not counted;
- ``ply_mb``: the size of the splat PLY written; ``export_peak_over_ply`` = peak_mb / ply_mb.

That is the default file (SH degree 0); ``sh3`` repeats it with ``--sh-degree 3`` (45 zero
``f_rest`` more per Gaussian, a file 3.6 times larger: the disk's write speed then dominates).
Goals (issue 25), on the default: ``export_s`` at most 10, ``export_peak_over_ply`` at most
1.5. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.geometry.cloud import PointCloud  # noqa: E402
from backend.geometry.depth import horizon_depth  # noqa: E402
from backend.geometry.ply import write_ply  # noqa: E402
from backend.geometry.unproject import unproject  # noqa: E402
from protocol.camera import intrinsics  # noqa: E402

SCENES = ROOT.parent / "shared" / "scenes"
DEFAULT_SCENES = ("03_ancient", "09_countryside", "58_woodland")
GOALS = {"export_s_max": 10.0, "export_peak_over_ply_max": 1.5}


def make_world(points: int, size: int = 512) -> PointCloud:
    """``points`` points from the shared scenes, lifted at viewpoints 0.2 median depths apart."""
    K = intrinsics(size, size, 60.0)
    parts, total, view = [], 0, 0
    while total < points:
        name = DEFAULT_SCENES[view % len(DEFAULT_SCENES)]
        image = np.asarray(Image.open(SCENES / f"{name}.jpg").convert("RGB").resize((size, size)))
        depth = horizon_depth(image, K)
        pose = np.eye(4)
        pose[0, 3] = 0.2 * float(np.median(depth)) * view
        cloud = unproject(image, depth, K, pose)
        parts.append(cloud.take(slice(0, points - total)))
        total += len(parts[-1])
        view += 1
    return PointCloud.concat(parts)


class _AsSaved:
    """The world as the session store saves a point store (its cloud as a PLY), as made:
    de-duplication is not what is measured."""

    def __init__(self, cloud: PointCloud):
        self.cloud = cloud

    def save(self, path) -> None:
        write_ply(path, self.cloud)


def child(session: str, out: str, degree: str) -> None:
    """Run the export command in this process; print its time and memory as JSON."""
    import backend.export.session_export  # noqa: F401 - imports done before the baseline
    import backend.geometry.ply  # noqa: F401
    from explorer.cli import main

    base_kb = _rss_kb()
    start = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = start.ru_utime + start.ru_stime
    t0 = time.perf_counter()
    code = main(["export", session, "--as", "splats", "--out", out, "--sh-degree", degree])
    seconds = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"code": code, "export_s": seconds, "base_kb": base_kb, "peak_kb": usage.ru_maxrss,
                      "cpu_s": usage.ru_utime + usage.ru_stime - cpu0}))


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure(session: str, out: Path, degree: str) -> dict:
    """One export in a fresh child process: its time, peak memory and file size."""
    run = subprocess.run([sys.executable, __file__, "--child", session, str(out), degree],
                         capture_output=True, text=True, check=False)
    if run.returncode != 0:
        sys.exit(f"export failed: {run.stderr.strip().splitlines()[-1:]}")
    measured = json.loads(run.stdout.strip().splitlines()[-1])
    ply_mb = out.stat().st_size / 2**20
    peak_mb = (measured["peak_kb"] - measured["base_kb"]) / 1024
    out.unlink()
    return {"export_s": round(measured["export_s"], 3), "cpu_s": round(measured["cpu_s"], 2),
            "peak_mb": round(peak_mb, 1),
            "ply_mb": round(ply_mb, 1), "export_peak_over_ply": round(peak_mb / ply_mb, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=4_000_000)
    parser.add_argument("--child", nargs=3, metavar=("SESSION", "OUT", "DEGREE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    from backend.session import SessionStore
    from protocol.messages import SceneText

    with tempfile.TemporaryDirectory(prefix="dj-export-bench-") as tmp:
        world = make_world(args.points)
        K = intrinsics(512, 512, 60.0)
        SessionStore(Path(tmp) / "sessions").create("world", np.zeros((512, 512, 3), np.uint8), K,
                                                    SceneText(), "classic", 1.0, store=_AsSaved(world))
        del world
        session = str(Path(tmp) / "sessions" / "world")
        result = {"points": args.points, **measure(session, Path(tmp) / "w0.ply", "0"),
                  "sh3": measure(session, Path(tmp) / "w3.ply", "3"), "goals": GOALS}
        result["goals_met"] = {
            "export_s": result["export_s"] <= GOALS["export_s_max"],
            "export_peak_over_ply": result["export_peak_over_ply"] <= GOALS["export_peak_over_ply_max"],
        }
        print(json.dumps(result))


if __name__ == "__main__":
    main()
