"""EngineWorker: a Ray actor holding resident engines and a few scenes.

A job is :meth:`EngineWorker.run`, a streaming generator yielding the engine's own events
(ProgressOut, FrameOut, PointsOut; numpy arrays travel through the object store). The front door
reads them under the explorer's credit; the generator's backpressure keeps the worker at most
``frames_ahead`` events ahead. One job runs at a time (the default concurrency group);
:meth:`info` answers from its own group while a job runs.

Scenes arrive as object-store copies named by a version token. A worker keeps the scenes it
ran last; a job whose token matches the resident copy skips the fetch, and a transition's
result is kept under the token the front door gives the grown scene.
"""

from __future__ import annotations

import copy
import importlib
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Iterator

import ray

from backend.engines import create_engine
from backend.engines.base import Engine, EngineError, Event, FrameOut, OpenRequest, PointsOut, Scene


def _device_name(device: str) -> str:
    if not device.startswith("cuda"):
        return device
    import torch

    return f"{device} ({torch.cuda.get_device_name(0)})"


class EngineWorker:
    """Engines created once and kept resident; jobs run one at a time."""

    def __init__(self, name: str, device: str, engine_options: dict, engine_classes: dict,
                 preload: list[str], scenes_kept: int = 4):
        self.name = name
        self.device = "cuda" if ray.get_gpu_ids() else device
        self.engine_options = engine_options
        self.engine_classes = engine_classes
        self.scenes_kept = scenes_kept
        self._engines: dict[str, Engine] = {}
        self._scenes: OrderedDict[str, tuple[str, Scene]] = OrderedDict()
        self._job: dict | None = None
        self.jobs_done = 0
        for engine in preload:
            self.engine(engine)

    def engine(self, name: str) -> Engine:
        if name not in self._engines:
            options = {"device": self.device, **self.engine_options.get(name, {})}
            target = self.engine_classes.get(name)
            if target:
                module, cls = target.split(":")
                self._engines[name] = getattr(importlib.import_module(module), cls)(**options)
            else:
                self._engines[name] = create_engine(name, **options)
        return self._engines[name]

    @ray.method(concurrency_group="control")
    def info(self) -> dict:
        """Where this worker runs, what it holds and what it is doing."""
        job = self._job
        return {
            "name": self.name, "node": ray.util.get_node_ip_address(), "host": socket.gethostname(),
            "pid": os.getpid(), "device": _device_name(self.device), "engines": sorted(self._engines),
            "scenes": {sid: token for sid, (token, _) in self._scenes.items()},
            "job": None if job is None else dict(job, busy_s=time.monotonic() - job["started"]),
            "jobs_done": self.jobs_done,
        }

    def open_scene(self, engine: str, request: OpenRequest) -> tuple[Scene, object]:
        return self.engine(engine).open_scene(request)

    def resume_scene(self, engine: str, scene_id: str, sessions) -> tuple[Scene, object]:
        return self.engine(engine).resume_scene(scene_id, sessions)

    def run(self, engine: str, kind: str, scene_id: str, token: str, scene_box: list,
            request, token_out: str | None) -> Iterator[Event]:
        """Run one job, yielding the engine's events (a Ray streaming generator).

        ``scene_box`` holds the scene's object ref, boxed so Ray does not fetch it before
        the worker knows whether its resident copy is current.
        """
        # 1. the scene: the resident copy if it is this version, else fetch it
        resident = self._scenes.pop(scene_id, None)
        if resident and resident[0] == token:
            scene = resident[1]
        elif scene_box[0] is not None:
            scene = copy.deepcopy(ray.get(scene_box[0]))  # own, writable arrays: the job grows them
        else:
            raise EngineError(f"{self.name} no longer holds scene {scene_id!r}; resubmit the job")
        self._job = {"kind": kind, "scene_id": scene_id, "started": time.monotonic(), "events": 0,
                     "frames": 0}
        run = self.engine(engine).transition if kind == "transition" else self.engine(engine).dynamics
        context = ray.get_runtime_context()
        kept_as = token
        try:
            # 2. stream the engine's events; stop between two events once cancelled
            for event in run(scene, request):
                if context.is_canceled():
                    return
                if isinstance(event, PointsOut) and token_out is not None:
                    kept_as = token_out  # the scene now is the grown version
                self._job["events"] += 1
                self._job["frames"] += isinstance(event, FrameOut)
                yield event
            self.jobs_done += 1
            # 3. keep the scene resident under the version it now has
            self._scenes[scene_id] = (kept_as, scene)
            while len(self._scenes) > self.scenes_kept:
                self._scenes.popitem(last=False)
        finally:
            self._job = None
