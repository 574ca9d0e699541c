"""Depth alignment, the horizon prior, flying-pixel cleanup, layered depth, consistency."""

import numpy as np
import pytest

from backend.geometry import (
    align_depth,
    clean_depth_edges,
    consistency,
    estimate_horizon,
    horizon_depth,
    split_layers,
    unproject,
)
from backend.geometry.splat import SplatRenderer
from protocol.camera import intrinsics


def test_alignment_recovers_scale_and_shift_under_noise_and_outliers():
    rng = np.random.default_rng(1)
    depth = rng.uniform(1.0, 10.0, size=(120, 160))
    reference = 2.5 * depth + 0.7 + rng.normal(0, 0.02, depth.shape)
    outliers = rng.random(depth.shape) < 0.15
    reference[outliers] = rng.uniform(0.1, 60.0, outliers.sum())
    mask = rng.random(depth.shape) < 0.8
    fit = align_depth(depth, reference, mask)
    assert fit.scale == pytest.approx(2.5, rel=5e-3)
    assert fit.shift == pytest.approx(0.7, abs=0.03)
    assert fit.residual == pytest.approx(0.02, rel=0.3)
    assert 0.75 < fit.inlier_fraction < 0.9
    np.testing.assert_allclose(fit.apply(depth)[~outliers], (2.5 * depth + 0.7)[~outliers], atol=0.05)
    # plain least squares is pulled away by the outliers (the robust fit is doing work)
    A = np.stack([depth[mask], np.ones(mask.sum())], 1)
    ls = np.linalg.lstsq(A, reference[mask], rcond=None)[0]
    assert abs(ls[0] - 2.5) > 20 * abs(fit.scale - 2.5)


def test_alignment_rejects_degenerate_input():
    with pytest.raises(ValueError, match="distinct"):
        align_depth(np.ones((4, 4)), np.ones((4, 4)))


