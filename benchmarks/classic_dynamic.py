"""Issue 24's ``dynamic_transition`` row of ``benchmarks/classic.py`` (``--parts dynamic``), or
alone: ``python benchmarks/classic_dynamic.py [--scenes ...] [--sheets DIR]``.

For each scene: a lake is composited into the photo (``synthetic.composite_water``) and two
scenes are opened from it through the loopback backend. One stays static; the other gets a
48-frame Dynamics with three arrows on the lake first, so its lake's points keep moving (4D
points). Both then fly the same stock camera path. Per scene:

- ``static_consistency``: Make-It-4D's consistency of the static scene's clip (all pixels);
- ``dynamic_static_consistency``: the same metric on the moving world's clip, over the pixels
  whose front point is static at that frame's time (the pixels where a moving point's forward
  or backward copy is in front, grown by 2 px, left out): the part of the world that must stay
  as consistent as before (goal: at most the static clip's on the same pixels + 0.1,
  ``static_part_ok``; ``static_part_ok_vs_whole_clip`` compares with the static clip over
  all its pixels, lake included, which is a different set of pixels);
- ``motion_frames``: the share of consecutive frame pairs in which the region moves: its
  pixels' consistency error in the moving world's clip is above the static clip's at the same
  pixels by at least ``MOTION_MARGIN`` (goal 1.0: the motion is in every frame).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sheets import contact_sheet  # noqa: E402

from backend.config import BackendConfig  # noqa: E402
from backend.geometry.cloud import PointCloud  # noqa: E402
from backend.geometry.metrics import consistency  # noqa: E402
from backend.geometry.motion import copies_at  # noqa: E402
from backend.geometry.splat import SplatRenderer  # noqa: E402
from backend.geometry.synthetic import composite_water, water_strokes  # noqa: E402
from backend.server import Backend  # noqa: E402
from protocol import codec  # noqa: E402
from protocol.messages import Arrow  # noqa: E402
from protocol.scripted import ScriptedClient  # noqa: E402
from protocol.trajectory import stock_path  # noqa: E402

MOTION_MARGIN = 0.5
"""Consistency points (x100 L1) the moving region must add over the static clip's."""
DEFAULT_SCENES = ("03_ancient", "58_woodland")


def _cloud(points, moving: np.ndarray | None = None) -> PointCloud:
    cloud = PointCloud(np.concatenate(points.xyz), np.concatenate(points.rgb),
                       np.concatenate(points.radius))
    return cloud if moving is None else cloud.take(moving)


def _moving_flags(client: ScriptedClient, scene_id: str, n: int) -> np.ndarray:
    flags = np.zeros(n, bool)
    for msg, index, motion in client.motions:
        if msg.scene_id == scene_id:
            flags[index] = motion[:, 3] > 0
    return flags


