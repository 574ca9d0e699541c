"""Offscreen (EGL) renderer tests: the splat cloud reproduces the photo it was lifted from."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from protocol.camera import intrinsics, project

moderngl = pytest.importorskip("moderngl")

from explorer.camera import FlyCamera  # noqa: E402
from explorer.point_buffer import PointCloudBuffer  # noqa: E402
from explorer.renderer import CloudRenderer, RenderTarget, ViewParams  # noqa: E402
from explorer.settings import SplatSettings  # noqa: E402

SCENE = "/work/shared/scenes/03_ancient.jpg"
pytestmark = pytest.mark.gl


def unproject(depth: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points (pose = identity) at pixel centres, and a radius covering the pixel."""
    h, w = depth.shape
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    x = (u - K[0, 2]) / K[0, 0] * depth
    y = (v - K[1, 2]) / K[1, 1] * depth
    xyz = np.stack([x, y, depth], -1).reshape(-1, 3).astype(np.float32)
    radius = (0.75 * depth / K[0, 0]).reshape(-1).astype(np.float32)
    return xyz, radius


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


@pytest.fixture(scope="module")
def ctx():
    try:
        c = moderngl.create_standalone_context(backend="egl")
    except Exception as exc:  # no EGL on this machine
        pytest.skip(f"no EGL context: {exc}")
    yield c
    c.release()


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.asarray(Image.open(SCENE).convert("RGB"))


def synthetic_depth(h: int, w: int) -> np.ndarray:
    """Far at the top, near at the bottom (a ground plane under a far backdrop), in [2, 10]."""
    rows = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    cols = np.linspace(-1.0, 1.0, w, dtype=np.float32)[None, :]
    return (10.0 - 8.0 * rows**1.5 + 0.5 * cols**2).astype(np.float32) * np.ones((h, w), np.float32)


def render(ctx, points: PointCloudBuffer, pose: np.ndarray, w: int, h: int,
           scale: float = 5.0, splats: SplatSettings | None = None) -> np.ndarray:
    cam = FlyCamera(scene_scale=scale)
    cam.set_pose(pose)
    K = cam.K(w, h)
    target = RenderTarget(ctx, w, h)
    target.use()
    target.clear()
    CloudRenderer(ctx, points, splats).draw(ViewParams(cam.view_matrix(), cam.projection(w, h),
                                                       K[1, 1]))
    img = target.read_rgb().copy()
    target.release()
    return img


def test_cloud_at_start_pose_matches_photo(ctx, photo):
    h, w = photo.shape[:2]
    K = intrinsics(w, h, 60.0)
    xyz, radius = unproject(synthetic_depth(h, w), K)
    points = PointCloudBuffer(ctx, initial_capacity=1024)
    # Arrive in chunks, as PointsDelta does; the buffer must grow without losing points.
    for chunk in np.array_split(np.arange(len(xyz)), 7):
        points.append(xyz[chunk], photo.reshape(-1, 3)[chunk], radius[chunk])
    assert points.count == h * w and points.capacity >= h * w and points.generation > 0
    assert points.bytes_uploaded == h * w * 20  # each point crossed the bus exactly once
    out = render(ctx, points, np.eye(4), w, h)
    assert psnr(out, photo) >= 30.0


