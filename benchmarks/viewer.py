"""Explorer frame time against a bare GL_POINTS draw, recording overhead, frame-to-screen.

All on one offscreen EGL context (Mesa llvmpipe here), side by side in one run:

- ``vs_bare_points``: the explorer's whole frame (network pump, player, camera, splat cloud,
  flight path, HUD) over a bare GL_POINTS draw of the same buffer with the same point sizes
  and a minimal shader, at 0.25M, 1M and 2M points (goal <= 1.25).
- ``splats_vs_bare_points``: the cloud draw alone, anti-aliased (depth pre-pass, Gaussian
  accumulation, normalisation; the default) and as opaque discs (``[splats] antialias =
  false``), each over the bare GL_POINTS draw, frame by frame side by side at each count.
- ``recording_overhead``: the frame time with recording on (readback + queue; encoding on its
  thread) over off, at 1M points (goal <= 1.10).
- ``frame_to_screen_ms``: from a Frame handed to the backend's socket to its first display
  (rendered and finished), at the live edge (the player is waiting for each frame), through
  the real transport on loopback (goal <= one frame interval of the clip).
- ``present_ms``: the window copy, the target's colour alone blitted into a framebuffer with
  the window's layout (RGBA8 colour + depth; on EGL there is no window, so a stand-in).
- ``stall_free``: with a deliberately slow renderer (``debug.frame_sleep_s`` = 0.15 s, about
  6 fps) on the wall clock, two queued 48-frame transitions both play to their end and the
  credits granted equal the frames received (true/false; ``slow_clip_s`` gives the clips'
  wall durations, 2 s each at 24 fps).

Prints one JSON object as its last line.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import moderngl
import numpy as np

from explorer.app import Explorer
from explorer.renderer import BarePointsRenderer, CloudRenderer, ViewParams
from explorer.session import SceneInfo
from explorer.settings import ExplorerSettings, SplatSettings
from protocol.camera import intrinsics
from protocol.codec import encode_image, k_list, pose_list
from protocol.messages import Frame, JobAccepted, SceneOpened
from protocol.transport import Client, Incoming, ServerEndpoint

SIZE = (960, 540)
COUNTS = (250_000, 1_000_000, 2_000_000)
FRAMES = 12
DT = 1.0 / 30.0


class Silent:
    """A client with nothing to say (the frame-time runs need no backend)."""

    def send(self, msg, blobs=()):
        pass

    def poll(self, timeout=0.0):
        return None

    def credit(self, frames):
        pass


def make_cloud(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` points filling the view in depth layers, each splat about two pixels wide."""
    rng = np.random.default_rng(seed)
    w, h = SIZE
    K = intrinsics(w, h, 60.0)
    u = rng.uniform(0, w, n)
    v = rng.uniform(0, h, n)
    z = rng.uniform(2.0, 12.0, n)
    xyz = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], -1)
    rgb = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    radius = (1.0 * z / K[0, 0]).astype(np.float32)
    return xyz.astype(np.float32), rgb, radius


def new_explorer(ctx, client) -> Explorer:
    settings = ExplorerSettings.load()
    ex = Explorer(ctx, SIZE, client, settings, help_rows=[("F1", "benchmark")])
    w, h = SIZE
    ex.session.scene = SceneInfo("bench", w, h, intrinsics(w, h, 60.0), np.eye(4), 6.0, "none")
    ex.session.status = "benchmark"
    ex.step(DT)  # adopt the scene (scale, fov)
    return ex


def time_frames(fn, frames: int = FRAMES) -> float:
    """Median wall time of ``fn`` (which must finish its GL work) in milliseconds."""
    fn()
    times = []
    for _ in range(frames):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def frame_times(ctx, ex: Explorer, bare: BarePointsRenderer) -> tuple[float, float]:
    ex.press("forward")  # a moving camera: the path line is drawn too

    def explorer_frame():
        ex.step(DT)
        ctx.finish()

    def bare_frame():
        w, h = SIZE
        ex.target.use()
        ex.target.clear()
        K = ex.window_K()
        bare.draw(ViewParams(ex.camera.view_matrix(), ex.camera.projection(w, h), K[1, 1]))
        ctx.finish()

    # Alternate frame by frame so both see the same machine load and nearly the same pose.
    explorer_frame()
    bare_frame()
    a, b = [], []
    for _ in range(FRAMES):
        for fn, out in ((explorer_frame, a), (bare_frame, b)):
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1000)
    ex.release("forward")
    return statistics.median(a), statistics.median(b)