def test_horizon_prior_is_ground_below_far_above():
    h, w = 96, 128
    image = np.zeros((h, w, 3), np.uint8)
    image[:40] = [120, 170, 240]  # sky
    image[40:] = [90, 120, 60]  # ground
    assert abs(estimate_horizon(image) - 40) <= 1
    K = intrinsics(w, h, 60.0)
    depth = horizon_depth(image, K, camera_height=1.5)
    assert depth.shape == (h, w) and depth.dtype == np.float32 and np.all(depth > 0)
    col = depth[:, w // 2]
    assert np.all(np.diff(col[45:]) < 0)  # ground comes closer toward the bottom
    fy = K[1, 1]
    assert col[-1] == pytest.approx(1.5 * fy / (h - 0.5 - 40), rel=0.1)
    assert np.ptp(col[:30]) < 1e-3 * col[:30].mean()  # far plane above the horizon
    assert col[:30].min() > col[50:].max()


def test_horizon_prior_keeps_sky_mirrored_in_water_on_the_ground():
    """Water as bright as the sky below the horizon: the edge-following filter may bring
    pixels nearer than the ground plane, never farther (it used to sink the water)."""
    h, w = 96, 128
    image = np.zeros((h, w, 3), np.uint8)
    image[:40] = [200, 210, 230]  # sky
    image[40:] = [60, 70, 40]  # ground
    image[44:70, 30:100] = [200, 210, 230]  # a lake mirroring the sky
    K = intrinsics(w, h, 60.0)
    depth = horizon_depth(image, K, horizon_row=40)
    v = np.arange(h) + 0.5 - 40
    ground = np.where(v > 0, K[1, 1] / np.maximum(v, 1e-9), np.inf)[:, None]
    far = K[1, 1] / 2.0
    assert np.all(depth <= np.minimum(ground, far) * (1 + 1e-5))


def test_horizon_prior_follows_image_edges():
    h, w = 64, 64
    image = np.full((h, w, 3), 200, np.uint8)
    image[:, 32:] = 30  # a vertical edge: smoothing must not bleed across it
    K = intrinsics(w, h, 60.0)
    depth = horizon_depth(image, K, horizon_row=32, smooth_radius=6)
    assert np.allclose(depth[:, 5], depth[:, 58], rtol=0.05)


def test_flying_pixels_are_dropped_or_pushed_back():
    depth = np.full((20, 20), 10.0, np.float32)
    depth[:, :10] = 2.0
    depth[:, 10] = 6.0  # a blended pixel between the two surfaces
    clean, keep = clean_depth_edges(depth, threshold=0.05, mode="drop")
    assert not keep[:, 10].any() and keep[:, :10].all() and keep[:, 11:].all()
    pushed, keep = clean_depth_edges(depth, threshold=0.05, mode="push")
    assert keep.all() and np.all(pushed[:, 10] == 10.0)
    assert np.all(pushed[:, :10] == 2.0)
    K = intrinsics(20, 20, 60.0)
    image = np.zeros((20, 20, 3), np.uint8)
    _, keep = clean_depth_edges(depth, mode="drop")
    z = unproject(image, depth, K, np.eye(4), mask=keep).xyz[:, 2]
    assert not np.any((z > 2.5) & (z < 9.5))  # no points float between the surfaces


def test_layers_split_by_depth_and_mark_occlusions():
    h, w = 40, 60
    depth = np.full((h, w), 20.0)
    depth[5:35, 5:25] = 2.0  # near box
    depth[10:30, 30:50] = 6.0  # middle box
    image = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    ld = split_layers(image, depth, n_layers=3, fill_margin=None)
    assert len(ld.layers) == 3
    near, mid, far = ld.layers
    assert near.mask.sum() == 30 * 20 and near.mask[5:35, 5:25].all()
    assert mid.mask[10:30, 30:50].all() and mid.mask.sum() == 400
    assert far.mask.sum() == h * w - 600 - 400
    assert not near.occluded.any()
    np.testing.assert_array_equal(mid.occluded, near.mask)
    np.testing.assert_array_equal(far.occluded, near.mask | mid.mask)
    # colour only on the layer's own pixels; depth guesses stay inside the layer's interval
    assert (far.color[far.mask] == image[far.mask]).all() and (far.color[~far.mask] == 0).all()
    assert np.all((far.depth[far.occluded] >= far.near) & (far.depth[far.occluded] <= far.far))
    assert np.allclose(far.depth[far.occluded], 20.0)
    assert np.all(np.diff(ld.bounds) > 0)


def test_layer_occlusion_margin_limits_the_fill_region():
    depth = np.full((40, 40), 10.0)
    depth[:, :20] = 1.0
    ld = split_layers(np.zeros((40, 40, 3), np.uint8), depth, n_layers=2, fill_margin=4)
    assert ld.layers[1].occluded.sum() == 40 * 4
    assert ld.layers[1].occluded[:, 16:20].all()


def test_consistency_is_low_for_a_consistent_render_and_high_for_noise():
    rng = np.random.default_rng(0)
    h, w = 64, 64
    K = intrinsics(w, h, 60.0)
    yy, xx = np.mgrid[0:h, 0:w]
    image = (127 + 100 * np.sin(xx / 5.0)[..., None] * np.cos(yy / 7.0)[..., None]).astype(np.uint8)
    image = np.repeat(image, 3, axis=2)
    depth = np.full((h, w), 4.0, np.float32)
    pose1 = np.eye(4)
    pose1[0, 3] = 0.05
    cloud = unproject(image, depth, K, np.eye(4))
    nxt = SplatRenderer("cpu").render(cloud, pose1, K, w, h).numpy()
    good = consistency(image, nxt.image[0], depth, np.eye(4), pose1, K)
    noise = rng.integers(0, 255, image.shape, dtype=np.uint8)
    bad = consistency(image, noise, depth, np.eye(4), pose1, K)
    assert 0.8 < good.covisible < 1.0
    assert good.error < 3.0 < 20.0 < bad.error
