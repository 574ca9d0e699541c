"""``dreamjourney export``: every format read back by a reader we did not write.

- splats: ``plyfile`` opens the PLY; every property is checked against the layout and the
  activations of the reference 3DGS code (``GaussianModel.load_ply``); a plane's points
  become discs on it;
- points: ``plyfile`` reads a coloured point PLY with the session's points;
- path: the JSON is read as nerfstudio's ``get_path_from_json`` reads it (camera_to_world as
  a row-major 4 x 4 in OpenGL camera axes, fx = fy = H / 2 / tan(fov / 2), centred principal
  point) and gives the session's cameras back;
- video: PyAV reads one MP4 with every kept clip's frames at their own rate.
The independent render of the shared scenes is in ``test_export_render.py``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import av
import numpy as np
import pytest
from plyfile import PlyData

from backend.geometry.cloud import PointCloud
from backend.geometry.ply import iter_ply, read_ply, write_ply
from backend.geometry.store import PointStore
from backend.session import OwnerSessions, SessionStore
from explorer.cli import main
from protocol.camera import intrinsics, rotation_about
from protocol.files.clouds import write_splats
from protocol.files.splats import SH_C0, SplatSettings
from protocol.messages import SceneText

REFERENCE_LAYOUT = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
                    + [f"f_rest_{i}" for i in range(45)]
                    + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
"""What graphdeco-inria's ``construct_list_of_attributes`` lists for SH degree 3."""


def _quat_to_rotmat(q: np.ndarray) -> np.ndarray:
    """The reference ``build_rotation``: q = (w, x, y, z), normalised."""
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], 1)


def _plane_and_blob(seed: int = 0) -> tuple[PointCloud, np.ndarray, int]:
    """A tilted plane seen from the origin (one point per pixel of a 64 x 64 view) and a
    random blob; returns the cloud, the plane's normal and the plane's point count."""
    rng = np.random.default_rng(seed)
    n = rotation_about([1.0, 0.0, 0.0], 0.9) @ np.array([0.0, 0.0, -1.0])  # faces the camera
    K = intrinsics(64, 64, 60.0)
    v, u = np.mgrid[0:64, 0:64] + 0.5
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1).reshape(-1, 3)
    p0 = np.array([0.0, 0.0, 4.0])
    t = (p0 @ n) / (rays @ n)  # ray-plane intersection
    plane = rays * t[:, None]
    radius = np.sqrt(0.5) * plane[:, 2] / K[0, 0]
    blob = rng.normal([1.5, -1.0, 6.0], 0.3, (300, 3))
    xyz = np.concatenate([plane, blob]).astype(np.float32)
    rgb = rng.integers(0, 256, (len(xyz), 3), dtype=np.uint8)
    rad = np.concatenate([radius, np.full(300, 0.05)]).astype(np.float32)
    return PointCloud(xyz, rgb, rad), n, len(plane)


def test_splat_ply_has_the_reference_layout_and_activations(tmp_path):
    cloud, normal, n_plane = _plane_and_blob()
    out = write_splats([(cloud.xyz, cloud.rgb, cloud.radius)], len(cloud), tmp_path / "s.ply",
                       SplatSettings(sh_degree=3))
    ply = PlyData.read(str(out))
    assert ply.text is False and ply.byte_order == "<"
    v = ply["vertex"]
    assert [p.name for p in v.properties] == REFERENCE_LAYOUT
    assert {v[p.name].dtype.str for p in v.properties} == {"<f4"}
    assert len(v) == len(cloud)
    np.testing.assert_array_equal(np.stack([v["x"], v["y"], v["z"]], 1), cloud.xyz)
    # colour through the degree-0 harmonic, as renderers show it: SH_C0 * f_dc + 0.5
    assert SH_C0 == 0.28209479177387814
    shown = 0.28209479177387814 * np.stack([v[f"f_dc_{i}"] for i in range(3)], 1) + 0.5
    np.testing.assert_allclose(shown, cloud.rgb / 255.0, atol=1e-6)
    assert all(np.all(v[f"f_rest_{i}"] == 0) for i in range(45))
    # opacity is a logit: the sigmoid gives the opacity
    np.testing.assert_allclose(1 / (1 + np.exp(-v["opacity"])), 0.99, atol=1e-6)
    # log scales: exp gives 0.3 * radius across the surface's slope
    scales = np.exp(np.stack([v[f"scale_{i}"] for i in range(3)], 1))
    np.testing.assert_allclose(scales[:, 1], 0.3 * cloud.radius, rtol=1e-5)
    # unit quaternions; on the plane (known surface) the thin third axis is its normal and the
    # first lies along the slope of the camera's ray, as long as the pixel's footprint there
    q = np.stack([v[f"rot_{i}"] for i in range(4)], 1)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-6)
    R = _quat_to_rotmat(q.astype(np.float64))
    inner = np.arange(64 * 64).reshape(64, 64)[4:48, 4:-4].ravel()  # not at its edges or grazing end
    assert np.all(np.abs(R[inner, :, 2] @ normal) > 0.999)
    np.testing.assert_allclose(scales[inner, 2], 0.1 * scales[inner, 1], rtol=1e-5)
    ray = cloud.xyz[inner] / np.linalg.norm(cloud.xyz[inner], axis=1, keepdims=True)
    cos = np.abs(ray @ normal)
    slope = ray - np.outer(ray @ normal, normal)
    slope /= np.linalg.norm(slope, axis=1, keepdims=True)
    assert np.all(np.abs(np.einsum("ij,ij->i", R[inner, :, 0], slope)) > 0.999)
    np.testing.assert_allclose(scales[inner, 0], 0.3 * cloud.radius[inner] / np.maximum(cos, 0.2),
                               rtol=2e-3)  # cos from the fitted normal
    normals = np.stack([v["nx"], v["ny"], v["nz"]], 1)
    np.testing.assert_allclose(np.abs(normals[inner] @ normal), 1.0, atol=1e-3)
    assert np.all(np.einsum("ij,ij->i", normals[inner], cloud.xyz[inner]) < 0)  # facing the camera
    # the blob is no surface: round Gaussians, identity rotation, no normal
    blob = slice(n_plane, None)
    np.testing.assert_allclose(scales[blob, 2], scales[blob, 0], rtol=1e-5)
    np.testing.assert_array_equal(q[blob], np.tile([1, 0, 0, 0], (300, 1)))
    assert np.all(normals[blob] == 0)


