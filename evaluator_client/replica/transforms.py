"""Rotation helpers in DROID's conventions: extrinsic xyz Euler angles (roll, pitch, yaw) in radians, as
scipy's ``Rotation.from_euler("xyz", ...)``, and MuJoCo's (w, x, y, z) quaternions."""

from __future__ import annotations

import numpy as np


def euler_to_mat(euler: np.ndarray) -> np.ndarray:
    """Extrinsic xyz Euler (roll, pitch, yaw) rad -> rotation matrix (3, 3) = Rz @ Ry @ Rx."""
    cr, sr = np.cos(euler[0]), np.sin(euler[0])
    cp, sp = np.cos(euler[1]), np.sin(euler[1])
    cy, sy = np.cos(euler[2]), np.sin(euler[2])
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return rz @ ry @ rx


def mat_to_euler(mat: np.ndarray) -> np.ndarray:
    """Rotation matrix (3, 3) -> extrinsic xyz Euler (roll, pitch, yaw) rad, as scipy's ``as_euler("xyz")``."""
    pitch = -np.arcsin(np.clip(mat[2, 0], -1.0, 1.0))
    if abs(mat[2, 0]) < 1.0 - 1e-9:
        roll = np.arctan2(mat[2, 1], mat[2, 2])
        yaw = np.arctan2(mat[1, 0], mat[0, 0])
    else:
        roll = np.arctan2(-mat[1, 2], mat[1, 1])
        yaw = 0.0
    return np.array([roll, pitch, yaw])


def mat_to_quat(mat: np.ndarray) -> np.ndarray:
    """Rotation matrix (3, 3) -> unit quaternion (w, x, y, z)."""
    trace = np.trace(mat)
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        quat = [
            0.25 * s,
            (mat[2, 1] - mat[1, 2]) / s,
            (mat[0, 2] - mat[2, 0]) / s,
            (mat[1, 0] - mat[0, 1]) / s,
        ]
    else:
        i = int(np.argmax(np.diag(mat)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + mat[i, i] - mat[j, j] - mat[k, k])
        quat = [0.0, 0.0, 0.0, 0.0]
        quat[0] = (mat[k, j] - mat[j, k]) / s
        quat[1 + i] = 0.25 * s
        quat[1 + j] = (mat[j, i] + mat[i, j]) / s
        quat[1 + k] = (mat[k, i] + mat[i, k]) / s
    q = np.asarray(quat, float)
    return q / np.linalg.norm(q)


def axis_angle_mat(rotvec: np.ndarray) -> np.ndarray:
    """Rotation vector (3,) rad (axis times angle) -> rotation matrix (3, 3) (Rodrigues)."""
    angle = float(np.linalg.norm(rotvec))
    if angle < 1e-12:
        return np.eye(3)
    k = rotvec / angle
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


def rotvec_from_mat(mat: np.ndarray) -> np.ndarray:
    """Rotation matrix (3, 3) -> rotation vector (3,) rad, angle in [0, pi]."""
    angle = np.arccos(np.clip((np.trace(mat) - 1) / 2, -1.0, 1.0))
    if angle < 1e-9:
        return np.zeros(3)
    if np.pi - angle < 1e-6:
        diag = np.sqrt(np.clip((np.diag(mat) + 1) / 2, 0, None))
        axis = diag * np.sign(np.array([1.0, mat[0, 1] + 1e-12, mat[0, 2] + 1e-12]))
        return axis / np.linalg.norm(axis) * angle
    axis = np.array([mat[2, 1] - mat[1, 2], mat[0, 2] - mat[2, 0], mat[1, 0] - mat[0, 1]]) / (
        2 * np.sin(angle)
    )
    return axis * angle


def camera_mat_from_opencv(rot_opencv: np.ndarray) -> np.ndarray:
    """A camera's orientation in OpenCV axes (x right, y down, z forward; DROID's calibration) -> MuJoCo's
    camera axes (x right, y up, looking along -z): a half turn about the camera's x axis."""
    return rot_opencv @ np.diag([1.0, -1.0, -1.0])
