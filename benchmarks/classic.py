"""The classic engine end to end: a 49-frame 512x512 transition on three shared scenes.

A backend runs in this process on loopback; a scripted client opens each scene, sends the
backward preset and receives every frame (JPEG on the wire). Prints one JSON object as its
last line: ttff_s (request to first frame received), total_s, realtime_factor (clip length at
24 fps over generation time) and consistency (Make-It-4D's metric x100 on consecutive received
frames, warped with depth rendered from the cloud the client received; lower is better).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.geometry.cloud import PointCloud  # noqa: E402
from backend.geometry.metrics import consistency  # noqa: E402
from backend.geometry.render import SplatRenderer  # noqa: E402
from backend.server import Backend, BackendConfig  # noqa: E402
from protocol import codec  # noqa: E402
from protocol.scripted import ScriptedClient  # noqa: E402
from protocol.trajectory import preset  # noqa: E402

SCENES = Path(__file__).resolve().parents[2] / "shared" / "scenes"
DEFAULT_SCENES = ("03_ancient", "09_countryside", "58_woodland")


def clip_consistency(frames, poses, points, K) -> float:
    """Mean consistency over consecutive frame pairs, depth from the received cloud."""
    cloud = PointCloud(np.concatenate(points.xyz), np.concatenate(points.rgb),
                       np.concatenate(points.radius))
    h, w = frames[0].shape[:2]
    depth = SplatRenderer("cpu").render(cloud, np.stack(poses), K, w, h).numpy().depth
    scores = [consistency(frames[t], frames[t + 1], depth[t], poses[t], poses[t + 1], K, depth[t + 1]).error
              for t in range(len(frames) - 1)]
    return float(np.nanmean(scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenes", nargs="+", default=list(DEFAULT_SCENES))
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--preset", default="backward")
    args = parser.parse_args()
    torch.set_num_threads(2)
    logging.basicConfig(level=logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        config = BackendConfig(bind="tcp://127.0.0.1:0", sessions=Path(tmp), save_clips=False)
        with Backend(config) as backend, ScriptedClient(backend.address, credits=8) as client:
            for name in args.scenes:
                with Image.open(SCENES / f"{name}.jpg") as im:
                    image = np.asarray(im.convert("RGB").resize((args.size, args.size)))
                opened = client.open_scene(image, scene_id=name)
                poses = preset(args.preset, args.frames, opened.scene.median_depth)
                job = client.transition(name, poses)
                points = opened.points
                points.xyz += job.points.xyz
                points.rgb += job.points.rgb
                points.radius += job.points.radius
                K = codec.k_array(opened.scene.K)
                total = job.frame_times[-1]
                row = {
                    "scene": name,
                    "ttff_s": job.frame_times[0],
                    "total_s": total,
                    "realtime_factor": (args.frames / 24.0) / total,
                    "consistency": clip_consistency(job.frames, job.poses, points, K),
                }
                rows.append(row)
                print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))
    result = {
        "scenes": [r["scene"] for r in rows],
        "frames": args.frames,
        "size": args.size,
        "ttff_s": round(float(np.median([r["ttff_s"] for r in rows])), 3),
        "total_s": round(float(np.median([r["total_s"] for r in rows])), 3),
        "realtime_factor": round(float(np.median([r["realtime_factor"] for r in rows])), 3),
        "consistency": round(float(np.mean([r["consistency"] for r in rows])), 4),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