def test_splat_default_degree_zero_omits_f_rest_and_a_short_stream_leaves_no_file(tmp_path):
    cloud, _, _ = _plane_and_blob(1)
    out = write_splats([(cloud.xyz, cloud.rgb, cloud.radius)], len(cloud), tmp_path / "d0.ply")
    names = [p.name for p in PlyData.read(str(out))["vertex"].properties]
    assert names == [n for n in REFERENCE_LAYOUT if not n.startswith("f_rest")]
    with pytest.raises(ValueError, match="announced"):
        write_splats([(cloud.xyz, cloud.rgb, cloud.radius)], len(cloud) + 1, tmp_path / "short.ply")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d0.ply"]


def test_iter_ply_reads_any_chunking_as_read_ply(tmp_path):
    cloud, _, _ = _plane_and_blob(2)
    write_ply(tmp_path / "c.ply", cloud)
    whole = read_ply(tmp_path / "c.ply")
    for size in (1, 1000, 10**6):
        parts = list(iter_ply(tmp_path / "c.ply", size))
        assert len(parts) == math.ceil(len(cloud) / size)
        np.testing.assert_array_equal(np.concatenate([p.xyz for p in parts]), whole.xyz)
        np.testing.assert_array_equal(np.concatenate([p.rgb for p in parts]), whole.rgb)


# --- whole sessions through the command -----------------------------------------------------


def _session(tmp_path) -> tuple[OwnerSessions, PointCloud, list[np.ndarray], np.ndarray]:
    """A saved 48 x 32 session: a cloud and three clips (the middle one undone)."""
    cloud, _, _ = _plane_and_blob(3)
    store = PointStore(capacity=100_000)
    store.append(cloud)
    root = SessionStore(tmp_path / "sessions")
    sessions = root.owned_by("o")
    K = intrinsics(48, 32, 50.0)
    sessions.create("trip", np.zeros((32, 48, 3), np.uint8), K, SceneText(), "classic",
                    2.5, store=store)
    paths = []
    for c, (n, fps) in enumerate(((12, 24.0), (6, 24.0), (8, 12.0))):
        poses = np.tile(np.eye(4), (n, 1, 1))
        poses[:, 2, 3] = -np.linspace(0, 1, n) - c
        poses[:, :3, :3] = rotation_about([0, 1, 0], 0.1 * c)
        frames = [np.full((32, 48, 3), 10 * i + 60 * c, np.uint8) for i in range(n)]
        sessions.add_clip("trip", "transition", frames, poses, K, fps, poses[-1], store=store)
        paths.append(poses)
    sessions.record_undo("trip", "job-2", store, paths[0][-1])  # marks the last one undone
    return sessions, cloud, paths, K


