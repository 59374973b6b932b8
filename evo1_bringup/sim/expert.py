"""A scripted expert for the simulated arm's task: move the fingertip above the named cube, then
down onto it, pointing down all the way. Inverse kinematics by damped least squares on MuJoCo's
site Jacobians. No ROS here: `evo1 sim-record` drives the simulator with it over ROS 2 topics.
"""

from __future__ import annotations

import numpy as np

from .scene import ARM_JOINTS, CUBE_HALF, Placement, Scene

APPROACH_HEIGHT = 0.13  # fingertip height above the table before descending
TOUCH_DEPTH = 0.01  # aim this far below the cube's top face, so contact is certain
SPEED = 0.22  # fingertip speed (m/s)
MAX_JOINT_STEP = 0.06  # rad per control step (1.2 rad/s at 20 Hz): under every joint's speed limit
ORIENTATION_WEIGHT = 0.3  # metres per radian: how much pointing down matters against position


def solve_ik(scene: Scene, start: np.ndarray, goal: np.ndarray, iterations: int = 30) -> np.ndarray:
    """Arm joints that put the fingertip at `goal`, pointing down, starting from `start`."""
    q = np.asarray(start, dtype=np.float64)[: len(ARM_JOINTS)].copy()
    damping = 0.05  # keeps steps small near singular poses (the 6x5 Jacobian is never full rank)
    for _ in range(iterations):
        scene.pose(q)
        position_error = goal - scene.tip
        orientation_error = np.cross(scene.tip_axis, [0.0, 0.0, -1.0])
        if np.linalg.norm(position_error) < 1e-4 and np.linalg.norm(orientation_error) < 1e-3:
            break
        jacp, jacr = scene.tip_jacobians()
        jacobian = np.vstack([jacp, ORIENTATION_WEIGHT * jacr])
        jacobian[:, -1] = 0.0  # the wrist roll stays put: spinning the fingers about the vertical adds nothing
        error = np.concatenate([position_error, ORIENTATION_WEIGHT * orientation_error])
        step = np.linalg.solve(jacobian.T @ jacobian + damping**2 * np.eye(len(q)), jacobian.T @ error)
        q = np.clip(q + np.clip(step, -0.2, 0.2), scene.lower, scene.upper)
    return q


class ReachExpert:
    """Plans fingertip waypoints for a placement and turns them into joint targets, one control
    step at a time. `scene` is the expert's own copy (its poses are scratch work)."""

    def __init__(self, scene: Scene, placement: Placement, start: np.ndarray, dt: float):
        self.scene = scene
        scene.place(placement)
        target = placement.cubes[placement.target]
        top = 2 * CUBE_HALF
        self.waypoints = [
            np.array([target[0], target[1], APPROACH_HEIGHT]),
            np.array([target[0], target[1], top - TOUCH_DEPTH]),
        ]
        self.gripper = float(start[len(ARM_JOINTS)]) if len(start) > len(ARM_JOINTS) else None
        self.q = np.asarray(start, dtype=np.float64)[: len(ARM_JOINTS)].copy()
        scene.pose(self.q)
        self.desired = scene.tip
        self.step_length = SPEED * dt

    @property
    def done(self) -> bool:
        return not self.waypoints

    def next_positions(self) -> np.ndarray:
        """Joint targets (arm + gripper) for one control step later."""
        if self.waypoints:
            offset = self.waypoints[0] - self.desired
            distance = float(np.linalg.norm(offset))
            if distance <= self.step_length:
                self.desired = self.waypoints.pop(0)
            else:
                self.desired = self.desired + offset / distance * self.step_length
        solution = solve_ik(self.scene, self.q, self.desired)
        self.q = self.q + np.clip(solution - self.q, -MAX_JOINT_STEP, MAX_JOINT_STEP)
        return self.q if self.gripper is None else np.append(self.q, self.gripper)

    def plan(self, steps: int) -> np.ndarray:
        """The next `steps` joint targets (consumes them)."""
        return np.stack([self.next_positions() for _ in range(steps)])
