"""Peak GPU memory of a transition per preset and memory profile, estimated without a GPU.

Every preset's published models are built at full size on the meta device; weights are counted
from their parameters as each profile places them, activations by tracking every tensor the
phases of a transition make (backend/models/memory_estimate.py says what is and is not
included). Goals: ``interactive_16gb_peak_gb`` <= 16 and ``paper_24gb_peak_gb`` <= 24.
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.models.memory import PROFILE_NAMES  # noqa: E402
from backend.models.memory_estimate import estimate_preset  # noqa: E402
from configs import model_names  # noqa: E402

GOALS = {"interactive_16gb_peak_gb": 16.0, "paper_24gb_peak_gb": 24.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="paper,interactive",
                        help="comma-separated configs/models names, or 'all'")
    args = parser.parse_args()
    names = (model_names() if args.presets == "all"
             else args.presets.split(","))
    table = {}
    for name in names:
        start = time.perf_counter()
        estimate = estimate_preset(name)
        table[name] = estimate
        peaks = ", ".join(f"{p} {estimate.peak_gb[p]:.1f} GB" for p in PROFILE_NAMES)
        left_out = f"; not counted: {', '.join(estimate.skipped)}" if estimate.skipped else ""
        print(f"{name} ({estimate.model}): {peaks}{left_out}  "
              f"[{time.perf_counter() - start:.0f} s]", flush=True)
    summary = {
        "benchmark": "memory",
        "device": "meta (no GPU; weights + tracked activations, no CUDA context)",
        "peak_gb": {n: e.peak_gb for n, e in table.items()},
        "phases_gb": {n: e.phases_gb for n, e in table.items()},
    }
    if "interactive" in table:
        summary["interactive_16gb_peak_gb"] = table["interactive"].peak_gb["16gb"]
    if "paper" in table:
        summary["paper_24gb_peak_gb"] = table["paper"].peak_gb["24gb"]
    summary["goals"] = {k: f"<= {v}" for k, v in GOALS.items()}
    summary["goals_met"] = all(summary.get(k, float("inf")) <= v for k, v in GOALS.items())
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
