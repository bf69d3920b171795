"""DROID's robot in MJCF: a 7-DoF Franka Emika Panda with a Robotiq 2F-85 style parallel gripper.

Why a model written from published figures instead of shipped assets (options measured with mujoco 4.0.0):
robosuite 1.5.2 ships Panda and Robotiq 2F-85 meshes but is a 150 MB wheel with heavy dependencies, its
Robotiq needs an XML fix, and full meshes render at 16-22 fps at 224^2; gymnasium-robotics 1.4.2 and pybullet's
URDF ship the Panda with Franka's own hand, not DROID's Robotiq; mujoco-menagerie and robot-descriptions
download at run time, which this project does not allow. Written from the figures, every body is placed from
Franka's modified Denavit-Hartenberg table, so forward kinematics match the published parameters to
floating-point precision (tested); the model loads offline in milliseconds with no extra dependency; and
capsule/box primitives render fast enough for three 16:9 cameras inside a 10 s session. The cost is visual:
links are white and grey capsules, not Franka's castings (no shipped mesh set is photo-real either).

Published figures used (Franka Control Interface documentation, "Robot and interface specifications"):

- Modified DH (Craig): ``a`` = [0, 0, 0, 0.0825, -0.0825, 0, 0.088] m, ``d`` = [0.333, 0, 0.316, 0, 0.384, 0, 0]
  m, ``alpha`` = [0, -pi/2, pi/2, pi/2, -pi/2, pi/2, pi/2] rad; flange ``d`` = 0.107 m.
- Joint limits (rad): :data:`JOINT_LOWER`, :data:`JOINT_UPPER`; velocity limits (rad/s): :data:`JOINT_VELOCITY_LIMIT`;
  torque limits (N m): :data:`JOINT_TORQUE_LIMIT`; link masses (kg, the identified values of Gaz et al. 2019,
  "Dynamic identification of the Franka Emika Panda robot"): :data:`LINK_MASS`.
- DROID's reset posture ``[0, -pi/5, 0, -4pi/5, 0, 3pi/5, 0]`` (:data:`HOME_JOINTS`).

The gripper follows the Robotiq 2F-85's figures: 85 mm stroke (two fingers, 42.5 mm each), 20-235 N grip
force (the scene file sets it), pads 22 mm wide. Its linkage is replaced by two prismatic fingers driven by
force-limited position servos, so grasps are real contact grasps with the 2F-85's parallel pad motion. The
tool centre point (TCP) sits :data:`TCP_FROM_FLANGE` m along the flange's z axis, 5 mm inside the fingertips;
at joint 7 = 0 the fingers close along the TCP's y axis.

The arm is actuated by joint position servos with Franka's torque limits, gravity compensated (as Franka's
controller does), so it is stiff in free space and yields to contact.
"""

from __future__ import annotations

import numpy as np

DH_A = (0.0, 0.0, 0.0, 0.0825, -0.0825, 0.0, 0.088)
DH_D = (0.333, 0.0, 0.316, 0.0, 0.384, 0.0, 0.0)
DH_ALPHA = (0.0, -np.pi / 2, np.pi / 2, np.pi / 2, -np.pi / 2, np.pi / 2, np.pi / 2)
FLANGE_D = 0.107
JOINT_LOWER = np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973])
JOINT_UPPER = np.array([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973])
JOINT_VELOCITY_LIMIT = np.array([2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61])
JOINT_TORQUE_LIMIT = np.array([87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0])
LINK_MASS = (4.970684, 0.646926, 3.228604, 3.587895, 1.225946, 1.666555, 0.735522)
HOME_JOINTS = np.array([0.0, -np.pi / 5, 0.0, -4 * np.pi / 5, 0.0, 3 * np.pi / 5, 0.0])
JOINT_NAMES = tuple(f"joint{i}" for i in range(1, 8))

GRIPPER_STROKE_M = 0.085
FINGER_TIP_FROM_FLANGE = 0.155
TCP_FROM_FLANGE = 0.150
PAD_HALF = (0.011, 0.004, 0.019)
LINK_RADIUS = (0.06, 0.06, 0.06, 0.055, 0.055, 0.045, 0.045)
SERVO_KP = (4500.0, 4500.0, 3500.0, 3500.0, 2000.0, 2000.0, 2000.0)
SERVO_KV = (450.0, 450.0, 350.0, 350.0, 200.0, 200.0, 200.0)
ARMATURE = (0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1)
ARM_COLLISION = 'contype="2" conaffinity="1"'


def _fmt(values) -> str:
    return " ".join(f"{float(v):.8g}" for v in np.ravel(values))


def dh_offset(index: int) -> tuple[np.ndarray, np.ndarray]:
    """Pose of joint ``index`` (0-based) in the previous link's frame, from the modified DH row ``index``.

    ``T = RotX(alpha) TransX(a) RotZ(theta) TransZ(d)``; with theta applied by the hinge about the new z axis
    the fixed part is a translation ``(a, -sin(alpha) d, cos(alpha) d)`` and a rotation ``RotX(alpha)``.
    Returns (position (3,), quaternion (w, x, y, z)).
    """
    a, d, alpha = DH_A[index], DH_D[index], DH_ALPHA[index]
    pos = np.array([a, -np.sin(alpha) * d, np.cos(alpha) * d])
    quat = np.array([np.cos(alpha / 2), np.sin(alpha / 2), 0.0, 0.0])
    return pos, quat


