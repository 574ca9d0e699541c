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