def _trip(tmp_path) -> Path:
    """The session folder of ``_session`` (the backend names it ``trip-<random>``)."""
    (folder,) = (tmp_path / "sessions").glob("trip-*")
    return folder


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main(["export", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_export_points_and_splats_of_a_session(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sessions, cloud, _, _ = _session(tmp_path)
    code, out, err = _run(capsys, _trip(tmp_path), "--as", "points",
                          "--out", tmp_path / "p.ply")
    assert code == 0, err
    assert "wrote" in out and "100%" in err
    v = PlyData.read(str(tmp_path / "p.ply"))["vertex"]
    assert [p.name for p in v.properties] == ["x", "y", "z", "red", "green", "blue"]
    np.testing.assert_array_equal(np.stack([v["x"], v["y"], v["z"]], 1), cloud.xyz)
    np.testing.assert_array_equal(np.stack([v["red"], v["green"], v["blue"]], 1), cloud.rgb)
    # by name under --folder, the default file name
    code, _, err = _run(capsys, "trip", "--as", "splats", "--folder", tmp_path / "sessions",
                        "--sh-degree", "3")
    assert code == 0, err
    v = PlyData.read("trip-splats.ply")["vertex"]
    assert len(v) == len(cloud) and [p.name for p in v.properties] == REFERENCE_LAYOUT


def _nerfstudio_cameras(data: dict) -> tuple[np.ndarray, np.ndarray]:
    """The cameras nerfstudio's ``get_path_from_json`` makes of a path (its arithmetic):
    OpenCV camera-to-world poses (from its OpenGL ones) and each camera's K."""
    h, w = data["render_height"], data["render_width"]
    poses, Ks = [], []
    for cam in data["camera_path"]:
        c2w = np.asarray(cam["camera_to_world"], np.float64).reshape(4, 4)
        f = (h / 2.0) / np.tan(np.deg2rad(cam["fov"]) / 2.0)  # three_js_perspective_camera_focal_length
        Ks.append(np.array([[f, 0, w / 2.0], [0, f, h / 2.0], [0, 0, 1]]))
        poses.append(c2w @ np.diag([1.0, -1.0, -1.0, 1.0]))
    return np.stack(poses), np.stack(Ks)


def test_export_path_is_a_nerfstudio_camera_path_of_every_kept_camera(tmp_path, capsys):
    _, _, paths, K = _session(tmp_path)
    code, _, err = _run(capsys, _trip(tmp_path), "--as", "path", "--out", tmp_path / "p.json")
    assert code == 0, err
    data = json.loads((tmp_path / "p.json").read_text())
    for key, kind in (("camera_type", str), ("render_height", int), ("render_width", int), ("fps", float),
                      ("seconds", float), ("keyframes", list), ("camera_path", list),
                      ("default_fov", float), ("is_cycle", bool), ("smoothness_value", float)):
        assert isinstance(data[key], kind), key
    assert data["camera_type"] == "perspective" and (data["render_width"], data["render_height"]) == (48, 32)
    for entry in data["camera_path"]:
        assert set(entry) == {"camera_to_world", "fov", "aspect"} and len(entry["camera_to_world"]) == 16
        assert entry["aspect"] == pytest.approx(48 / 32)
    for entry in data["keyframes"]:
        assert {"matrix", "fov", "aspect"} <= set(entry) and len(entry["matrix"]) == 16
    poses, Ks = _nerfstudio_cameras(data)
    kept = np.concatenate(paths[:2])  # the third clip was undone
    np.testing.assert_allclose(poses, kept, atol=1e-9)
    np.testing.assert_allclose(Ks[:, 1, 1], K[1, 1], rtol=1e-9)  # K of the square-pixel camera
    assert data["fps"] == 24.0 and len(data["keyframes"]) == 3
    assert data["dreamjourney"]["median_depth"] == 2.5


def test_export_video_joins_the_kept_clips_at_their_own_rates(tmp_path, capsys):
    sessions, _, paths, _ = _session(tmp_path)
    sessions.add_clip("trip", "dynamics", [np.full((32, 48, 3), 200, np.uint8)] * 6,
                      np.tile(paths[1][-1], (6, 1, 1)), np.eye(3), 12.0, paths[1][-1])
    code, _, err = _run(capsys, _trip(tmp_path), "--as", "video", "--out", tmp_path / "v.mp4")
    assert code == 0, err
    with av.open(str(tmp_path / "v.mp4")) as container:
        frames = [(f.time, f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    assert len(frames) == 12 + 6 + 6  # clips 1 and 2, the dynamics loop; not the undone one
    assert frames[0][1].shape == (32, 48, 3)
    times = np.array([t for t, _ in frames])
    np.testing.assert_allclose(np.diff(times[:18]), 1 / 24, atol=2e-3)
    np.testing.assert_allclose(np.diff(times[18:]), 1 / 12, atol=2e-3)
    assert abs(int(frames[13][1].mean()) - 70) <= 3  # clip 2's second frame (10 * 1 + 60)


@pytest.mark.parametrize("argv, says", [
    (["nowhere", "--as", "splats"], "no saved session"),
    (["{s}", "--as", "path"], "no clips"),
    (["{s}", "--as", "points", "--out", "/proc/no/such/dir/x.ply"], "cannot write"),
])
def test_bad_exports_are_one_error_line_and_exit_2(tmp_path, capsys, argv, says):
    root = SessionStore(tmp_path)
    store = PointStore()
    store.append(_plane_and_blob(4)[0])
    folder = root.owned_by("o").create("bare", np.zeros((8, 8, 3), np.uint8), np.eye(3),
                                       SceneText(), "classic", 1.0, store=store)
    argv = [a.replace("{s}", str(root.path(folder))) for a in argv]
    code, out, err = _run(capsys, *argv, "--folder", tmp_path)
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines[-1].startswith("error: ") and says in lines[-1] and "Traceback" not in err
