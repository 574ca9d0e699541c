"""The classic engine: a journey with no weights and no GPU.

- Depth: a transformers depth model (Depth Anything V2 Small by default), fetched once into
  the hub cache on first use with progress; when it cannot be had, the depth map the explorer
  sent, else the pop-up prior (``geometry.popup``: sky, ground and standing regions, the
  standing ones upright on the ground). The scene keeps its ground plane and sky
  (``Scene.layout``: the prior's, or fitted to the other depths' ground pixels) so that fills
  continue sky from sky and ground from ground. The scene
  says which (``depth_source``) in one line for the HUD (``depth_note``);
  ``depth_model = "none"`` forces the fallbacks.
- Open: lift the first view into the cloud, then fill what the foreground hides with the
  layered depth (Make-It-4D): each background layer's occluded part is inpainted and lifted
  behind the foreground, so moving sideways reveals plausible background instead of holes.
- Transition: render the end view, fill its holes (``geometry.fill.texture_fill``: patches
  of the photo's own texture matched from the background side, depth with them), lift the
  filled pixels into the cloud (making room by level of detail when the point budget is
  reached), then render every frame
  from the merged cloud with anti-aliased splats, so the clip is consistent by construction.
  Frames stream as they are rendered; pinholes no splat reached are pull-push filled.
- Dynamic transition: as a transition, each frame rendered from the scene's 4D points at
  its time (``world_clock``); a scene without motion renders still, and says so.
- Dynamics: Eulerian flow (backend.animation) inside the region the drawn arrows segment
  (or a sky/water guess), lifted to 3D and rendered from the current pose as a seamless loop;
  then the region's points keep the loop as 4D points (``backend.region_motion``), so the
  world goes on moving, and later transitions render it at each frame's time.

Over 400 lines on purpose: opening, transition and dynamics of one engine share its fill
and lift helpers; the geometry itself lives in ``backend.geometry``.
"""

from __future__ import annotations

import logging
import threading
import typing
from collections.abc import Iterator

import cv2
import numpy as np

from backend import animation, region_motion
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
from backend.engines.world_clock import WorldClock
from backend.geometry.cloud import PointCloud
from backend.geometry.depth import clean_depth_edges
from backend.geometry.fill import pull_push, texture_fill
from backend.geometry.layers import split_layers
from backend.geometry.layout import SceneLayout, ViewLayout, fit_layout, view_layout
from backend.geometry.popup import VERTICAL, popup_depth
from backend.geometry.seen import SeenViews
from backend.geometry.splat import SplatRenderer
from backend.geometry.store import PointStore
from backend.geometry.unproject import unproject
from protocol.camera import intrinsics
from protocol.messages import DepthSource

log = logging.getLogger(__name__)

DEFAULT_DEPTH_MODEL = "depth-anything/Depth-Anything-V2-Small-hf"
_GET_MODEL = "for real depth run `dreamjourney models fetch` once online"


def _saved_depth(manifest: dict) -> tuple[DepthSource, str]:
    """The depth source and note a session was opened with (older sessions: unknown)."""
    source = manifest.get("depth_source")
    for known in typing.get_args(DepthSource):
        if source == known:
            return known, str(manifest.get("depth_note") or "")[:500]
    return "given", "depth: as saved with the scene"


