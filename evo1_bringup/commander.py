"""What the policy node tells the arm, and where the arm is when that takes effect.

Two things are ever published on the trajectory topic: a path (from where the arm is at the
message's start time, clamped by safety.safe_path) or a hold (one point at rest, reached by
decelerating from the running trajectory, safety.hold_point). The commander keeps the last one
(`Commanded`: the controller's cubic through its points), so the next message starts where the
arm really is on it; after a hold, only a joint state measured after the hold ended says where
the arm is (docs/safety.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from rclpy.time import Time
from std_msgs.msg import Float64

from .arm_config import ArmConfig
from .inference_worker import Stamped
from .ros_io import trajectory_message
from .safety import Commanded, Limits, hold_point, safe_path


class ArmCommander:
    def __init__(self) -> None:
        self.commanded: Commanded | None = None  # the last published trajectory (motion or hold)
        self.holding = False
        self.published = 0
        self.config: ArmConfig | None = None

    def attach(
        self, config: ArmConfig, limits: Limits, dt: float, trajectory_pub: Any, gripper_pub: Any, logger: Any
    ) -> None:
        """The configured arm and its publishers (each configure; what was commanded is kept, so a
        reconfigured node still waits for a measurement after its last hold)."""
        self.config, self.limits, self.dt = config, limits, dt
        self._trajectory_pub, self._gripper_pub, self._logger = trajectory_pub, gripper_pub, logger

    def start_position(self, now: float, joints: Stamped | None, unconfirmed: bool) -> np.ndarray | None:
        """Where the arm is at `now`, the start of the next message: on the running trajectory (or
        at rest at its end); after a hold, or before any command, at rest wherever a joint state
        measured after the hold ended says. None: no such joint state yet, or the last reading
        jumped and waits for the next to confirm it (the arm may have been moved: a reset, a push)."""
        commanded = self.commanded
        if commanded is not None and not self.holding:
            return commanded.position_at(now)
        if joints is None or unconfirmed:
            return None
        if commanded is not None and not self.measured_after(joints, commanded.end_time):
            return None
        return joints.value.copy()

    def measured_after(self, joints: Stamped, moment: float) -> bool:
        """Whether a joint state was measured after `moment` (node ROS time): a reading can arrive
        after the moment yet be older. Its stamp says when, if it agrees with the arrival (the
        clocks are shared); otherwise (no stamp, another clock, a replayed bag) its arrival, one
        control period later."""
        shared_clock = (
            joints.stamp > 0 and abs(joints.received_ros - joints.stamp) <= self.config.safety.joint_state_timeout
        )
        if shared_clock:
            return joints.stamp > moment
        return joints.received_ros > moment + self.dt

    def move(self, now: float, start: np.ndarray, times: np.ndarray, targets: np.ndarray) -> bool:
        """The planned targets from `start`, clamped to the limits; False in dry run (nothing sent:
        whatever held before still holds)."""
        if self.config.safety.dry_run:
            return False
        points = safe_path(targets, start, times, self.limits)
        # on the running trajectory the arm moves as its cubic says; after a hold it is at rest
        running = self.commanded is not None and not self.holding
        velocity = self.commanded.velocity_at(now) if running else np.zeros_like(start)
        self.holding = False
        self._publish(now, start, times, points, velocity)
        return True

    def hold(self, now: float, why: str) -> None:
        """Stop where the arm is, once: nothing in dry run or before any command. Then nothing
        until the node commands motion again."""
        if self.holding or self.commanded is None or self.config is None:
            return
        self.holding = True
        if self.config.safety.dry_run:
            return
        start = self.commanded.position_at(now)
        point = hold_point(self.commanded, now, self.limits)
        self._publish(now, start, np.array([self.dt]), point[None, :], self.commanded.velocity_at(now))
        self._logger.info(f"holding position: {why}", throttle_duration_sec=2.0)

    def _publish(
        self, now: float, start: np.ndarray, times: np.ndarray, points: np.ndarray, start_velocity: np.ndarray
    ) -> None:
        """start, start_velocity: where the arm is and how it moves when this message takes effect."""
        msg = trajectory_message(self.config.trajectory_names, points, start, times)
        if self.config.control.stamp_trajectories:
            msg.header.stamp = Time(nanoseconds=round(now * 1e9)).to_msg()
        self._trajectory_pub.publish(msg)
        self.commanded = Commanded(now, np.asarray(start, float), np.asarray(times, float), points, start_velocity)
        if self._gripper_pub is not None:
            self._gripper_pub.publish(Float64(data=float(points[0][-1])))
        self.published += 1
