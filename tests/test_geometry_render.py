"""Unproject -> render round trips and the renderer against analytic projection."""

import math
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from backend.geometry import (
    PointCloud,
    PointStore,
    SplatConfig,
    SplatRenderer,
    horizon_depth,
    unproject,
)
from backend.geometry.splat import numba_loops
from protocol.camera import intrinsics, project, rotation_about

SCENES = Path(__file__).resolve().parents[2] / "shared" / "scenes"
NEAREST = SplatConfig(antialias=False)


@pytest.fixture(params=[True, False], ids=["loops", "torch"])
def filtered(request) -> SplatConfig:
    """The anti-aliased path, as compiled CPU loops and as torch tensors."""
    if request.param and not numba_loops.available():
        pytest.skip("numba is not installed")
    return SplatConfig(cpu_loops=request.param)


@pytest.fixture(scope="module")
def scene():
    path = SCENES / "03_ancient.jpg"
    if not path.exists():
        pytest.skip(f"{path} not present")
    image = np.asarray(Image.open(path).convert("RGB"))
    h, w = image.shape[:2]
    K = intrinsics(w, h, 60.0)
    depth = horizon_depth(image, K)
    return image, depth, K


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    mse = np.mean((a[mask].astype(np.float64) - b[mask].astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_same_pose_render_reproduces_the_image(scene):
    image, depth, K = scene
    h, w = image.shape[:2]
    cloud = unproject(image, depth, K, np.eye(4))
    assert len(cloud) == h * w
    out = SplatRenderer("cpu").render(cloud, np.eye(4)[None], K, w, h).numpy()
    assert out.image.shape == (1, h, w, 3) and out.image.dtype == np.uint8
    assert out.mask[0].mean() >= 0.99
    assert psnr(out.image[0], image, out.mask[0]) >= 40.0
    np.testing.assert_allclose(out.depth[0][out.mask[0]], depth[out.mask[0]], rtol=1e-5)


def test_same_pose_render_with_non_identity_pose(scene):
    image, depth, K = scene
    h, w = image.shape[:2]
    pose = np.eye(4)
    pose[:3, :3] = rotation_about([0.2, 1.0, 0.1], 0.3)
    pose[:3, 3] = [0.5, -0.2, 1.0]
    cloud = unproject(image, depth, K, pose)
    out = SplatRenderer("cpu").render(cloud, pose, K, w, h).numpy()
    assert out.mask[0].mean() >= 0.99
    assert psnr(out.image[0], image, out.mask[0]) >= 40.0


def _nearest_per_pixel(cloud: PointCloud, pose, K, w, h):
    """Reference z-buffer: for each pixel the min depth of points projecting into it."""
    uv, z = project(cloud.xyz.astype(np.float64), pose, K)
    ok = (z > 1e-4) & (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
    pix = (np.floor(uv[ok, 1]).astype(int) * w + np.floor(uv[ok, 0]).astype(int))
    zbuf = np.full(h * w, np.inf)
    np.minimum.at(zbuf, pix, z[ok])
    return zbuf.reshape(h, w), uv, z, ok


def test_shifted_pose_matches_analytic_projection(scene):
    image, depth, K = scene
    h, w = image.shape[:2]
    cloud = unproject(image, depth, K, np.eye(4))
    pose = np.eye(4)
    pose[:3, :3] = rotation_about([0, 1, 0], 0.05)
    pose[:3, 3] = [0.1, 0.02, -0.3]  # backward: points shrink, no disc expansion
    out = SplatRenderer("cpu", NEAREST).render(cloud, pose, K, w, h, return_index=True).numpy()
    zbuf, uv, z, ok = _nearest_per_pixel(cloud, pose, K, w, h)
    covered = np.isfinite(zbuf)
    assert 0.5 < covered.mean() < 1.0
    # float32 (renderer) vs float64 (reference) may only disagree for points within
    # rounding distance of a pixel boundary: a handful of pixels
    assert (out.mask[0] != covered).mean() < 1e-4
    same_depth = np.isclose(out.depth[0], np.where(covered, zbuf, 0.0), rtol=1e-5)
    assert same_depth.mean() > 1 - 1e-4
    # the winning point of each pixel projects into that pixel (up to rounding), its depth
    # is the pixel's depth and its colour the pixel's colour
    vv, uu = np.nonzero(out.mask[0])
    idx = out.index[0][out.mask[0]]
    assert np.all(np.abs(uv[idx, 0] - (uu + 0.5)) <= 0.5 + 1e-3)
    assert np.all(np.abs(uv[idx, 1] - (vv + 0.5)) <= 0.5 + 1e-3)
    np.testing.assert_allclose(out.depth[0][out.mask[0]], z[idx], rtol=1e-5)
    np.testing.assert_array_equal(out.image[0][out.mask[0]], cloud.rgb[idx])


def test_large_points_cover_discs_and_nearest_wins():
    K = intrinsics(64, 48, 60.0)
    f = K[0, 0]
    # a far red point of radius 3 px and a near green point of radius 1.5 px in front of it
    xyz = np.array([[0.0, 0.0, 10.0], [0.0, 0.0, 5.0]], np.float32)
    rgb = np.array([[255, 0, 0], [0, 255, 0]], np.uint8)
    radius = np.array([3.0 * 10 / f, 1.5 * 5 / f], np.float32)
    out = SplatRenderer("cpu", NEAREST).render(PointCloud(xyz, rgb, radius), np.eye(4), K, 64, 48).numpy()
    cu, cv = K[0, 2], K[1, 2]
    ys, xs = np.mgrid[0:48, 0:64] + 0.5
    d2 = (xs - cu) ** 2 + (ys - cv) ** 2
    np.testing.assert_array_equal(out.mask[0], d2 <= 9.0)
    green = d2 <= 1.5**2
    assert (out.image[0][green] == [0, 255, 0]).all()
    assert (out.image[0][(d2 <= 9.0) & ~green] == [255, 0, 0]).all()
    np.testing.assert_allclose(out.depth[0][green], 5.0)
    assert (out.image[0][~out.mask[0]] == 0).all() and (out.depth[0][~out.mask[0]] == 0).all()


def test_points_behind_camera_and_offscreen_are_culled():
    K = intrinsics(32, 32, 60.0)
    xyz = np.array([[0, 0, -2.0], [100.0, 0, 1.0], [0, 0, 2.0]], np.float32)
    cloud = PointCloud(xyz, np.full((3, 3), 200, np.uint8), np.full(3, 1e-3, np.float32))
    out = SplatRenderer("cpu").render(cloud, np.eye(4), K, 32, 32).numpy()
    assert out.mask.sum() == 1 and out.mask[0, 16, 16]


def test_batched_and_grouped_rendering_agree(scene):
    image, depth, K = scene
    h, w = image.shape[:2]
    cloud = unproject(image[::4, ::4].copy(), depth[::4, ::4].copy(), K / 4 * [[1], [1], [4]], np.eye(4))
    poses = np.repeat(np.eye(4)[None], 3, axis=0)
    poses[:, 2, 3] = [0.0, 0.2, -0.2]
    k = K / 4 * np.array([[1], [1], [4]])
    one = SplatRenderer("cpu").render(cloud, poses, k, w // 4, h // 4).numpy()
    grouped = SplatRenderer("cpu", SplatConfig(batch_size=2)).render(cloud, poses, k, w // 4, h // 4)
    grouped = grouped.numpy()
    np.testing.assert_array_equal(one.image, grouped.image)
    np.testing.assert_array_equal(one.mask, grouped.mask)
    for i, pose in enumerate(poses):
        single = SplatRenderer("cpu").render(cloud, pose, k, w // 4, h // 4).numpy()
        np.testing.assert_array_equal(single.image[0], one.image[i])


def test_render_from_store(scene):
    image, depth, K = scene
    h, w = image.shape[:2]
    store = PointStore()
    store.append(unproject(image, depth, K, np.eye(4)))
    out = SplatRenderer("cpu").render(store, np.eye(4), K, w, h).numpy()
    assert out.mask.mean() >= 0.99


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(scene):
    image, depth, K = scene
    h, w = image.shape[:2]
    cloud = unproject(image, depth, K, np.eye(4))
    poses = np.repeat(np.eye(4)[None], 2, axis=0)
    poses[1, 2, 3] = 0.3
    cpu = SplatRenderer("cpu").render(cloud, poses, K, w, h).numpy()
    gpu = SplatRenderer("cuda", SplatConfig(batch_size=2)).render(cloud, poses, K, w, h).numpy()
    assert (cpu.mask == gpu.mask).mean() > 0.999
    assert (cpu.image == gpu.image).all(axis=-1).mean() > 0.999


def test_pytorch3d_adapter_agrees_with_native(scene):
    pytest.importorskip("pytorch3d")
    image, depth, K = scene
    h, w = image.shape[:2]
    cloud = unproject(image, depth, K, np.eye(4))
    pose = np.eye(4)
    pose[2, 3] = -0.2
    native = SplatRenderer("cpu").render(cloud, pose, K, w, h).numpy()
    p3d = SplatRenderer("cpu", SplatConfig(backend="pytorch3d")).render(cloud, pose, K, w, h)
    p3d = p3d.numpy()
    both = native.mask & p3d.mask
    assert both.sum() > 0.9 * native.mask.sum()
    assert (native.image[both] == p3d.image[both]).all(axis=-1).mean() > 0.95


def test_antialiased_large_points_blend_front_edges_and_keep_the_disc_mask(filtered):
    K = intrinsics(64, 48, 60.0)
    f = K[0, 0]
    xyz = np.array([[0.0, 0.0, 10.0], [0.0, 0.0, 5.0]], np.float32)
    rgb = np.array([[255, 0, 0], [0, 255, 0]], np.uint8)
    radius = np.array([3.0 * 10 / f, 1.5 * 5 / f], np.float32)
    out = SplatRenderer("cpu", filtered).render(PointCloud(xyz, rgb, radius), np.eye(4), K, 64, 48).numpy()
    ys, xs = np.mgrid[0:48, 0:64] + 0.5
    d2 = (xs - K[0, 2]) ** 2 + (ys - K[1, 2]) ** 2
    np.testing.assert_array_equal(out.mask[0], d2 <= 9.0)  # coverage is the disc, as before
    img = out.image[0].astype(int)
    # the near point wins its centre; its filter fades over the far one: a soft edge, no blue
    assert img[d2 <= 0.5][:, 1].min() > 200
    ring = (d2 <= 9.0) & (d2 > 2.25)
    assert (img[ring][:, 0] + img[ring][:, 1] >= 250).all() and (img[..., 2] == 0).all()
    assert img[ring][:, 0].max() - img[ring][:, 0].min() > 50  # red rises away from the centre
    np.testing.assert_allclose(out.depth[0][d2 <= 2.25], 5.0)


def _plane(size: int, colour_fn) -> tuple[PointCloud, np.ndarray]:
    K = intrinsics(size, size, 60.0)
    yy, xx = np.mgrid[0:size, 0:size]
    image = colour_fn(xx, yy).astype(np.uint8)
    return unproject(image, np.full((size, size), 4.0, np.float32), K, np.eye(4)), K


def test_magnified_plane_has_no_screen_door(filtered):
    """Moving towards a plane (1.3x magnification): the nearest-point discs leave a grid of
    gaps and repeated pixels, the filtered splats give a smooth, fully covered image."""
    cloud, K = _plane(96, lambda x, y: np.stack([x * 2, y * 2, np.full_like(x, 128)], -1))
    pose = np.eye(4)
    pose[2, 3] = 4.0 * (1 - 1 / 1.3)
    aa = SplatRenderer("cpu", filtered).render(cloud, pose, K, 96, 96).numpy()
    inner = (slice(8, -8), slice(8, -8))
    assert aa.mask[0][inner].all()
    img = aa.image[0].astype(float)[inner]
    # a linear ramp stays a ramp: second differences are rounding-sized everywhere
    assert np.abs(np.diff(img[..., 0], 2, axis=1)).max() <= 2.0
    assert np.abs(np.diff(img[..., 1], 2, axis=0)).max() <= 2.0
    bare = SplatRenderer("cpu", NEAREST).render(cloud, pose, K, 96, 96).numpy()
    rough = np.abs(np.diff(bare.image[0].astype(float)[inner][..., 0], 2, axis=1)).max()
    assert rough >= 4.0  # the nearest-point render steps (the grid this replaces)


def test_only_the_front_surface_is_blended(filtered):
    """A blue plane behind a red one never shows through the red one's pixels."""
    red, K = _plane(64, lambda x, y: np.stack([np.full_like(x, 255), 0 * x, 0 * x], -1))
    blue = PointCloud(red.xyz * 2.0, np.tile(np.array([[0, 0, 255]], np.uint8), (len(red), 1)),
                      red.radius * 2.0)
    pose = np.eye(4)
    pose[:3, 3] = [0.05, 0.03, 0.6]
    out = SplatRenderer("cpu", filtered).render(PointCloud.concat([blue, red]), pose, K, 64, 64).numpy()
    front = out.mask[0] & (np.abs(out.depth[0] - out.depth[0][32, 32]) < 0.5)
    assert front.mean() > 0.5
    assert (out.image[0][front][:, 2] == 0).all() and (out.image[0][front][:, 0] == 255).all()


def _reference_filtered(cloud: PointCloud, pose, K, w, h, cfg: SplatConfig):
    """The anti-aliased splatting of the module docstring, written out in float64 numpy with
    per-pixel dictionaries: footprints, depth pre-pass, taps within the tolerance, normalised."""
    uv, z = project(cloud.xyz.astype(np.float64), pose, K)
    f = 0.5 * (K[0, 0] + K[1, 1])
    r_px = cloud.radius.astype(np.float64) * f / np.maximum(z, 1e-12)
    taps, cover = [], []  # (point, px, py, weight), (point, px, py)
    for i in np.nonzero(z > cfg.near)[0]:
        cu, cv = uv[i, 0] - 0.5, uv[i, 1] - 0.5  # pixel centres at integers
        if r_px[i] < cfg.tent_radius_px:
            x0, y0 = int(np.floor(cu)), int(np.floor(cv))
            fx, fy = cu - x0, cv - y0
            for dx, dy, wt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                               (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
                taps.append((i, x0 + dx, y0 + dy, wt))
            cover.append((i, int(np.floor(uv[i, 0])), int(np.floor(uv[i, 1]))))
            continue
        sigma = np.clip(cfg.sigma_scale * r_px[i], cfg.min_sigma_px, cfg.max_reach_px / 2)
        k = int(np.clip(np.ceil(2 * sigma - 0.5), 1, cfg.max_reach_px))
        for py in range(int(np.round(cv)) - k, int(np.round(cv)) + k + 1):
            for px in range(int(np.round(cu)) - k, int(np.round(cu)) + k + 1):
                d2 = (px - cu) ** 2 + (py - cv) ** 2
                taps.append((i, px, py, np.exp(-0.5 * d2 / sigma**2)))
                if d2 <= max(r_px[i], 0.71) ** 2:
                    cover.append((i, px, py))
    on = lambda px, py: 0 <= px < w and 0 <= py < h  # noqa: E731
    zbuf = np.full((h, w), np.inf)
    for i, px, py in cover:
        if on(px, py):
            zbuf[py, px] = min(zbuf[py, px], z[i])
    acc = np.zeros((h, w, 4))
    for i, px, py, wt in taps:
        if on(px, py) and z[i] <= zbuf[py, px] * (1 + cfg.depth_tolerance):
            acc[py, px] += wt * np.array([1.0, *cloud.rgb[i]])
    mask = np.isfinite(zbuf)
    image = np.where(mask[..., None], np.floor(acc[..., 1:] / np.maximum(acc[..., :1], 1e-12) + 0.5), 0)
    return image, mask, np.where(mask, zbuf, 0.0)


def _two_planes(seed: int = 0) -> tuple[PointCloud, np.ndarray]:
    """Random points on a textured near plane (left half) in front of a far one, radii from
    below a pixel to a few pixels: tents, gaussians of every reach, an occlusion edge."""
    rng = np.random.default_rng(seed)
    K = intrinsics(48, 40, 60.0)
    n = 1500
    near = rng.random(n) < 0.4
    z = np.where(near, 3.0, 6.0) * rng.uniform(0.9, 1.1, n)  # wider than the tolerance
    u = np.where(near, rng.uniform(-2, 26, n), rng.uniform(-4, 52, n))
    v = rng.uniform(-4, 44, n)
    xyz = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], 1)
    rgb = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    radius = rng.choice([0.3, 0.7, 1.2, 2.0, 3.5], n) * z / K[0, 0]
    return PointCloud(xyz.astype(np.float32), rgb, radius.astype(np.float32)), K


def test_filtered_render_matches_a_float64_reference(filtered):
    cloud, K = _two_planes()
    pose = np.eye(4)
    pose[:3, 3] = [0.1, -0.05, 0.4]
    cfg = filtered
    out = SplatRenderer("cpu", cfg).render(cloud, pose, K, 48, 40, return_index=True).numpy()
    image, mask, depth = _reference_filtered(cloud, pose, K, 48, 40, cfg)
    assert 0.5 < mask.mean() < 1.0
    # float32 vs float64 may only disagree where a point sits on a pixel boundary or a tap
    # on the depth tolerance: a pixel or two of 1920
    assert (out.mask[0] != mask).sum() <= 2
    both = out.mask[0] & mask
    close = np.abs(out.image[0].astype(float) - image).max(-1) <= 1
    assert close[both].mean() >= 0.999
    np.testing.assert_allclose(out.depth[0][both], depth[both], rtol=1e-5)
    # the index is the front point's: its depth is the pixel's depth
    _, z = project(cloud.xyz.astype(np.float64), pose, K)
    idx = out.index[0][out.mask[0]]
    assert (idx >= 0).all()
    np.testing.assert_allclose(z[idx], out.depth[0][out.mask[0]], rtol=1e-5)


@pytest.mark.parametrize("radius_px", [0.4, 1.1, 2.5])
def test_one_point_renders_its_own_colour_over_its_coverage(radius_px, filtered):
    """Normalisation: a lone splat's weights sum to its colour wherever it covers a pixel,
    whatever its footprint; a sub-pixel splat covers exactly the pixel it falls in."""
    K = intrinsics(32, 32, 60.0)
    z = 5.0
    u, v = 13.3, 17.8
    xyz = np.array([[(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z]], np.float32)
    rgb = np.array([[200, 31, 97]], np.uint8)
    cloud = PointCloud(xyz, rgb, np.array([radius_px * z / K[0, 0]], np.float32))
    out = SplatRenderer("cpu", filtered).render(cloud, np.eye(4), K, 32, 32).numpy()
    assert out.mask[0, 17, 13]
    assert (out.image[0][out.mask[0]] == rgb[0]).all() and (out.image[0][~out.mask[0]] == 0).all()
    ys, xs = np.mgrid[0:32, 0:32] + 0.5
    disc = (xs - u) ** 2 + (ys - v) ** 2 <= max(radius_px, 0.71) ** 2
    expected = disc if radius_px >= 0.75 else (xs.astype(int) == 13) & (ys.astype(int) == 17)
    np.testing.assert_array_equal(out.mask[0], expected)


def test_minified_fine_checkerboard_has_no_moire(filtered):
    """Backing away from a plane with a one-pixel checkerboard: each pixel averages the points
    it receives (a flat grey), where the nearest point per pixel gives a moire of beats."""
    cloud, K = _plane(128, lambda x, y: ((x + y) % 2 * 255)[..., None].repeat(3, -1))
    pose = np.eye(4)
    pose[2, 3] = -4.0 * (1.3 - 1)  # 1/1.3 magnification
    inner = (slice(30, -30), slice(30, -30))
    aa = SplatRenderer("cpu", filtered).render(cloud, pose, K, 128, 128).numpy().image[0][inner].astype(float)
    bare = SplatRenderer("cpu", NEAREST).render(cloud, pose, K, 128, 128).numpy().image[0][inner]
    assert abs(aa.mean() - 127.5) < 12 and aa.std() < 25
    assert bare.astype(float).std() > 90


def test_window_max_is_max_pool():
    """The visibility pre-test's window maximum equals torch's max pooling of that window."""
    from backend.geometry.splat.filtered import _window_max

    grid = torch.rand(2, 30, 41)
    grid[0, 3, 5] = math.inf
    for k in (1, 2, 4):
        pooled = torch.nn.functional.max_pool2d(grid[:, None], 2 * k + 1, 1, k)[:, 0]
        assert torch.equal(_window_max(grid, k), pooled)


def _moved_scene(scene, scale: int = 2):
    image, depth, K = scene
    h, w = image.shape[:2]
    cloud = unproject(image, depth, K, np.eye(4))
    poses = np.stack([np.eye(4)] * 3)
    poses[1, :3, 3] = [0.3, -0.1, -0.8]  # backward: minified, holes at the edges
    poses[2, :3, :3] = rotation_about([0, 1, 0], 6.0)
    poses[2, :3, 3] = [0.0, 0.0, 0.5]  # forward: magnified gaussians
    k = K.copy()
    k[:2] /= scale
    return cloud, poses, k, w // scale, h // scale


def test_compiled_loops_match_the_torch_path(scene):
    """The two implementations of the filtered path agree on a real photo's cloud seen from
    three poses, with the points split over two threads."""
    if not numba_loops.available():
        pytest.skip("numba is not installed")
    cloud, poses, k, w, h = _moved_scene(scene)
    assert len(cloud) > 4 * numba_loops.MIN_POINTS_PER_THREAD
    loops = SplatRenderer("cpu", SplatConfig(threads=2)).render(cloud, poses, k, w, h, return_index=True)
    tensors = SplatRenderer("cpu", SplatConfig(cpu_loops=False)).render(cloud, poses, k, w, h,
                                                                        return_index=True)
    loops, tensors = loops.numpy(), tensors.numpy()
    assert (loops.mask != tensors.mask).mean() < 1e-4
    both = loops.mask & tensors.mask
    off = np.abs(loops.image.astype(int) - tensors.image.astype(int)).max(-1)
    assert (off[both] <= 1).mean() > 0.999 and off[both].max() <= 3
    # float64 vs float32 projection: a point on a pixel boundary may land on either side
    assert np.isclose(loops.depth[both], tensors.depth[both], rtol=1e-5).mean() > 0.9999
    assert (loops.index[both] == tensors.index[both]).mean() > 0.999


def test_compiled_loops_are_repeatable_and_thread_safe(scene):
    """Two threads rendering at once get, to the bit, what one thread gets alone, twice."""
    if not numba_loops.available():
        pytest.skip("numba is not installed")
    cloud, poses, k, w, h = _moved_scene(scene)
    renderer = SplatRenderer("cpu", SplatConfig(threads=2))
    alone = [renderer.render(cloud, p, k, w, h).numpy() for p in poses]
    again = [renderer.render(cloud, p, k, w, h).numpy() for p in poses]
    together: dict[int, object] = {}

    def draw(i: int) -> None:
        for _ in range(3):
            together[i] = renderer.render(cloud, poses[i], k, w, h).numpy()

    threads = [threading.Thread(target=draw, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(3):
        for out in (again[i], together[i]):
            np.testing.assert_array_equal(out.image, alone[i].image)
            np.testing.assert_array_equal(out.depth, alone[i].depth)


def test_a_frame_cut_short_does_not_leak_into_the_next(scene, monkeypatch):
    """The loops leave their depth buffers clean for the next frame; a frame that raises
    half-way leaves them dirty, and the next frame still renders exactly as a fresh renderer
    does."""
    if not numba_loops.available():
        pytest.skip("numba is not installed")
    cloud, poses, k, w, h = _moved_scene(scene)
    renderer = SplatRenderer("cpu", SplatConfig(threads=2))
    renderer.render(cloud, poses[0], k, w, h)

    def broken(*args):
        raise RuntimeError("cut short")

    merge = numba_loops._merge_depth  # raise after the pre-pass, before its buffers are reset
    monkeypatch.setattr(numba_loops, "_merge_depth", broken)
    with pytest.raises(RuntimeError):
        renderer.render(cloud, poses[1], k, w, h)
    monkeypatch.setattr(numba_loops, "_merge_depth", merge)
    after = renderer.render(cloud, poses[2], k, w, h).numpy()
    fresh = SplatRenderer("cpu", SplatConfig(threads=2))
    result = {}  # rendered on a new thread: its own, never-used buffers
    t = threading.Thread(target=lambda: result.update(out=fresh.render(cloud, poses[2], k, w, h).numpy()))
    t.start()
    t.join()
    np.testing.assert_array_equal(after.image, result["out"].image)
    np.testing.assert_array_equal(after.depth, result["out"].depth)
