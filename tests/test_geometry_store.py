"""Point store: unseen-pixel appends, de-duplication, capacity, chunks, PLY round trips."""

import numpy as np
import plyfile
import pytest

from backend.geometry import PointCloud, PointStore, read_ply, unproject, write_ply
from protocol.camera import intrinsics


def random_cloud(n: int, seed: int = 0) -> PointCloud:
    rng = np.random.default_rng(seed)
    return PointCloud(
        rng.normal(size=(n, 3)).astype(np.float32),
        rng.integers(0, 256, (n, 3), dtype=np.uint8),
        rng.uniform(1e-3, 1e-2, n).astype(np.float32),
    )


def view(seed: int = 0):
    rng = np.random.default_rng(seed)
    h, w = 48, 64
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    depth = rng.uniform(2.0, 3.0, (h, w)).astype(np.float32)
    return image, depth, intrinsics(w, h, 60.0)


def test_append_returns_delta_and_relifting_adds_nothing():
    image, depth, K = view()
    store = PointStore()
    cloud = unproject(image, depth, K, np.eye(4))
    delta = store.append(cloud)
    assert len(delta) == len(cloud) == len(store)
    np.testing.assert_array_equal(delta.xyz, cloud.xyz)
    assert len(store.append(cloud)) == 0  # same view again: every voxel is taken
    v = store.version
    # only unseen pixels: a mask selects them
    mask = np.zeros(depth.shape, bool)
    mask[:, :10] = True
    shifted = np.eye(4)
    shifted[0, 3] = 50.0  # far away: new voxels
    delta = store.append(unproject(image, depth, K, shifted, mask=mask))
    assert len(delta) == mask.sum() and len(store) == len(cloud) + mask.sum()
    assert store.version == v + 1
    np.testing.assert_array_equal(store.cloud().xyz[-len(delta) :], delta.xyz)


def test_fixed_voxel_dedup_keeps_one_point_per_occupied_voxel():
    store = PointStore(voxel_size=1.0)
    a = PointCloud(np.array([[0.2, 0.2, 0.2]], np.float32), np.zeros((1, 3), np.uint8),
                   np.ones(1, np.float32))
    b = PointCloud(np.array([[0.8, 0.9, 0.1], [1.5, 0.2, 0.2]], np.float32),
                   np.zeros((2, 3), np.uint8), np.ones(2, np.float32))
    store.append(a)
    delta = store.append(b)
    np.testing.assert_array_equal(delta.xyz, b.xyz[1:])


def test_capacity_thins_new_points_evenly_and_never_exceeds():
    store = PointStore(capacity=1000)
    store.append(random_cloud(600, seed=1))
    delta = store.append(random_cloud(1000, seed=2))
    assert len(delta) == 400 and len(store) == 1000
    # evenly thinned: the kept points span the whole batch, not its first 400
    src = random_cloud(1000, seed=2)
    kept = np.flatnonzero((src.xyz[:, None] == delta.xyz[None]).all(-1).any(1))
    assert kept.min() < 10 and kept.max() > 990
    assert len(store.append(random_cloud(10, seed=3))) == 0


def test_chunks_cover_the_delta_in_order():
    delta = random_cloud(1000)
    chunks = list(PointStore.chunks(delta, 300))
    assert [len(c) for c in chunks] == [300, 300, 300, 100]
    np.testing.assert_array_equal(PointCloud.concat(chunks).xyz, delta.xyz)
    assert len(list(PointStore.chunks(PointCloud.empty(), 300))) == 1
    with pytest.raises(ValueError):
        list(PointStore.chunks(delta, 0))


def test_ply_is_read_by_plyfile_with_identical_points(tmp_path):
    cloud = random_cloud(500)
    path = tmp_path / "cloud.ply"
    write_ply(path, cloud)
    ply = plyfile.PlyData.read(str(path))
    v = ply["vertex"]
    assert not ply.text and ply.byte_order == "<"
    np.testing.assert_array_equal(np.stack([v["x"], v["y"], v["z"]], 1), cloud.xyz)
    np.testing.assert_array_equal(np.stack([v["red"], v["green"], v["blue"]], 1), cloud.rgb)
    np.testing.assert_array_equal(v["radius"], cloud.radius)
    back = read_ply(path)
    np.testing.assert_array_equal(back.xyz, cloud.xyz)


def test_reads_a_plyfile_written_file_with_extra_properties(tmp_path):
    cloud = random_cloud(50)
    rows = np.empty(50, [("x", "f4"), ("y", "f4"), ("z", "f4"), ("nx", "f8"),
                         ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    rows["x"], rows["y"], rows["z"] = cloud.xyz.T
    rows["nx"] = 1.0
    rows["red"], rows["green"], rows["blue"] = cloud.rgb.T
    path = tmp_path / "other.ply"
    plyfile.PlyData([plyfile.PlyElement.describe(rows, "vertex")], byte_order="<").write(str(path))
    back = read_ply(path)
    np.testing.assert_array_equal(back.xyz, cloud.xyz)
    np.testing.assert_array_equal(back.rgb, cloud.rgb)
    assert (back.radius == 0).all()
    plyfile.PlyData([plyfile.PlyElement.describe(rows, "vertex")], text=True).write(str(path))
    with pytest.raises(ValueError, match="binary_little_endian"):
        read_ply(path)


def test_store_save_and_load_round_trip(tmp_path):
    image, depth, K = view()
    store = PointStore()
    store.append(unproject(image, depth, K, np.eye(4)))
    store.save(tmp_path / "scene.ply")
    loaded = PointStore.load(tmp_path / "scene.ply")
    a, b = store.cloud(), loaded.cloud()
    np.testing.assert_array_equal(a.xyz, b.xyz)
    np.testing.assert_array_equal(a.rgb, b.rgb)
    np.testing.assert_array_equal(a.radius, b.radius)
    assert len(loaded.append(unproject(image, depth, K, np.eye(4)))) == 0  # index rebuilt


def test_at_the_budget_far_points_merge_and_the_world_still_grows():
    image, depth, K = view(0)
    store = PointStore(capacity=4_000)
    store.append(unproject(image, depth, K, np.eye(4, dtype=np.float32)))
    assert len(store) > 0.75 * store.capacity  # near the budget
    pose = np.eye(4, dtype=np.float32)
    pose[:3, 3] = [0.0, 0.0, -1.5]  # a step back: new points around the old view
    image2, depth2, _ = view(1)
    new = unproject(image2, depth2, K, pose).take(slice(0, 1500))
    delta = store.append_within_budget(new, pose[:3, 3], float(K[0, 0]))
    assert len(delta) > 0.5 * len(new), (len(delta), len(new))
    assert store.merges == 1 and len(store) <= store.capacity
    assert len(store) > len(delta)  # the old view survives, merged, not evicted
