"""Run the guided video sampler so that its steps become Progress events and cancel works.

A sampling call blocks for many seconds, but the server streams events and stops a cancelled
job by closing its generator between two events. ``sample_with_progress`` runs the sampler on
a worker thread that feeds a queue from ``callback_on_step_end``; the generator yields one
Progress per step and returns the sampler's output (use it with ``yield from``). When the
generator is closed mid-run it calls ``sampler.interrupt()`` and joins the worker, so the model
is idle again once the close returns.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Generator
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch

from backend.engines.base import Progress
from backend.guidance import GuidanceConfig, GuidedSampleOutput, GuidedVideoSampler, PriorVideo

log = logging.getLogger(__name__)


def sample_with_progress(
    sampler: GuidedVideoSampler,
    image: np.ndarray,
    prior: PriorVideo | None,
    config: GuidanceConfig,
    generator: torch.Generator | None = None,
    lock: AbstractContextManager | None = None,
    stage: str = "sample",
) -> Generator[Progress, None, GuidedSampleOutput]:
    """Progress per denoising step, then the output (the generator's return value).

    ``lock`` (held by the worker around the call) keeps two jobs off one resident model.
    """
    events: queue.Queue = queue.Queue()
    total = config.num_inference_steps

    def on_step(_sampler, i, _t, kwargs):
        events.put(("step", i, kwargs.get("guided", False), kwargs.get("loss")))

    def work() -> None:
        try:
            with lock if lock is not None else nullcontext():
                out = sampler(image, prior, config, generator=generator, callback_on_step_end=on_step)
            events.put(("done", out))
        except BaseException as exc:  # handed to the generator's thread
            events.put(("error", exc))

    worker = threading.Thread(target=work, name="dj-sampler", daemon=True)
    worker.start()
    try:
        while True:
            kind, *rest = events.get()
            if kind == "step":
                i, guided, loss = rest
                note = "guided by the rendered frames" if guided else "free (no prior)"
                if loss is not None:
                    note += f", prior loss {loss:.4g}"
                yield Progress(stage, i + 1, total, note)
            elif kind == "done":
                return rest[0]
            else:
                raise rest[0]
    finally:
        if worker.is_alive():
            log.info("sampling stopped before its end: interrupting the sampler")
            sampler.interrupt()
            worker.join()
