"""Camera math shared by the explorer and the backend (numpy only).

Conventions (DESIGN.md):
- Camera frame is OpenCV: +x right, +y down, +z forward.
- A pose is camera-to-world, a 4x4 float64 matrix ``T_world_camera``; the world frame is the
  first view's camera frame, so the first pose of a scene is the identity.
- Intrinsics ``K`` are 3x3 in pixels; pixel centres sit at integer + 0.5 in the image plane
  convention used here (``u = fx * x / z + cx`` with ``cx = W / 2`` for a centred camera).
- Depth is z-depth (distance along +z), not ray length.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

# Flip y and z: OpenCV camera (x right, y down, z forward) -> OpenGL camera (x right, y up,
# z backward). The only place the two conventions meet.
_CV_TO_GL = np.diag([1.0, -1.0, -1.0, 1.0])


def intrinsics(width: int, height: int, fov_x_deg: float = 60.0) -> np.ndarray:
    """3x3 pinhole K for an image of ``width`` x ``height`` pixels with horizontal FOV in degrees."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if not 1.0 <= fov_x_deg <= 179.0:
        raise ValueError(f"fov_x_deg must be in [1, 179], got {fov_x_deg}")
    f = 0.5 * width / np.tan(np.deg2rad(fov_x_deg) / 2.0)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def scale_intrinsics(K: np.ndarray, sx: float, sy: float | None = None) -> np.ndarray:
    """K for the same camera after resizing the image by ``sx`` (and ``sy``) in each axis."""
    sy = sx if sy is None else sy
    out = np.array(K, dtype=np.float64, copy=True)
    out[0] *= sx
    out[1] *= sy
    return out


def check_pose(pose: np.ndarray, name: str = "pose") -> np.ndarray:
    """Return ``pose`` as a float64 4x4 rigid transform or raise ValueError saying what is wrong."""
    p = np.asarray(pose, dtype=np.float64)
    if p.shape != (4, 4):
        raise ValueError(f"{name} must be 4x4, got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{name} has non-finite entries")
    if not np.allclose(p[3], [0, 0, 0, 1], atol=1e-6):
        raise ValueError(f"{name} bottom row must be [0, 0, 0, 1], got {p[3].tolist()}")
    R = p[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or np.linalg.det(R) < 0:
        raise ValueError(f"{name} rotation is not orthonormal with det +1")
    return p


def invert_pose(pose: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform (world-to-camera from camera-to-world and back)."""
    R = pose[..., :3, :3]
    t = pose[..., :3, 3:]
    out = np.zeros(pose.shape, dtype=np.float64)
    Rt = np.swapaxes(R, -1, -2)
    out[..., :3, :3] = Rt
    out[..., :3, 3:] = -Rt @ t
    out[..., 3, 3] = 1.0
    return out


def opencv_to_gl_view(pose_c2w: np.ndarray) -> np.ndarray:
    """GL view matrix (world -> GL eye space) from an OpenCV camera-to-world pose."""
    return _CV_TO_GL @ invert_pose(np.asarray(pose_c2w, dtype=np.float64))


def opencv_to_gl_pose(pose_c2w: np.ndarray) -> np.ndarray:
    """The same camera as a camera-to-world pose with OpenGL camera axes (x right, y up, z
    backward: nerfstudio's and three.js's convention); batched over leading axes. Its own
    inverse: applying it twice gives the OpenCV pose back."""
    return np.asarray(pose_c2w, dtype=np.float64) @ _CV_TO_GL


def gl_projection(K: np.ndarray, width: int, height: int, near: float, far: float) -> np.ndarray:
    """GL projection matrix matching pinhole ``K`` for a ``width`` x ``height`` viewport.

    Pixel (u, v) with v down maps to the same place in the GL framebuffer (v flipped to GL's
    bottom-up rows), so a GL render and a CPU splat of the same points line up.
    """
    if not 0 < near < far:
        raise ValueError(f"need 0 < near < far, got near={near}, far={far}")
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    P = np.zeros((4, 4))
    P[0, 0] = 2 * fx / width
    P[0, 2] = 1 - 2 * cx / width
    P[1, 1] = 2 * fy / height
    P[1, 2] = 2 * cy / height - 1
    P[2, 2] = -(far + near) / (far - near)
    P[2, 3] = -2 * far * near / (far - near)
    P[3, 2] = -1.0
    return P


def look_at(eye: ArrayLike, target: ArrayLike, up: ArrayLike = (0.0, -1.0, 0.0)) -> np.ndarray:
    """OpenCV camera-to-world pose at ``eye`` looking at ``target``; ``up`` defaults to -y (OpenCV)."""
    eye = np.asarray(eye, dtype=np.float64)
    z = np.asarray(target, dtype=np.float64) - eye
    n = np.linalg.norm(z)
    if n < 1e-12:
        raise ValueError("eye and target coincide")
    z /= n
    x = np.cross(z, -np.asarray(up, dtype=np.float64))
    if np.linalg.norm(x) < 1e-9:
        raise ValueError("view direction is parallel to up")
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = x, y, z, eye
    return pose


def rotation_about(axis: ArrayLike, angle: float) -> np.ndarray:
    """3x3 rotation by ``angle`` radians about unit ``axis`` (Rodrigues)."""
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * (K @ K)


def quat_from_matrix(R: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) of a 3x3 rotation, with w >= 0."""
    m = np.asarray(R, dtype=np.float64)
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0:
        s = np.sqrt(tr + 1.0) * 2
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif m[1, 1] > m[2, 2]:
        s = np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    quat = np.array(q)
    quat /= np.linalg.norm(quat)
    return -quat if quat[0] < 0 else quat


def matrix_from_quat(q: np.ndarray) -> np.ndarray:
    """3x3 rotation of a quaternion (w, x, y, z); normalises ``q`` first."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def slerp(q0: np.ndarray, q1: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation between unit quaternions along the shorter arc."""
    q0 = np.asarray(q0, dtype=np.float64)
    q1 = np.asarray(q1, dtype=np.float64)
    d = float(np.dot(q0, q1))
    if d < 0:
        q1, d = -q1, -d
    if d > 0.9995:
        q = q0 + t * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = np.arccos(np.clip(d, -1.0, 1.0))
    return (np.sin((1 - t) * theta) * q0 + np.sin(t * theta) * q1) / np.sin(theta)


def interpolate_pose(p0: np.ndarray, p1: np.ndarray, t: float) -> np.ndarray:
    """Pose a fraction ``t`` of the way from ``p0`` to ``p1``: lerp position, slerp rotation."""
    out = np.eye(4)
    out[:3, :3] = matrix_from_quat(slerp(quat_from_matrix(p0[:3, :3]), quat_from_matrix(p1[:3, :3]), t))
    out[:3, 3] = (1 - t) * p0[:3, 3] + t * p1[:3, 3]
    return out


def project(points_world: np.ndarray, pose_c2w: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (N, 2) and z-depth (N,) of world points seen from an OpenCV camera."""
    w2c = invert_pose(pose_c2w)
    pc = points_world @ w2c[:3, :3].T + w2c[:3, 3]
    z = pc[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = (pc[:, :2] / z[:, None]) * np.array([K[0, 0], K[1, 1]]) + np.array([K[0, 2], K[1, 2]])
    return uv, z