def _moving_pixels(renderer, cloud: PointCloud, motion: np.ndarray, flags: np.ndarray,
                   pose: np.ndarray, K: np.ndarray, w: int, h: int, t: float) -> np.ndarray:
    """H x W: pixels whose front point is a moving one, in the render of the forward copies
    or of the backward copies at time ``t`` (the region where it is then), grown by 2 px."""
    c = copies_at(cloud.xyz, motion, t)
    hit = np.zeros((h, w), bool)
    for where in (c.forward, c.backward):
        xyz = cloud.xyz.copy()
        xyz[c.index] = where
        index = renderer.render(PointCloud(xyz, cloud.rgb, cloud.radius), pose[None], K, w, h,
                                return_index=True).numpy().index[0]
        hit |= np.where(index >= 0, flags[np.maximum(index, 0)], False)
    return cv2.dilate(hit.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0


def _pair_errors(frames, poses, depth, K, mask=None) -> list[float]:
    """Consistency of each consecutive pair, depth zeroed outside ``mask`` (B x H x W)."""
    out = []
    for t in range(len(frames) - 1):
        d0, d1 = depth[t], depth[t + 1]
        if mask is not None:
            d0 = np.where(mask[t], d0, 0)
        out.append(consistency(frames[t], frames[t + 1], d0, poses[t], poses[t + 1], K, d1).error)
    return out


def run_scene(client: ScriptedClient, name: str, image: np.ndarray, lake: np.ndarray,
              path_name: str, frames: int, frame_codec: str) -> dict:
    arrows = [Arrow(start=a, vector=((b[0] - a[0]) / 24, (b[1] - a[1]) / 24))
              for a, b in water_strokes(lake, 3)]
    clips = {}
    for kind in ("static", "dynamic"):
        sid = f"{name}-{kind}"
        opened = client.open_scene(image, scene_id=sid)
        if kind == "dynamic":
            client.dynamics(sid, np.eye(4), num_frames=48, arrows=arrows, frame_codec=frame_codec)
        poses = stock_path(path_name, frames, opened.scene.median_depth)
        job = client.transition(sid, poses, frame_codec=frame_codec)
        points = opened.points
        for field in ("xyz", "rgb", "radius"):
            getattr(points, field).extend(getattr(job.points, field))
        clips[kind] = (job, points, codec.k_array(opened.scene.K), sid)
    job_s, points_s, K, _ = clips["static"]
    job_d, points_d, _, sid = clips["dynamic"]
    h, w = job_d.frames[0].shape[:2]
    renderer = SplatRenderer("cpu")
    poses = np.stack(job_d.poses)
    cloud = _cloud(points_d)
    flags = _moving_flags(client, sid, len(cloud))
    motion = np.zeros((len(cloud), 4), np.float32)
    for msg, index, m in client.motions:
        if msg.scene_id == sid:
            motion[index] = m
    out = renderer.render(cloud, poses, K, w, h).numpy()
    moving_px = np.stack([_moving_pixels(renderer, cloud, motion, flags, poses[i], K, w, h,
                                         i / 24.0) for i in range(len(poses))])
    depth_s = renderer.render(_cloud(points_s), np.stack(job_s.poses), K, w, h).numpy().depth
    static_err = _pair_errors(job_s.frames, job_s.poses, depth_s, K)
    dyn_static = _pair_errors(job_d.frames, job_d.poses, out.depth, K, ~moving_px)
    static_same = _pair_errors(job_s.frames, job_s.poses, depth_s, K, ~moving_px)
    region_dyn = _pair_errors(job_d.frames, job_d.poses, out.depth, K, moving_px)
    region_static = _pair_errors(job_s.frames, job_s.poses, depth_s, K, moving_px)
    excess = np.array(region_dyn) - np.array(region_static)
    return {"scene": name, "path": path_name, "moving_points": int(flags.sum()),
            "moving_pixels": float(moving_px.mean()),
            "static_consistency": float(np.nanmean(static_err)),
            "dynamic_static_consistency": float(np.nanmean(dyn_static)),
            "static_clip_same_pixels": float(np.nanmean(static_same)),
            "region_excess_min": float(np.nanmin(excess)),
            "motion_frames": float(np.mean(excess >= MOTION_MARGIN)),
            "sheet": [job_d.frames[0], job_d.frames[len(job_d.frames) // 2], job_d.frames[-1],
                      job_s.frames[len(job_s.frames) // 2]]}


def lake_scenes(args, names) -> Iterator[tuple[str, np.ndarray, np.ndarray, ScriptedClient]]:
    """Each shared scene ``name`` at ``args.size`` with a lake composited into it (its image
    and lake mask), and a client of one loopback backend (closed after each scene)."""
    with tempfile.TemporaryDirectory() as tmp:
        config = BackendConfig(bind="tcp://127.0.0.1:0", sessions=Path(tmp), save_clips=False)
        with Backend(config) as backend:
            for k, name in enumerate(names):
                with Image.open(args.scenes_dir / f"{name}.jpg") as im:
                    photo = np.asarray(im.convert("RGB").resize((args.size, args.size)))
                image, lake = composite_water(photo, seed=100 + k)
                with ScriptedClient(backend.address, credits=8) as client:  # caps are per client
                    yield name, image, lake, client


def dynamic_transition_figures(args) -> dict:
    """The ``dynamic_transition`` row (module docstring); with ``args.sheets``, a contact
    sheet per scene (the moving world's first, middle and last frame, the static clip's
    middle one)."""
    rows = []
    for name, image, lake, client in lake_scenes(args, args.dynamic_scenes):
        row = run_scene(client, name, image, lake, args.dynamic_path, args.frames,
                        args.frame_codec)
        sheet = row.pop("sheet")
        if args.sheets:
            contact_sheet([sheet], args.sheets / f"{name}-dynamic.png")
        rows.append(row)
        print(json.dumps({key: round(v, 4) if isinstance(v, float) else v
                          for key, v in row.items()}), flush=True)
    mean = {key: round(float(np.mean([r[key] for r in rows])), 4) for key in
            ("static_consistency", "static_clip_same_pixels", "dynamic_static_consistency")}
    return {"dynamic_transition": {
        "scenes": list(args.dynamic_scenes), "path": args.dynamic_path, **mean,
        "static_part_ok": bool(all(r["dynamic_static_consistency"]
                                   <= r["static_clip_same_pixels"] + 0.1 for r in rows)),
        "static_part_ok_vs_whole_clip": bool(all(
            r["dynamic_static_consistency"] <= r["static_consistency"] + 0.1 for r in rows)),
        "motion_frames_min": round(float(min(r["motion_frames"] for r in rows)), 4),
        "motion_in_every_frame": bool(all(r["motion_frames"] == 1.0 for r in rows))}}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dynamic-scenes", nargs="+", default=list(DEFAULT_SCENES),
                        help="shared scenes for the dynamic_transition row")
    parser.add_argument("--dynamic-path", default="forward")


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frame-codec", choices=["raw", "jpeg", "png"], default="raw")
    parser.add_argument("--scenes-dir", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared" / "scenes")
    parser.add_argument("--sheets", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.sheets:
        args.sheets.mkdir(parents=True, exist_ok=True)
    print(json.dumps(dynamic_transition_figures(args)))


if __name__ == "__main__":
    main()
