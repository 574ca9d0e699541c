"""Run the guided video sampler so that its steps become ProgressOut events and cancel works.

A sampling call blocks for many seconds, but the server streams events and stops a cancelled
job by closing its generator between two events. ``sample_with_progress`` runs the sampler on
a worker thread that feeds a queue from ``callback_on_step_end``; the generator yields one
ProgressOut per step and returns the sampler's output (use it with ``yield from``). When the
generator is closed mid-run it calls ``sampler.interrupt()`` and joins the worker, so the model
is idle again once the close returns. The sampler stops at the final latents;
``stream_clip`` decodes them piece by piece (the VAE's temporal tiles where the family has
them), so the first frames go out before the clip is decoded.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Generator, Iterator
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch

from backend.engines.base import ProgressOut
from backend.engines.diffusion_video import time_indices
from backend.guidance import GuidanceConfig, GuidedSampleOutput, GuidedVideoSampler, PriorVideo
from backend.models.adapters import PromptEmbeds

log = logging.getLogger(__name__)


def sample_with_progress(
    sampler: GuidedVideoSampler,
    image: np.ndarray,
    prior: PriorVideo | None,
    config: GuidanceConfig,
    generator: torch.Generator | None = None,
    lock: AbstractContextManager | None = None,
    stage: str = "sample",
    prompt_embeds: PromptEmbeds | None = None,
) -> Generator[ProgressOut, None, GuidedSampleOutput]:
    """Progress per denoising step, then the output (the generator's return value), its
    latents undecoded (``output_type="latent"``: decode them with :func:`stream_clip`).

    ``lock`` (held by the worker around the call) keeps two jobs off one resident model.
    """
    events: queue.Queue = queue.Queue()
    total = config.num_inference_steps

    def on_step(_sampler, i, _t, kwargs):
        events.put(("step", i, kwargs.get("guided", False), kwargs.get("loss")))

    def work() -> None:
        try:
            with lock if lock is not None else nullcontext():
                out = sampler(image, prior, config, generator=generator, callback_on_step_end=on_step,
                              prompt_embeds=prompt_embeds, output_type="latent")
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
                yield ProgressOut(stage, i + 1, total, note)
            elif kind == "done":
                return rest[0]
            else:
                raise rest[0]
    finally:
        if worker.is_alive():
            log.info("sampling stopped before its end: interrupting the sampler")
            sampler.interrupt()
            worker.join()


PROMPTS_PER_SCENE = 8
"""Prompt embeddings kept per scene (the oldest go first)."""


class PromptCache:
    """Prompt embeddings per scene, so the text encoder runs once per prompt (and memory
    profiles that offload it can leave it off the GPU)."""

    def __init__(self, lock: AbstractContextManager) -> None:
        self._lock = lock
        self._scenes: dict[str, dict[tuple, PromptEmbeds]] = {}

    def get(self, scene_id: str, adapter, config: GuidanceConfig) -> PromptEmbeds:
        cache = self._scenes.setdefault(scene_id, {})
        cfg = config.guidance_scale > 1.0
        key = (id(adapter), config.prompt, config.negative_prompt, config.max_sequence_length, cfg)
        if key not in cache:
            with self._lock:
                cache[key] = adapter.encode_prompt(config.prompt, config.negative_prompt, cfg,
                                                   config.max_sequence_length)
            while len(cache) > PROMPTS_PER_SCENE:
                cache.pop(next(iter(cache)))
        return cache[key]

    def forget(self, scene_id: str) -> None:
        self._scenes.pop(scene_id, None)


def stream_frames(sampler: GuidedVideoSampler, out: GuidedSampleOutput, config: GuidanceConfig,
                  generator: torch.Generator | None, box, count: int,
                  lock: AbstractContextManager | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(request frame index, scene-sized frame) for ``count`` frames evenly spaced in time over
    the clip, each as soon as the decoded piece holding it is final (``box``: the engine's
    Letterbox from the model's size back to the scene's)."""
    wanted = time_indices(count, config.num_frames)
    i = 0
    for start, piece in stream_clip(sampler, out, config, generator, lock):
        picked = []
        while i < count and wanted[i] < start + len(piece):
            picked.append((i, int(wanted[i]) - start))
            i += 1
        if picked:
            frames = box.frames_out(piece[[k for _, k in picked]])
            for (index, _), frame in zip(picked, frames, strict=True):
                yield index, frame


def stream_clip(sampler: GuidedVideoSampler, out: GuidedSampleOutput, config: GuidanceConfig,
                generator: torch.Generator | None = None,
                lock: AbstractContextManager | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(first clip frame index, T' x H x W x 3 uint8) as each decoded piece is final, the
    padding dropped; ``lock`` is held while a piece decodes, not between pieces."""
    pieces = sampler.iter_frames(out.latents, config, generator)
    while True:
        with lock if lock is not None else nullcontext():
            piece = next(pieces, None)
        if piece is None:
            return
        yield piece