def _link_geoms(index: int, rgba: str) -> str:
    """Capsules for link ``index`` (1-based; 0 is the base): a joint housing along z and a capsule to the next
    joint's origin (expressed in this link's frame)."""
    radius = LINK_RADIUS[max(index - 1, 0)]
    if index < 7:
        next_pos, _ = dh_offset(index)
    else:
        next_pos = np.array([0.0, 0.0, FLANGE_D - 0.01])
    mass = LINK_MASS[index - 1] if index >= 1 else 4.0
    parts = [
        f'<geom type="capsule" fromto="0 0 {-radius * 0.9:.4g} 0 0 {radius * 0.9:.4g}" size="{radius}" '
        f'rgba="{rgba}" mass="{mass / 2:.6g}" {ARM_COLLISION}/>'
    ]
    if np.linalg.norm(next_pos) > 1e-6:
        parts.append(
            f'<geom type="capsule" fromto="0 0 0 {_fmt(next_pos)}" size="{radius * 0.85:.4g}" '
            f'rgba="{rgba}" mass="{mass / 2:.6g}" {ARM_COLLISION}/>'
        )
    return "".join(parts)


def _gripper_xml(wrist_camera: str) -> str:
    """The Robotiq 2F-85 style hand, in the flange frame (z out of the flange)."""
    half_open = GRIPPER_STROKE_M / 2
    pad_z = FINGER_TIP_FROM_FLANGE - PAD_HALF[2]
    knuckle_top = 0.094
    knuckle_half_z = (pad_z - PAD_HALF[2] - knuckle_top) / 2 + 0.004
    knuckle_z = knuckle_top + knuckle_half_z - 0.004
    finger = 'friction="1.5 0.02 0.002" condim="4" solref="0.004 1" contype="2" conaffinity="1"'
    fingers = []
    for side, sign in (("left", 1), ("right", -1)):
        fingers.append(
            f'<body name="finger_{side}" gravcomp="1">'
            f'<joint name="finger_{side}" type="slide" axis="0 {sign} 0" range="0 {half_open:.6g}" damping="4" '
            'armature="0.01"/>'
            f'<geom name="finger_{side}" type="box" size="{_fmt(PAD_HALF)}" pos="0 {sign * PAD_HALF[1]:.6g} '
            f'{pad_z:.6g}" rgba="0.1 0.1 0.1 1" mass="0.02" {finger}/>'
            f'<geom name="knuckle_{side}" type="box" size="0.012 0.006 {knuckle_half_z:.6g}" '
            f'pos="0 {sign * (PAD_HALF[1] * 2 + 0.006):.6g} {knuckle_z:.6g}" rgba="0.2 0.2 0.22 1" mass="0.04" '
            f"{ARM_COLLISION}/>"
            "</body>"
        )
    return (
        f'<body name="hand" pos="0 0 {FLANGE_D}" gravcomp="1">'
        '<geom name="coupling" type="cylinder" size="0.0375 0.007" pos="0 0 0.007" rgba="0.15 0.15 0.16 1" '
        f'mass="0.1" {ARM_COLLISION}/>'
        '<geom name="gripper_body" type="box" size="0.03 0.0435 0.04" pos="0 0 0.054" rgba="0.22 0.22 0.24 1" '
        f'mass="0.7" {ARM_COLLISION}/>'
        f'<site name="tcp" pos="0 0 {TCP_FROM_FLANGE}" size="0.004" rgba="1 0 0 0" group="5"/>'
        f"{wrist_camera}{''.join(fingers)}</body>"
    )


def franka_xml(*, base_pos: np.ndarray, wrist_camera: str) -> str:
    """The arm and gripper as one ``<body>`` tree rooted at ``base_pos`` (3,) m in the world frame.

    ``wrist_camera``: ``<camera .../>`` elements placed in the hand (flange) frame.
    """
    white = "0.93 0.93 0.95 1"
    grey = "0.25 0.25 0.27 1"
    xml = _gripper_xml(wrist_camera)
    for index in range(7, 0, -1):
        pos, quat = dh_offset(index - 1)
        low, high = JOINT_LOWER[index - 1], JOINT_UPPER[index - 1]
        xml = (
            f'<body name="link{index}" pos="{_fmt(pos)}" quat="{_fmt(quat)}" gravcomp="1">'
            f'<joint name="joint{index}" type="hinge" axis="0 0 1" range="{low:.6g} {high:.6g}" '
            f'armature="{ARMATURE[index - 1]}" damping="1"/>'
            f"{_link_geoms(index, white if index % 2 else grey)}{xml}</body>"
        )
    pedestal_half = max(float(base_pos[2]) + 0.8, 0.05) / 2
    return (
        f'<body name="link0" pos="{_fmt(base_pos)}">'
        f'<geom type="cylinder" size="0.09 {pedestal_half:.6g}" pos="0 0 {-pedestal_half:.6g}" rgba="{grey}" '
        'contype="0" conaffinity="0"/>'
        f'<geom type="cylinder" size="0.07 0.06" pos="0 0 0.06" rgba="{white}" {ARM_COLLISION}/>'
        f"{xml}</body>"
    )


def franka_actuators_xml(finger_force: float) -> str:
    """Joint position servos (Franka torque limits) and the two finger servos (grip force ``finger_force`` N)."""
    half_open = GRIPPER_STROKE_M / 2
    servos = [
        f'<position name="joint{i + 1}" joint="joint{i + 1}" kp="{SERVO_KP[i]}" kv="{SERVO_KV[i]}" '
        f'ctrlrange="{JOINT_LOWER[i]:.6g} {JOINT_UPPER[i]:.6g}" '
        f'forcerange="{-JOINT_TORQUE_LIMIT[i]} {JOINT_TORQUE_LIMIT[i]}"/>'
        for i in range(7)
    ]
    for side in ("left", "right"):
        servos.append(
            f'<position name="finger_{side}" joint="finger_{side}" kp="600" kv="8" '
            f'ctrlrange="0 {half_open:.6g}" forcerange="{-finger_force} {finger_force}"/>'
        )
    return "".join(servos)
