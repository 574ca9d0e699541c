"""The diffusion engine: DreamJourney (Pan et al., TMM 2025) on diffusers and transformers.

- Open: depth from the depth model (relative disparity -> z-depth), else the client's depth,
  else the pop-up prior; lifted into the point store by a composed classic engine (its
  public API only), hidden background layers included.
- Transition (Stage I, paper sec. IV-A):
  1. render the start view I_0 and the end view from the cloud;
  2. ask the MLLM for the entities the end view should show, moving ones first (templates
     when no endpoint answers, said in a Progress message);
  3. fill the end view's holes with the inpainting pipeline, prompted by those entities;
  4. estimate its depth, align it to the rendered depth over the visible pixels and merge the
     unseen pixels into the cloud (streamed as PointsOut);
  5. render the partial frames at the request's poses resampled to the model's frame count,
     fitted to the model's size without squashing (scaled, the rest padded and marked unseen);
  6. guided sampling with the prior video (one Progress per step, cancellable);
  7. stream the decoded frames, the padding cropped off, at the request's poses and size;
  8. lift the last frame's still unseen pixels into the cloud, move the scene's pose.
- Dynamic transition (``request.dynamics``): as a transition, but step 6 composes, at every
  sampling step, Stage I's camera-guided score with the score under the dynamics prompt
  (Stage II's, written by the MLLM from the start view) as Diffusion^2's eq. 16, with the
  preset's logistic schedule (``dynamics_k``, ``dynamics_s0``) or the request's.
- Dynamics (Stage II, sec. IV-B): the MLLM's three-step dynamics prompt (check the candidate
  entities, describe their motion, write the prompt), then plain image-to-video (guidance mode
  ``none``) from the rendered, filled view; the clip's motion (optical flow,
  ``backend.clip_flow``) then stays in the world as 4D points (``backend.region_motion``).

Models come from a models TOML (``configs/models/<name>.toml`` or a path) through the shared
:class:`~backend.models.ModelRegistry` cache, so each loads once and stays resident. A
transition may name a preset (``paper``, ``interactive`` or any models config): its video model
and guidance settings replace the default ones for that clip.

Over 400 lines on purpose: the engine's transition and dynamics are numbered recipes that
read best whole; sampling and decoding already live in ``diffusion_sampling``/``_video``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import torch

from backend import region_motion
from backend.clip_flow import clip_region
from backend.engines.base import (
    DynamicsRequest,
    Engine,
    EngineError,
    Event,
    FrameOut,
    OpenRequest,
    PointsOut,
    ProgressOut,
    Scene,
    TransitionRequest,
)
from backend.engines.classic import ClassicEngine, inpaint
from backend.engines.depth_model import disparity_to_depth
from backend.engines.diffusion_dynamic import dynamics_prompt, with_schedule
from backend.engines.diffusion_sampling import PromptCache, sample_with_progress, stream_frames
from backend.engines.diffusion_video import (
    Letterbox,
    align_prediction,
    background_depth,
    fill_cracks,
    inpainter_multiple,
    resample_poses,
)
from backend.geometry.cloud import PointCloud
from backend.geometry.unproject import unproject
from backend.guidance import ComposedVideoSampler, GuidanceConfig, GuidedVideoSampler, PriorVideo
from backend.mllm import EntitiesResult, MLLMConfig, PromptAgent
from backend.models import DepthPrediction, ModelCache, ModelRegistry, named_config
from backend.models.memory import MemoryConfig
from protocol.camera import intrinsics

log = logging.getLogger(__name__)


def models_path(models: str | Path) -> Path:
    """A models TOML: a ``.toml`` path or an existing file as is, else a shipped config name."""
    path = Path(models).expanduser()
    if path.suffix == ".toml" or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"models config {path} does not exist")
        return path
    return named_config(str(models))


class DiffusionEngine(Engine):
    """DreamJourney's two stages on a resident depth model, inpainter and video model."""

    name = "diffusion"

    def __init__(
        self,
        device: str = "cpu",
        models: str | Path = "cogvideox",
        mllm: dict | None = None,
        guidance: dict | None = None,
        inpaint_steps: int = 30,
        inpaint_guidance: float = 7.5,
        min_hole_fraction: float = 0.002,
        preload: bool = False,
        cache: ModelCache | None = None,
        presets: dict[str, str] | None = None,
        memory: dict | None = None,
        **classic_options,
    ):
        """
        Args:
            device: where the splat renderer runs (models go where their spec says).
            models: a models config name (``cogvideox``, ``wan``, ``svd``) or a TOML path.
            mllm: :class:`~backend.mllm.MLLMConfig` fields; None or no ``base_url``: templates.
            guidance: :class:`~backend.guidance.GuidanceConfig` overrides, applied after the
                video spec's ``[video.guidance]`` table.
            inpaint_steps, inpaint_guidance: the end-view inpainting pipeline's settings.
            min_hole_fraction: smaller holes (cracks) are filled with OpenCV, not the pipeline.
            preload: load every model now instead of on first use.
            cache: model cache (default: the process-wide one).
            presets: preset name -> models TOML path, for names that are not
                ``configs/models/<name>.toml`` (``paper`` and ``interactive`` are).
            memory: :class:`~backend.models.memory.MemoryConfig` fields (``profile``:
                ``auto`` or ``80gb`` / ``48gb`` / ``24gb`` / ``16gb``; ``reserve_gb``): how the
                video model sits on a CUDA device.
            classic_options: the classic engine's options (layers, fov_x_deg, capacity, ...).
        """
        classic_options.pop("depth_model", None)  # the registry's depth model is used instead
        self.geometry = ClassicEngine(device=device, **classic_options)
        """Scene opening and point-cloud rendering (public API only)."""
        self.renderer = self.geometry.renderer
        self.memory = MemoryConfig.from_mapping(memory)
        self.registry = ModelRegistry.from_toml(models_path(models), cache=cache,
                                                memory=self.memory)
        if not self.registry.has("video"):
            raise ValueError(f"models config {models!r} has no [video] model")
        self.guidance = GuidanceConfig.from_mapping(
            {**self.registry.guidance_overrides(), **(guidance or {})})
        self.agent = PromptAgent(MLLMConfig(**(mllm or {})))
        self.inpaint_steps = inpaint_steps
        self.inpaint_guidance = inpaint_guidance
        self.min_hole_fraction = min_hole_fraction
        self._model_lock = threading.RLock()
        self.preset_paths = dict(presets or {})
        self._presets: dict[str, tuple[ModelRegistry, GuidanceConfig]] = {}
        self._entities: dict[str, EntitiesResult] = {}
        """Stage I entities of each scene's last transition: Stage II's candidates."""
        self._prompts = PromptCache(self._model_lock)
        """Prompt embeddings per scene: the text encoder runs once per prompt and model."""
        if preload:
            for role in ("depth", "inpaint", "video"):
                if self.registry.has(role):
                    self.registry.get(role)

    # -- models --

    def _predict_depth(self, image: np.ndarray) -> DepthPrediction:
        with self._model_lock:
            return self.registry.depth()(image)

    def estimate_depth(self, image: np.ndarray, K: np.ndarray,
                       given: np.ndarray | None) -> tuple[np.ndarray, str]:
        """The depth model's z-depth when one is configured, else the classic fallbacks."""
        if not self.registry.has("depth"):
            return self.geometry.estimate_depth(image, K, given)
        pred = self._predict_depth(image)
        if pred.kind == "disparity":
            return disparity_to_depth(pred.values), "model"
        if not np.all(np.isfinite(pred.values)) or pred.values.min() <= 0:
            raise EngineError("the depth model returned non-positive depth")
        return pred.values.astype(np.float32), "model"

    def _video_setup(self, preset: str | None) -> tuple[ModelRegistry, GuidanceConfig]:
        """The video registry and guidance of a preset (None: the engine's own)."""
        if preset is None:
            return self.registry, self.guidance
        if preset not in self._presets:
            try:
                path = self.preset_paths.get(preset) or named_config(preset)
                registry = ModelRegistry.from_toml(path, cache=self.registry.cache,
                                                   memory=self.memory)
                guidance = GuidanceConfig.from_mapping(registry.guidance_overrides())
            except (FileNotFoundError, ValueError) as exc:
                raise EngineError(f"preset {preset!r}: {exc}") from exc
            if not registry.has("video"):
                raise EngineError(f"preset {preset!r} has no [video] model")
            self._presets[preset] = (registry, guidance)
        return self._presets[preset]

    def _loading(self, registry: ModelRegistry | None = None) -> Iterator[ProgressOut]:
        """A Progress line while the video model loads the first time."""
        registry = registry or self.registry
        if registry.spec("video") not in registry.cache:
            yield ProgressOut("load", 0, 1, f"loading the video model {registry.spec('video').source}")
        registry.video()

    def _clip_config(self, adapter, prompt: str | None, seed: int | None,
                     negative: str = "", dynamics: bool = False,
                     guidance: GuidanceConfig | None = None) -> GuidanceConfig:
        """The sampler's settings for one clip, checked against the video model's rules."""
        cfg = guidance or self.guidance
        height = cfg.height or adapter.default_size()[0]
        width = cfg.width or adapter.default_size()[1]
        cfg = cfg.replace(height=height, width=width, prompt=prompt or cfg.prompt,
                          negative_prompt=negative or cfg.negative_prompt,
                          seed=cfg.seed if seed is None else int(seed))
        if dynamics:
            cfg = cfg.replace(mode="none", num_frames=cfg.total_frames, pad_frames=0)
        elif cfg.num_frames < 2:
            raise EngineError(f"a transition needs the model to render at least 2 frames "
                              f"(num_frames = {cfg.num_frames})")
        try:
            adapter.check_size(height, width)
            adapter.check_num_frames(cfg.total_frames)
        except ValueError as exc:
            raise EngineError(f"video model settings: {exc}") from exc
        return cfg

    # -- views --

    def _render(self, scene: Scene, poses: np.ndarray, batch: int = 8):
        """Render ``poses`` at the scene's size in batches; numpy RenderOutput."""
        w, h = scene.size
        parts = [self.renderer.render(scene.cloud, poses[s:s + batch], scene.K, w, h).numpy()
                 for s in range(0, len(poses), batch)]
        if len(parts) == 1:
            return parts[0]
        out = parts[0]
        for name in ("image", "mask", "depth"):
            setattr(out, name, np.concatenate([getattr(p, name) for p in parts]))
        return out

    def _fill_holes(self, image: np.ndarray, hole: np.ndarray, prompt: str,
                    negative: str, generator: torch.Generator) -> tuple[np.ndarray, str]:
        """Fill ``hole`` with the inpainting pipeline (OpenCV for cracks or without one)."""
        if not hole.any():
            return image, "nothing to fill"
        if not self.registry.has("inpaint") or hole.mean() < self.min_hole_fraction:
            return inpaint(image, hole, self.geometry.inpaint_radius), "OpenCV"
        with self._model_lock:
            inpainter = self.registry.inpainter()
            h, w = hole.shape
            m = inpainter_multiple(inpainter.pipe)
            sw, sh = max(m, round(w / m) * m), max(m, round(h / m) * m)
            small = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA)
            small_hole = cv2.resize(hole.astype(np.float32), (sw, sh), interpolation=cv2.INTER_AREA) > 0
            out = inpainter(small, small_hole, prompt, negative_prompt=negative,
                            num_inference_steps=self.inpaint_steps,
                            guidance_scale=self.inpaint_guidance, generator=generator)
        if (sw, sh) != (w, h):
            out = cv2.resize(out, (w, h), interpolation=cv2.INTER_CUBIC)
        return np.where(hole[..., None], out, image), "inpainting pipeline"

    def _lift(self, scene: Scene, image: np.ndarray, pose: np.ndarray, view_depth: np.ndarray,
              hole: np.ndarray) -> tuple[PointCloud, str]:
        """Merge the pixels of ``image`` in ``hole`` into the cloud at aligned depth."""
        if not hole.any():
            return PointCloud.empty(), "nothing unseen"
        known = ~hole & (view_depth > 0)
        if not known.any():
            raise EngineError("nothing of the scene is visible from this pose")
        fallback = background_depth(view_depth, hole, self.geometry.inpaint_radius)
        how = "inpainted depth"
        depth = fallback
        if self.registry.has("depth"):
            try:
                aligned = align_prediction(self._predict_depth(image), view_depth, known)
                ok = np.isfinite(aligned)
                depth = np.where(hole & ok, aligned, fallback).astype(np.float32)
                how = f"model depth aligned on {known.mean():.0%} of the view"
            except ValueError as exc:
                how = f"inpainted depth (alignment failed: {exc})"
        added = scene.cloud.append(unproject(image, depth, scene.K, pose, mask=hole))
        return added, how

    def _inpaint_prompt(self, entities: EntitiesResult, scene: Scene) -> str:
        parts = [entities.inpaint_prompt, scene.text.style]
        return ", ".join(p.strip() for p in parts if p and p.strip())

    # -- Stage I --

    def transition(self, scene: Scene, request: TransitionRequest) -> Iterator[Event]:
        poses = request.poses  # checked by backend.wire: N >= 2 rigid float64 poses
        n = len(poses)
        w, h = scene.size
        registry, guidance = self._video_setup(request.preset)
        yield from self._loading(registry)
        adapter = registry.video()
        cfg = self._clip_config(adapter, request.prompt, request.seed, scene.text.negative,
                                guidance=guidance)
        generator = torch.Generator().manual_seed(cfg.seed)
        # 1. the start view I_0 and the end view, rendered from the cloud
        yield ProgressOut("render", 0, 2, "rendering the start and end views")
        ends = self._render(scene, poses[[0, -1]])
        start = fill_cracks(ends.image[0], ends.mask[0])
        end_hole = ~ends.mask[1]
        # 2. the entities the end view should show (Y_N), moving ones first
        yield ProgressOut("prompt", 0, 1, "asking the MLLM what lies ahead")
        entities = self.agent.entities(start, scene.text)
        self._entities[scene.scene_id] = entities
        names = ", ".join(e.name for e in entities.entities)
        yield ProgressOut("prompt", 1, 1, entities.message if entities.is_fallback
                       else f"entities: {names}")
        # 3. fill the end view's holes
        yield ProgressOut("inpaint", 0, 1, f"filling {end_hole.mean():.0%} of the end view")
        prompt = self._inpaint_prompt(entities, scene)
        end, filler = self._fill_holes(ends.image[1], end_hole, prompt, scene.text.negative, generator)
        # 4. its unseen pixels into the cloud, at depth aligned to the rendered depth
        added_end, how = self._lift(scene, end, poses[-1], ends.depth[1], end_hole)
        yield ProgressOut("inpaint", 1, 1, f"end view filled ({filler}), {how}")
        if len(added_end):
            yield PointsOut(added_end)
        # 5. the prior video: partial renders along the path, at the model's size
        yield ProgressOut("render", 1, 2, f"rendering {cfg.num_frames} partial frames")
        model_poses = resample_poses(poses, cfg.num_frames)
        mid = self._render(scene, model_poses[1:-1]) if cfg.num_frames > 2 else None
        frames = np.stack([start, *([] if mid is None else mid.image), end])
        masks = np.concatenate([np.ones((1, h, w), np.float32),
                                np.zeros((0, h, w), np.float32) if mid is None else mid.mask,
                                np.ones((1, h, w), np.float32)])
        box = Letterbox.fit(w, h, *_model_size(cfg))
        prior = PriorVideo(box.frames_in(frames), box.masks_in(masks))
        yield ProgressOut("render", 2, 2, f"prior video: {masks[1:-1].mean():.0%} visible")
        # 6. guided sampling, one Progress per step; a dynamic transition mixes the dynamics
        #    prompt's score in at every step (Diffusion^2 eq. 16)
        sampler = GuidedVideoSampler(adapter)
        if request.dynamics is not None:
            motion = yield from dynamics_prompt(self.agent, start, entities, scene.text,
                                                request.dynamics.prompt, stage="motion")
            cfg = with_schedule(cfg, request.dynamics)
            sampler = ComposedVideoSampler(adapter, motion, self._prompts.get(
                scene.scene_id, adapter, cfg.replace(prompt=motion)))
        embeds = self._prompts.get(scene.scene_id, adapter, cfg)
        out = yield from sample_with_progress(sampler, prior.frames[0], prior, cfg, generator,
                                              self._model_lock, prompt_embeds=embeds)
        # 7. stream the frames at the request's poses and size as the VAE decodes them
        last_frame = None
        for i, frame in stream_frames(sampler, out, cfg, generator, box, n, self._model_lock):
            last_frame = frame
            yield FrameOut(i, frame, poses[i])
        # 8. lift what the last frame shows and the cloud still misses
        if last_frame is None:
            raise EngineError("the video model decoded no frame")
        last = self._render(scene, poses[-1:])
        added_last, _ = self._lift(scene, last_frame, poses[-1], last.depth[0], ~last.mask[0])
        scene.pose = poses[-1].copy()
        yield PointsOut(added_last)

    # -- Stage II --

    def dynamics(self, scene: Scene, request: DynamicsRequest) -> Iterator[Event]:
        if request.num_frames < 1:
            raise EngineError(f"num_frames must be >= 1, got {request.num_frames}")
        w, h = scene.size
        pose = np.asarray(request.pose, dtype=np.float64)
        yield from self._loading()
        adapter = self.registry.video()
        cfg = self._clip_config(adapter, None, request.seed, scene.text.negative, dynamics=True)
        generator = torch.Generator().manual_seed(cfg.seed)
        # 1. the paused view, its holes filled
        yield ProgressOut("view", 0, 1, "rendering the paused view")
        view = self._render(scene, pose[None])
        hole = ~view.mask[0]
        fill_prompt = ", ".join(p for p in (scene.text.content, scene.text.style) if p)
        image, _ = self._fill_holes(view.image[0], hole, fill_prompt, scene.text.negative, generator)
        yield ProgressOut("view", 1, 1)
        # 2. the dynamics prompt Y_D: check the entities, describe their motion, write it
        prompt = yield from dynamics_prompt(self.agent, image, self._entities.get(scene.scene_id),
                                            scene.text, request.prompt)
        # 3. image-to-video with that prompt, no prior
        cfg = cfg.replace(prompt=prompt)
        box = Letterbox.fit(w, h, *_model_size(cfg))
        small = box.frames_in(image[None])[0]
        sampler = GuidedVideoSampler(adapter)
        embeds = self._prompts.get(scene.scene_id, adapter, cfg)
        out = yield from sample_with_progress(sampler, small, None, cfg, generator,
                                              self._model_lock, prompt_embeds=embeds)
        # 4. stream the clip as it decodes (the explorer loops it)
        frames = []
        for t, frame in stream_frames(sampler, out, cfg, generator, box, request.num_frames,
                                      self._model_lock):
            frames.append(frame)
            yield FrameOut(t, frame, pose)
        # 5. its motion stays in the world: optical flow lifted onto the region's points
        field, _ = clip_region(image, frames, request.arrows, request.frozen)
        index, motion = region_motion.lift_region(scene.cloud.cloud(), pose, scene.K, field,
                                                  view.depth[0], len(frames), request.fps)
        if len(index):
            name = region_motion.region_name(request.arrows, (h, w), "what the clip moved")
            yield region_motion.keep(scene, index, motion, name)

    def open_scene(self, request: OpenRequest) -> tuple[Scene, PointCloud]:
        """The classic engine's scene lifting, on the depth model's depth when there is one."""
        self._entities.pop(request.scene_id, None)
        self._prompts.forget(request.scene_id)
        if self.registry.has("depth"):
            h, w = request.image.shape[:2]
            K = request.K if request.K is not None else intrinsics(w, h, self.geometry.fov_x_deg)
            depth, _ = self.estimate_depth(request.image, K, request.depth)
            request = dataclasses.replace(request, depth=depth)
        scene, cloud = self.geometry.open_scene(request)
        scene.engine = self.name
        return scene, cloud

    def resume_scene(self, scene_id: str, sessions) -> tuple[Scene, PointCloud]:
        scene, cloud = self.geometry.resume_scene(scene_id, sessions)
        scene.engine = self.name
        return scene, cloud


def _model_size(cfg: GuidanceConfig) -> tuple[int, int]:
    """(width, height) the model samples at, as ``_clip_config`` resolved them."""
    if cfg.width is None or cfg.height is None:
        raise EngineError("the clip's sampler settings name no size")
    return cfg.width, cfg.height