def test_camera_step_renders_what_geometry_predicts(ctx, photo):
    """A fronto-parallel plane at depth Z shifts by f * dx / Z pixels for a sideways step dx."""
    h, w = photo.shape[:2]
    K = intrinsics(w, h, 60.0)
    Z = 4.0
    xyz, radius = unproject(np.full((h, w), Z, np.float32), K)
    points = PointCloudBuffer(ctx)
    points.append(xyz, photo.reshape(-1, 3), radius)
    shift_px = 24
    step = np.eye(4)
    step[0, 3] = shift_px * Z / K[0, 0]  # move right: the picture slides left
    out = render(ctx, points, step, w, h)
    expected = photo[:, shift_px:]
    assert psnr(out[:, : w - shift_px], expected) >= 30.0
    assert out[:, w - shift_px + 2 :].max() == 0  # uncovered strip stays background
    # And the same prediction from protocol.camera.project for one marked point.
    uv, z = project(xyz[[h // 2 * w + w // 2]].astype(np.float64), step, K)
    assert abs(uv[0, 0] - (w / 2 + 0.5 - shift_px)) < 1e-3 and z[0] == pytest.approx(Z)


@pytest.mark.parametrize("antialias", [False, True], ids=["discs", "filtered"])
def test_near_points_occlude_far_points_and_size_follows_depth(ctx, antialias):
    splats = SplatSettings(antialias=antialias)
    reach = splats.cover_scale if antialias else 1.0  # footprint radius in screen radii
    w = h = 128
    K = intrinsics(w, h, 60.0)
    points = PointCloudBuffer(ctx)
    # One far red splat and one near green splat on the optical axis, both radius 0.1.
    points.append(
        np.array([[0, 0, 8.0], [0, 0, 2.0]], np.float32),
        np.array([[255, 0, 0], [0, 255, 0]], np.uint8),
        np.array([0.4, 0.1], np.float32),
    )
    out = render(ctx, points, np.eye(4), w, h, splats=splats)
    assert tuple(out[64, 64]) == (0, 255, 0)
    # Disc diameters: 2 * r * f / z = 2*0.4*f/8 (red) and 2*0.1*f/2 (green), f = 110.85 px,
    # times the footprint's reach.
    red = (out[..., 0] > 128) & (out[..., 1] < 128)
    green = out[..., 1] > 128
    f = K[1, 1]
    assert green.sum() == pytest.approx(np.pi * (reach * 0.1 * f / 2) ** 2, rel=0.25)
    assert (red | green).sum() == pytest.approx(np.pi * (reach * 0.4 * f / 8) ** 2, rel=0.25)
    # Round, not square: the square's corners are discarded.
    ys, xs = np.nonzero(red | green)
    assert not (red | green)[ys.min(), xs.min()]


def draw_filtered(ctx, points: PointCloudBuffer, w: int, h: int,
                  splats: SplatSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image, footprint weights and K of one anti-aliased draw at the identity pose."""
    cam = FlyCamera(scene_scale=5.0)
    K = cam.K(w, h)
    target = RenderTarget(ctx, w, h)
    target.use()
    target.clear()
    cloud = CloudRenderer(ctx, points, splats)
    cloud.draw(ViewParams(cam.view_matrix(), cam.projection(w, h), K[1, 1]))
    img, weights = target.read_rgb().copy(), cloud.read_weights()
    target.release()
    return img, weights, K


def test_one_large_point_is_a_smooth_gaussian_of_its_own_colour(ctx):
    """The footprint's weights fall off radially as the Gaussian of sigma sigma_scale * r
    over a disc of cover_scale * r; normalised, every covered pixel is the point's colour."""
    w = h = 96
    splats = SplatSettings()
    points = PointCloudBuffer(ctx)
    colour = np.array([[200, 120, 40]], np.uint8)
    K = FlyCamera(scene_scale=5.0).K(w, h)
    r_px, z = 12.0, 4.0
    points.append(np.array([[0.1 * z / K[0, 0], 0.3 * z / K[1, 1], z]], np.float32), colour,
                  np.array([r_px * z / K[1, 1]], np.float32))
    img, weights, K = draw_filtered(ctx, points, w, h, splats)
    cu, cv = K[0, 2] + 0.1, K[1, 2] + 0.3  # the point's centre in pixels
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    d = np.hypot(u - cu, v - cv)
    reach, sigma = splats.cover_scale * r_px, splats.sigma_scale * r_px
    inside, outside = d < reach - 0.75, d > reach + 0.75
    expected = np.exp(-0.5 * (d / sigma) ** 2)
    np.testing.assert_allclose(weights[inside], expected[inside], atol=4e-3)
    assert weights[outside].max() == 0.0
    # Radially decreasing: the mean weight of each one-pixel ring falls ring after ring.
    rings = [weights[(d >= k) & (d < k + 1)].mean() for k in range(int(reach - 1))]
    assert np.all(np.diff(rings) < 0), rings
    # Smooth: neighbouring pixels differ by no more than the Gaussian's steepest slope.
    steepest = np.exp(-0.5) / sigma
    both = inside[:, 1:] & inside[:, :-1]
    assert np.abs(np.diff(weights, axis=1)[both]).max() <= 1.05 * steepest
    # Normalised: the centre, and every covered pixel, is the point's colour.
    assert tuple(img[int(cv), int(cu)]) == tuple(colour[0])
    assert np.abs(img[inside].astype(int) - colour[0]).max() <= 1
    assert img[outside].max() == 0


def grid_plane(K: np.ndarray, w: int, h: int, z: float, rgb, columns: slice = slice(None)):
    """One point per pixel centre (in ``columns``) on a fronto-parallel plane at depth z."""
    u, v = np.meshgrid(np.arange(w)[columns] + 0.5, np.arange(h) + 0.5)
    xyz = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z,
                    np.full(u.shape, z)], -1).reshape(-1, 3).astype(np.float32)
    n = len(xyz)
    return xyz, np.tile(np.asarray(rgb, np.uint8), (n, 1)), np.full(n, 0.71 * z / K[0, 0],
                                                                     np.float32)


def test_only_the_front_surface_shows_and_surfaces_within_the_tolerance_blend(ctx):
    w, h = 96, 64
    splats = SplatSettings()
    K = FlyCamera(scene_scale=5.0).K(w, h)
    points = PointCloudBuffer(ctx)
    # A red wall over the left half at z = 4; a green one everywhere at z = 4.4 (10% behind,
    # beyond the 4% tolerance), drawn after the red one so draw order cannot help.
    points.append(*grid_plane(K, w, h, 4.0, (255, 0, 0), slice(0, w // 2)))
    points.append(*grid_plane(K, w, h, 4.4, (0, 255, 0)))
    img, _, _ = draw_filtered(ctx, points, w, h, splats)
    front, back = img[:, : w // 2 - 3].astype(int), img[:, w // 2 + 3:].astype(int)
    assert front[..., 1].max() == 0 and front[..., 0].min() == 255  # no green bleeds through
    assert back[..., 0].max() == 0 and back[..., 1].min() == 255
    # Within the tolerance (1% apart) both surfaces are the front one: their colours blend.
    points.clear()
    points.append(*grid_plane(K, w, h, 4.0, (255, 0, 0)))
    points.append(*grid_plane(K, w, h, 4.04, (0, 255, 0)))
    mixed, _, _ = draw_filtered(ctx, points, w, h, splats)
    inner = mixed[4:-4, 4:-4].astype(int)
    assert inner[..., 0].min() > 60 and inner[..., 1].min() > 60
    assert np.abs(inner[..., 0] + inner[..., 1] - 255).max() <= 2