def inpaint(image: np.ndarray, hole: np.ndarray, radius: int, small_frac: float = 0.01) -> np.ndarray:
    """OpenCV (Telea) inpainting of ``hole``; large holes are filled at a quarter resolution.

    Telea's cost grows with the hole's area, so big holes are filled on a 4x smaller copy and
    upsampled into the hole only; the known pixels are never touched.
    """
    img = np.ascontiguousarray(image)
    if hole.mean() <= small_frac:
        return cv2.inpaint(img, hole.astype(np.uint8), radius, cv2.INPAINT_TELEA)
    h, w = hole.shape
    sw, sh = max(1, w // 4), max(1, h // 4)
    small = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_AREA)
    small_hole = ((cv2.resize(hole.astype(np.uint8), (sw, sh), interpolation=cv2.INTER_NEAREST) > 0)
                  | (cv2.resize(hole.astype(np.float32), (sw, sh), interpolation=cv2.INTER_AREA) > 0.25))
    filled = cv2.inpaint(small, small_hole.astype(np.uint8), max(1, radius // 2), cv2.INPAINT_TELEA)
    up = cv2.resize(filled, (w, h), interpolation=cv2.INTER_LINEAR)
    out = img.copy()
    out[hole] = up[hole]
    return out


def _bounding_box(where: np.ndarray, pad: int) -> tuple[slice, slice] | None:
    """Slices of the smallest box holding every True pixel of ``where``, grown by ``pad``."""
    rows, cols = np.flatnonzero(where.any(1)), np.flatnonzero(where.any(0))
    if len(rows) == 0:
        return None
    h, w = where.shape
    return (slice(max(rows[0] - pad, 0), min(rows[-1] + pad + 1, h)),
            slice(max(cols[0] - pad, 0), min(cols[-1] + pad + 1, w)))


class ClassicEngine(Engine):
    """Geometry-only engine: consistent by construction, fast on a CPU."""

    name = "classic"

    def __init__(
        self,
        device: str = "cpu",
        depth_model: str | None = DEFAULT_DEPTH_MODEL,
        inpaint_radius: int = 5,
        layers: int = 3,
        fov_x_deg: float = 60.0,
        capacity: int = 4_000_000,
        frames_per_batch: int = 1,
        keyframe_every: int = 16,
        gap_px: int = 6,
    ):
        self.device = device
        self.depth_model_id = depth_model
        self.inpaint_radius = inpaint_radius
        self.layers = layers
        self.fov_x_deg = fov_x_deg
        self.capacity = capacity
        self.frames_per_batch = frames_per_batch
        self.keyframe_every = keyframe_every
        self.gap_px = gap_px
        self.renderer = SplatRenderer(device)
        self._warm_up_started = False
        self._warm_up_lock = threading.Lock()
        self._depth_model = None
        self._depth_reason = ""

    def _start_warm_up(self) -> None:
        """Compile the CPU splatting loops in the background, once: started when the first
        scene is lifted (its many small steps would otherwise wait on the compiler), done
        while it is saved, sent and flown, before the first clip needs them."""
        with self._warm_up_lock:
            if self._warm_up_started:
                return
            self._warm_up_started = True
        threading.Thread(target=self.renderer.warm_up, name="splat-warm-up", daemon=True).start()

    # -- depth --

    def estimate_depth(
        self, image: np.ndarray, K: np.ndarray, given: np.ndarray | None, progress=None
    ) -> tuple[np.ndarray, str]:
        """Z-depth for ``image`` and its source: "model", "given" (the client's) or "prior"."""
        depth, source, _ = self._depth_and_layout(image, K, given, progress)
        return depth, source

    def _depth_and_layout(self, image: np.ndarray, K: np.ndarray, given: np.ndarray | None,
                          progress=None) -> tuple[np.ndarray, DepthSource, SceneLayout | None]:
        model = self._load_depth_model(progress)
        if model is not None:
            depth = model(image)
            return depth, "model", fit_layout(depth, popup_depth(image, K).labels, K)
        if given is not None:
            if not np.all(np.isfinite(given)) or given.min() <= 0:
                raise EngineError("the depth map must be finite and positive everywhere")
            depth = given.astype(np.float32)
            return depth, "given", fit_layout(depth, popup_depth(image, K).labels, K)
        prior = popup_depth(image, K)
        return prior.depth, "prior", SceneLayout.from_horizon(prior.horizon, K, prior.camera_height,
                                                             prior.sky_depth)

    def depth_note(self, source: DepthSource) -> str:
        """One line for the HUD: which depth is in use and, without the model, how to get it."""
        if source == "model":
            return f"depth: {self.depth_model_id}"
        if self.depth_model_id in (None, "", "none"):
            why = 'depth_model = "none"'
            return f"depth: {'your depth map' if source == 'given' else 'pop-up prior (a guess)'} ({why})"
        what = "your depth map" if source == "given" else "pop-up prior (a guess: sky, ground, standing)"
        why = f" ({self._depth_reason})" if self._depth_reason else ""
        return f"depth: {what}; model {self.depth_model_id} unavailable{why}; {_GET_MODEL}"

    def _load_depth_model(self, progress=None):
        if self.depth_model_id in (None, "", "none"):
            return None
        if self._depth_model is None:
            from backend.engines.depth_model import load_depth_model

            def report(done: int, total: int, message: str) -> None:
                if progress is not None:
                    progress(ProgressOut("download", done, total, message))

            result = load_depth_model(self.depth_model_id, self.device, report)
            self._depth_model = result.predict or False
            self._depth_reason = result.reason
        return self._depth_model or None

    # -- scenes --

    def open_scene(self, request: OpenRequest) -> tuple[Scene, PointCloud]:
        image = request.image
        h, w = image.shape[:2]
        K = request.K if request.K is not None else intrinsics(w, h, self.fov_x_deg)
        depth, source, layout = self._depth_and_layout(image, K, request.depth, request.progress)
        note = self.depth_note(source)
        log.info("scene %s: %s", request.scene_id, note)
        median = float(np.median(depth))
        store = PointStore(capacity=self.capacity)
        depth, keep = clean_depth_edges(depth, mode="push")  # same rays: the first view stays exact
        store.append(unproject(image, depth, K, np.eye(4), mask=keep))
        store.append(self._hidden_background(image, depth, K, layout))
        seen = SeenViews(K, w, h)
        seen.record(np.eye(4), np.where(keep, depth, 0))
        scene = Scene(request.scene_id, image, K, store, median, request.text, engine=self.name,
                      depth_source=source, depth_note=note, points_budget=self.capacity,
                      seen=seen, layout=layout)
        self._start_warm_up()
        return scene, store.cloud()

    def _hidden_background(self, image: np.ndarray, depth: np.ndarray, K: np.ndarray,
                           layout: SceneLayout | None = None) -> PointCloud:
        """Points behind the foreground: each back layer's occluded part, inpainted and lifted.

        Only where the layer lies clearly behind what the first view shows (beyond twice the
        renderer's depth tolerance): nearer, the splats would blend into the front surface, a
        seam along every layer boundary (a dashed line across water, walls and jackets).
        """
        parts = []
        behind = 1.0 + 2.0 * self.renderer.config.depth_tolerance
        # the first view's labels (by where its points lie): every layer's fill reads them
        labels = None if layout is None else view_layout(depth, np.ones(depth.shape, bool), K,
                                                         np.eye(4), layout)
        for layer in split_layers(image, depth, self.layers).layers[1:]:
            hole = layer.occluded & (layer.depth > behind * depth)
            if not hole.any() or not layer.mask.any():
                continue
            known_depth = np.where(layer.mask, layer.depth, 0)
            filled = texture_fill(layer.color, known_depth, ~layer.mask, layout=labels)
            parts.append(unproject(filled.image, layer.depth, K, np.eye(4), mask=hole))
        if labels is not None and layout is not None:
            parts.append(self._behind_standing(image, depth, K, labels, layout, behind))
        return PointCloud.concat(parts)

    def _behind_standing(self, image: np.ndarray, depth: np.ndarray, K: np.ndarray,
                         labels: ViewLayout, layout: SceneLayout, behind: float) -> PointCloud:
        """The ground and sky behind standing things (people, posts, walls stand on the ground
        at its own depth, so no depth layer separates them from the ground behind): filled
        from ground and sky only, kept where the fill is ground on the plane or sky, behind
        the standing pixel."""
        eye = np.eye(4)
        standing = labels.labels == VERTICAL
        if not standing.any() or standing.all():
            return PointCloud.empty()
        filled = texture_fill(image, np.where(standing, 0, depth), standing, work_px=64, layout=labels)
        plane = np.isfinite(labels.ground_depth) & (np.abs(filled.depth - labels.ground_depth)
                                                      <= 1e-3 * labels.ground_depth)
        sky = filled.depth >= layout.sky_depth * 0.999
        hole = standing & (plane | sky) & (filled.depth > behind * depth)
        return unproject(filled.image, filled.depth, K, eye, mask=hole)

    def resume_scene(self, scene_id: str, sessions) -> tuple[Scene, PointCloud]:
        self._start_warm_up()
        saved = sessions.load(scene_id)
        store = PointStore.load(saved["cloud_path"], capacity=self.capacity)
        median = float(saved["median_depth"])
        source, note = _saved_depth(saved)
        scene = Scene(scene_id, saved["image"], np.asarray(saved["K"]), store, median, saved["text"],
                      pose=np.asarray(saved["pose"]), engine=self.name, depth_source=source,
                      depth_note=note, points_budget=self.capacity,
                      moving_regions=region_motion.saved_regions(saved["clips"]))
        w, h = scene.size
        scene.seen = SeenViews(scene.K, w, h)  # the photo's view, as the saved cloud shows it
        first = self.renderer.render(store, np.eye(4)[None], scene.K, w, h).numpy()
        scene.seen.record(np.eye(4), first.depth[0])
        return scene, store.cloud()

    # -- transitions --

    def transition(self, scene: Scene, request: TransitionRequest) -> Iterator[Event]:
        self._start_warm_up()
        poses = request.poses
        w, h = scene.size
        n = len(poses)
        clock = WorldClock.of(scene, request)  # a dynamic transition: the world at frame times
        if clock.note:
            yield ProgressOut("motion", 1, 1, clock.note)
        # 1. the first frame is the current view, which growing cannot change: stream it now
        first = clock.render(self.renderer, scene, poses[:1], 0, w, h)
        yield FrameOut(0, self._fill_gaps(first.image[0], first.mask[0]), poses[0])
        # 2. fill what the end view has never seen, then the keyframes between (end first,
        #    so nearer keyframes inpaint from what the end view added)
        keys = [n - 1, *range(n - 1 - self.keyframe_every, 0, -self.keyframe_every)]
        added = []
        for i, k in enumerate(keys):
            yield ProgressOut("grow", i, len(keys), "filling unseen parts of the path")
            added.append(self._grow(scene, poses[k]))
        yield ProgressOut("grow", len(keys), len(keys))
        # 3. render the other frames from the merged cloud, streaming each as it is ready (a
        #    moving world a frame at a time, each at its own time on the world clock)
        per_batch = clock.batch(self.frames_per_batch)
        for start in range(1, n, per_batch):
            batch = poses[start : start + per_batch]
            out = clock.render(self.renderer, scene, batch, start, w, h)
            for i, image in enumerate(out.image):
                yield FrameOut(start + i, self._fill_gaps(image, out.mask[i]), poses[start + i])
        scene.pose = np.asarray(poses[-1], dtype=np.float64)
        # 4. the points this clip added
        yield PointsOut(PointCloud.concat(added))

    def _grow(self, scene: Scene, pose: np.ndarray) -> PointCloud:
        w, h = scene.size
        view = self.renderer.render(scene.cloud, pose[None], scene.K, w, h).numpy()
        hole = ~view.mask[0]
        if not hole.any():
            return PointCloud.empty()
        colour, depth = self._fill(view.image[0], view.depth[0], hole, scene, pose)
        new = unproject(colour, depth, scene.K, pose, mask=hole)
        if scene.seen is not None:  # never over what an earlier view saw (a revisit shows it)
            new = new.take(scene.seen.keep(new))
            scene.seen.record(pose, depth)
        return scene.cloud.append_within_budget(new, pose[:3, 3], 0.5 * (scene.K[0, 0] + scene.K[1, 1]))

    def _fill(self, rgb: np.ndarray, depth: np.ndarray, hole: np.ndarray, scene: Scene | None = None,
              pose: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Fill colour and depth inside ``hole``: gaps between magnified splats are
        interpolated (pull-push), the rest was never seen and continues the background
        (texture_fill; sky from sky and ground from ground when the scene has a layout)."""
        known = ~hole & (depth > 0)
        if not known.any():
            raise EngineError("nothing of the scene is visible from this pose")
        k = self.gap_px * 2 + 1
        box = np.ones((k, k), np.uint8)
        closed = cv2.morphologyEx(known.astype(np.uint8), cv2.MORPH_CLOSE, box) > 0
        # a gap between magnified splats of one surface, not a disocclusion beside a depth
        # edge (interpolating that would smear the object in front into what it uncovers)
        seen = np.where(known, depth, 0).astype(np.float32)
        far = cv2.dilate(seen, box)
        near = cv2.dilate(np.where(known, 1.0 / np.maximum(depth, 1e-6), 0).astype(np.float32), box)
        gaps = closed & ~known & (far * near < 1.15)
        if gaps.any():
            rgb = np.where(gaps[..., None], pull_push(rgb, known), rgb)
            depth = np.where(gaps, pull_push(np.where(known, depth, 0).astype(np.float32), known), depth)
            known = known | gaps
        layout = None
        if scene is not None and pose is not None and scene.layout is not None:
            layout = view_layout(np.where(known, depth, 0), known, scene.K, pose, scene.layout)
        filled = texture_fill(rgb, np.where(known, depth, 0), ~known, layout=layout)
        depth_out = np.where(known, depth, filled.depth).astype(np.float32)
        if np.any(depth_out[hole] <= 0):
            depth_out[hole & (depth_out <= 0)] = float(np.median(depth[known]))
        return filled.image, depth_out

    def _fill_gaps(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Cover the pixels no splat reached: the rims of the gaps by the mean of their covered
        3 x 3 neighbours (two rounds of a normalised box filter: pinholes and cracks), what is
        left from coarser averages (pull-push, no streaks); each step only over the bounding
        box of what is still missing."""
        if mask.all() or not mask.any():
            return image
        out, known = image.copy(), mask.copy()
        for _ in range(2):
            box = _bounding_box(~known, pad=1)
            if box is None:
                return out
            crop, seen = out[box], known[box]
            total = cv2.boxFilter(np.where(seen[..., None], crop, 0), cv2.CV_32F, (3, 3), normalize=False)
            count = cv2.boxFilter(seen.astype(np.uint8), cv2.CV_32F, (3, 3), normalize=False)
            rim = ~seen & (count > 0)
            crop[rim] = (total[rim] / count[rim, None] + 0.5).astype(np.uint8)
            seen |= rim
        box = _bounding_box(~known, pad=32)
        if box is not None:
            out[box] = pull_push(out[box], known[box])
        return out

    # -- dynamics --

    def _paused_view(self, scene: Scene, pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(colour, depth) of the view at ``pose``, holes filled."""
        self._start_warm_up()
        w, h = scene.size
        view = self.renderer.render(scene.cloud, pose[None], scene.K, w, h).numpy()
        hole = ~view.mask[0]
        colour, depth = view.image[0], view.depth[0]
        if hole.any():
            colour, depth = self._fill(colour, depth, hole, scene, pose)
        return colour, depth

    def select_region(self, scene: Scene, pose: np.ndarray, arrows: tuple, frozen: np.ndarray | None
                      ) -> np.ndarray:
        colour, depth = self._paused_view(scene, pose)
        return animation.motion_field(colour, depth, arrows, frozen)[1]

    def dynamics(self, scene: Scene, request: DynamicsRequest) -> Iterator[Event]:
        n = request.num_frames
        # each step between two events: where a long job gives way to a short one
        yield ProgressOut("view", 0, 2, "lifting the paused view")
        colour, depth = self._paused_view(scene, request.pose)
        yield ProgressOut("view", 1, 2, "finding what moves")
        field, region = animation.motion_field(colour, depth, request.arrows, request.frozen)
        yield ProgressOut("view", 2, 2, "animating" if np.abs(field).max() > 0 else "nothing to animate")
        # only the pixels that move (the region, its feathered edge included) are animated; the
        # camera stays at the paused pose, so moving a point in 3D at its own depth and
        # projecting it back is moving it in the image
        ys, xs = np.nonzero(np.abs(field).max(axis=2) > 0)
        # each moving pixel traced against the field (where its content came from) and along
        # it (where it will come from): loop_frames of the negated field, one frame at a time.
        # Frames sit half a step off the still view (t + 1/2), so every frame, the last and
        # the first too, is sampled between pixels alike and the loop's seam is like any step
        start = np.stack([xs + 0.5, ys + 0.5], axis=1).astype(np.float32) - 0.5 * field[ys, xs]
        for t, from_back, from_ahead, _ in animation.loop_frames(-field, start, n):
            frame = animation.loop_frame(colour, ys, xs, from_back, from_ahead, (t + 0.5) / n)
            yield FrameOut(t, frame, request.pose)
        # the loop stays in the world: the region's points carry its motion (4D points)
        index, motion = yield from region_motion.lift_region_steps(
            scene.cloud.cloud(), request.pose, scene.K, field, depth, n, request.fps)
        if len(index):
            yield region_motion.keep(scene, index, motion,
                                     region_motion.region_name(request.arrows, depth.shape))