def splat_times(ctx, ex: Explorer, bare: BarePointsRenderer) -> dict[str, float]:
    """Median ms of the cloud draw alone: anti-aliased, opaque discs, bare points, each
    into the explorer's target at the same pose, alternating frame by frame."""
    w, h = SIZE
    K = ex.window_K()
    params = ViewParams(ex.camera.view_matrix(), ex.camera.projection(w, h), K[1, 1])
    draws = {"antialiased": CloudRenderer(ctx, ex.points, SplatSettings(antialias=True)),
             "discs": CloudRenderer(ctx, ex.points, SplatSettings(antialias=False)),
             "bare": bare}
    times: dict[str, list[float]] = {name: [] for name in draws}
    for i in range(FRAMES + 1):
        for name, renderer in draws.items():
            t0 = time.perf_counter()
            ex.target.use()
            ex.target.clear()
            renderer.draw(params)
            ctx.finish()
            if i:  # the first round warms up (shader compile, target allocation)
                times[name].append((time.perf_counter() - t0) * 1000)
    return {name: statistics.median(t) for name, t in times.items()}


def recording_overhead(ctx, ex: Explorer, tmp: Path) -> tuple[float, float, int]:
    def frame():
        ex.step(DT)
        ctx.finish()

    off, on = [], []
    dropped = 0
    for i in range(3):
        off.append(time_frames(frame, FRAMES // 2))
        ex.start_recording(tmp / f"bench-{i}.mp4")
        on.append(time_frames(frame, FRAMES // 2))
        dropped += ex.stop_recording(wait=True).frames_dropped
    return statistics.median(off), statistics.median(on), dropped


def frame_to_screen(ctx, fps: float = 24.0, frames: int = 32) -> tuple[float, float]:
    """Median ms from ``endpoint.send(Frame)`` to the frame's first finished render at the
    live edge, and the same for the clip's first frame (which includes the prebuffer)."""
    server = ServerEndpoint("tcp://127.0.0.1:*", heartbeat_s=1.0, peer_timeout_s=10.0)
    client = Client(server.address, credits=8)
    client.connect(timeout=10.0)
    ex = Explorer(ctx, SIZE, client, ExplorerSettings.load())
    w, h = 480, 270
    K = intrinsics(w, h, 60.0)
    ex.session.open_scene(np.zeros((h, w, 3), np.uint8), K=K)
    ev = server.poll(10.0)
    if not isinstance(ev, Incoming):
        raise RuntimeError(f"the explorer's OpenScene did not arrive: {ev}")
    peer = ev.peer
    server.send(peer, SceneOpened(request_id=ev.msg.request_id, scene_id=ev.msg.scene_id,
                                  engine="bench", width=w, height=h, K=k_list(K),
                                  pose=pose_list(np.eye(4)), median_depth=6.0, num_points=0))
    server.send(peer, JobAccepted(job_id="clip", kind="dynamics", num_frames=frames,
                                  queue_position=0))
    rng = np.random.default_rng(0)
    images = [encode_image(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "jpeg", 0)
              for _ in range(4)]
    sent_ns: dict[int, int] = {}

    def produce():
        # Half the clip rate: the player always waits for the next frame (the live edge).
        for i in range(frames):
            ref, data = images[i % 4]
            msg = Frame(job_id="clip", index=i, num_frames=frames, pose=pose_list(np.eye(4)),
                        K=k_list(K), image=ref, fps=fps, loop=True)
            sent_ns[i] = time.perf_counter_ns()
            server.send(peer, msg, [data])
            time.sleep(2.0 / fps)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    last = time.perf_counter()
    deadline = last + 60
    tick = 1.0 / ex.settings.window.target_fps  # paced like the app's clock, not a hot loop
    while len(ex.clip_view.last_display_ns) < frames and time.perf_counter() < deadline:
        now = time.perf_counter()
        ex.step(now - last)
        last = now
        time.sleep(max(0.0, tick - (time.perf_counter() - now)))
        gone = server.poll(0)
        if gone is not None and not isinstance(gone, Incoming):
            raise RuntimeError(f"the benchmark's explorer was dropped: {gone.reason}")
    producer.join(5)
    client.close()
    server.close()
    lat = [(ex.clip_view.last_display_ns[i] - sent_ns[i]) / 1e6 for i in range(frames)]
    log("frame_to_screen per frame (ms): " + " ".join(f"{x:.0f}" for x in lat))
    # The first frames wait on purpose (the player buffers before it starts); once it has
    # caught up with the stream, every frame is shown as soon as it can be: the live edge.
    return statistics.median(lat[frames // 2 :]), lat[0]


def present_ms(ctx, ex: Explorer, copies: int = 30) -> float:
    """Median ms of the colour-only window copy (a stand-in window framebuffer on EGL)."""
    from explorer.window import Presenter

    w, h = SIZE
    window = ctx.framebuffer(color_attachments=[ctx.renderbuffer((w, h), 4)],
                             depth_attachment=ctx.depth_renderbuffer((w, h)))
    presenter = Presenter(ctx)

    def copy():
        presenter.present(ex.target, window)
        ctx.finish()

    ms = time_frames(copy, copies)
    expected = ex.target.read_rgb()
    got = np.frombuffer(window.read(components=3, alignment=1), np.uint8).reshape(h, w, 3)[::-1]
    if not np.array_equal(got, expected):
        raise RuntimeError("the window copy is not the rendered frame")
    window.release()
    return ms


def slow_renderer(ctx) -> tuple[bool, list[float]]:
    """Two queued transitions at about 6 fps on the wall clock: do both play to the end?"""
    from explorer.testing import FakeBackend

    settings = ExplorerSettings.load()
    settings.debug.frame_sleep_s = 0.15
    backend = FakeBackend(size=(160, 90), credits=settings.network.credits)
    ex = Explorer(ctx, (320, 180), backend, settings)
    ex.session.open_scene(np.zeros((90, 160, 3), np.uint8))
    last = time.perf_counter()
    deadline = last + 60
    sent = False
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    while len(ends) < 2 and time.perf_counter() < deadline:
        now = time.perf_counter()
        ex.step(now - last)
        last = now
        if not sent and ex.session.scene is not None:
            ex.send_stock_path("backward")
            ex.send_stock_path("forward")  # queued behind the first
            sent = True
        clip = ex.player.clip
        if clip is not None:
            starts.setdefault(clip.job_id, now)
        for job in starts:
            if job not in ends and (clip is None or clip.job_id != job):
                ends[job] = now
    credited = backend.credits_granted == backend.frames_delivered
    played = ex.player.clips_ended == 2 and backend.frames_delivered == 96
    durations = [round(ends[j] - starts[j], 2) for j in ends]
    log(f"slow renderer: {backend.frames_delivered} frames delivered, "
        f"{backend.credits_granted} credited, clips took {durations} s")
    return bool(credited and played), durations


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main() -> None:
    ctx = moderngl.create_standalone_context(backend="egl")
    result: dict = {"renderer": ctx.info["GL_RENDERER"], "size": list(SIZE)}
    ratios = {}
    ms = {}
    splat_ratios, splat_ms = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in COUNTS:
            ex = new_explorer(ctx, Silent())
            ex.points.append(*make_cloud(n))
            bare = BarePointsRenderer(ctx, ex.points)
            explorer_ms, bare_ms = frame_times(ctx, ex, bare)
            log(f"{n} points: explorer {explorer_ms:.1f} ms, bare {bare_ms:.1f} ms")
            key = f"{n / 1e6:g}M"
            ratios[key] = round(explorer_ms / bare_ms, 3)
            ms[key] = {"explorer_ms": round(explorer_ms, 2), "bare_points_ms": round(bare_ms, 2)}
            splats = splat_times(ctx, ex, bare)
            log(f"{n} points: cloud draw antialiased {splats['antialiased']:.1f} ms, discs "
                f"{splats['discs']:.1f} ms, bare {splats['bare']:.1f} ms")
            splat_ratios[key] = {name: round(splats[name] / splats["bare"], 3)
                                 for name in ("antialiased", "discs")}
            splat_ms[key] = {name: round(t, 2) for name, t in splats.items()}
            if n == 1_000_000:
                result["present_ms"] = round(present_ms(ctx, ex), 3)
                off, on, dropped = recording_overhead(ctx, ex, Path(tmp))
                result["recording_overhead"] = round(on / off, 3)
                result["recording_ms"] = {"off": round(off, 2), "on": round(on, 2),
                                          "dropped_frames": dropped}
            ex.points.release()
    result["vs_bare_points"] = ratios
    result["frame_ms"] = ms
    result["splats_vs_bare_points"] = splat_ratios
    result["splat_ms"] = splat_ms
    fps = 24.0
    live, first = frame_to_screen(ctx, fps)
    result["frame_to_screen_ms"] = round(live, 2)
    result["clip_first_frame_ms"] = round(first, 2)
    result["clip_frame_interval_ms"] = round(1000 / fps, 2)
    result["stall_free"], result["slow_clip_s"] = slow_renderer(ctx)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
