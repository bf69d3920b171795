"""Differential inverse kinematics for the replica's Franka: damped least squares on MuJoCo's Jacobian.

Why by hand: the solver is a dozen lines of numpy around ``mujoco.mj_jacSite``; the libraries that package it
(dm_control's ``inverse_kinematics``, mink) would add a heavy dependency for the same three equations.

One solve moves the joints from ``q`` towards a TCP pose target with

    dq = J^T (J J^T + lambda^2 I)^-1 e + (I - J^+ J) k (q_posture - q)

where ``e`` (6,) stacks the position error (m) and the rotation-vector error (rad), both in the world frame,
``J`` (6, 7) is the TCP site's Jacobian, the second term pulls the redundant (nullspace) motion towards a
posture (DROID's reset pose) so the elbow does not drift, and every iterate is clipped to the joint limits.
A few iterations per control step suffice because each step's target is at most 7.5 cm / 0.15 rad away
(DROID's ``RobotIKSolver`` does a single velocity-level step per control step).
"""

from __future__ import annotations

import mujoco
import numpy as np

from evaluator_client.replica.transforms import rotvec_from_mat


class DifferentialIK:
    """DLS IK for one site over the joints ``qpos_adr`` / ``dof_adr`` (7 each) of ``model``.

    ``lower``/``upper``: joint limits (7,) rad; ``posture``: nullspace target (7,) rad; ``damping``: lambda
    (in m / rad units of the error); ``posture_gain``: fraction of the posture error corrected per iteration.
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        site: int,
        qpos_adr: np.ndarray,
        dof_adr: np.ndarray,
        lower: np.ndarray,
        upper: np.ndarray,
        posture: np.ndarray,
        *,
        damping: float = 0.02,
        posture_gain: float = 0.1,
    ) -> None:
        self.model = model
        self.data = mujoco.MjData(model)
        self.site = site
        self.qpos_adr = np.asarray(qpos_adr)
        self.dof_adr = np.asarray(dof_adr)
        self.lower, self.upper = np.asarray(lower, float), np.asarray(upper, float)
        self.posture = np.asarray(posture, float)
        self.damping = damping
        self.posture_gain = posture_gain
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    def site_pose(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World position (3,) and rotation (3, 3) of the site at joint angles ``q`` (7,)."""
        self._kinematics(q)
        return self.data.site_xpos[self.site].copy(), self.data.site_xmat[self.site].reshape(3, 3).copy()

    def _kinematics(self, q: np.ndarray) -> None:
        self.data.qpos[self.qpos_adr] = q
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)

    def solve(
        self, q: np.ndarray, target_pos: np.ndarray, target_rot: np.ndarray, *, iterations: int = 3
    ) -> np.ndarray:
        """Joint angles (7,) that bring the site towards ``target_pos`` (3,) / ``target_rot`` (3, 3), from ``q``."""
        q = np.clip(np.asarray(q, float).copy(), self.lower, self.upper)
        eye6 = np.eye(6)
        eye7 = np.eye(7)
        for _ in range(iterations):
            self._kinematics(q)
            pos = self.data.site_xpos[self.site]
            rot = self.data.site_xmat[self.site].reshape(3, 3)
            error = np.concatenate([target_pos - pos, rotvec_from_mat(target_rot @ rot.T)])
            if np.linalg.norm(error[:3]) < 1e-5 and np.linalg.norm(error[3:]) < 1e-4:
                break
            mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, self.site)
            jac = np.vstack([self._jacp[:, self.dof_adr], self._jacr[:, self.dof_adr]])
            inverse = jac.T @ np.linalg.inv(jac @ jac.T + self.damping**2 * eye6)
            step = inverse @ error
            step += (eye7 - inverse @ jac) @ (self.posture_gain * (self.posture - q))
            q = np.clip(q + step, self.lower, self.upper)
        return q
