"""Hole-filling speed and texture: texture_fill vs mirror_fill vs OpenCV Telea, one core.

Each shared scene at 512x512 gets a hole of about 40 %: a band along the right frame edge
(what rotating right reveals) plus a disc (a disocclusion); depth is the horizon prior. The
three fills run interleaved ``--repeats`` times in one process with OpenCV on one thread;
``ms`` is the median per fill. On the same images (the photo is the answer), the texture
metrics inside the hole relative to the photo's own: ``hf_ratio`` (detail energy, 1 = as
detailed as the photo, Telea ~0), ``coherence_excess`` (structure coherence minus the
photo's: streaks raise it) and ``mirror_corr`` (detail correlation with the mirror image
across the band's edge: 1 = a reflection) and ``block_seams`` (steps across the search's
4 px block grid over steps elsewhere: 1 = no mosaic). Last line: one JSON object; goal
``texture_fill`` <= 60 ms on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from backend.geometry.depth import horizon_depth
from backend.geometry.fill import mirror_fill, texture_fill
from backend.geometry.texture_stats import (
    block_seam_ratio,
    coherence,
    high_frequency_energy,
    mirror_correlation,
)
from protocol.camera import intrinsics

SCENES = Path(__file__).resolve().parents[2] / "shared" / "scenes"
NAMES = ("03_ancient", "09_countryside", "58_woodland")
BAND = 0.76  # the band starts at this fraction of the width


def case(name: str, size: int = 512) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    bgr = cv2.resize(cv2.imread(str(SCENES / f"{name}.jpg")), (size, size), interpolation=cv2.INTER_AREA)
    img = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    depth = horizon_depth(img, intrinsics(size, size, 60.0)).astype(np.float32)
    hole = np.zeros((size, size), np.uint8)
    hole[:, int(BAND * size) :] = 1
    cv2.circle(hole, (int(0.35 * size), int(0.55 * size)), int(0.23 * size), 1, -1)
    hole = hole.astype(bool)
    return img, np.where(hole, 0, depth).astype(np.float32), hole


def fills():
    return {
        "texture_fill": lambda img, dep, hole: texture_fill(img, dep, hole).image,
        "mirror_fill": lambda img, dep, hole: mirror_fill(img, dep, hole).image,
        "telea": lambda img, dep, hole: cv2.inpaint(img, hole.astype(np.uint8), 3, cv2.INPAINT_TELEA),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    cases = {name: case(name, args.size) for name in NAMES}
    methods = fills()
    times = {m: [] for m in methods}
    metrics = {m: {"hf_ratio": [], "coherence_excess": [], "mirror_corr": [], "block_seams": []}
               for m in methods}
    edge = int(BAND * args.size)
    for img, dep, hole in cases.values():
        for m, fn in methods.items():
            out = fn(img, dep, hole)
            metrics[m]["hf_ratio"].append(high_frequency_energy(out, hole) / high_frequency_energy(img, hole))
            metrics[m]["coherence_excess"].append(coherence(out, hole) - coherence(img, hole))
            metrics[m]["mirror_corr"].append(mirror_correlation(out, edge, 32, slice(16, -16)))
            metrics[m]["block_seams"].append(block_seam_ratio(out, hole, 4))
    for _ in range(args.repeats):
        for img, dep, hole in cases.values():
            for m, fn in methods.items():
                start = time.perf_counter()
                fn(img, dep, hole)
                times[m].append(time.perf_counter() - start)
    ms = {m: round(1e3 * float(np.median(t)), 1) for m, t in times.items()}
    hole_frac = float(np.mean([c[2].mean() for c in cases.values()]))
    result = {
        "size": args.size,
        "hole_frac": round(hole_frac, 3),
        "ms": ms,
        "texture_vs_telea": round(ms["texture_fill"] / ms["telea"], 2),
        "texture_vs_mirror": round(ms["texture_fill"] / ms["mirror_fill"], 2),
        "goal_ms": 60,
        **{k: {m: round(float(np.mean(v[k])), 3) for m, v in metrics.items()}
           for k in ("hf_ratio", "coherence_excess", "mirror_corr", "block_seams")},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
