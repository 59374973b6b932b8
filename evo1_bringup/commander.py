"""What the policy node tells the arm, and where the arm is when that takes effect.

Two things are ever published on the trajectory topic: a path (from where the arm is at the
message's start time, clamped by safety.safe_path) or a hold (one point at rest, reached by
decelerating from the running trajectory, safety.hold_point). The commander keeps the last one
(`Commanded`: the controller's cubic through its points), so the next message starts where the
arm really is on it; after a hold, only a joint state measured after the hold ended says where
the arm is (docs/safety.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from rclpy.time import Time
from std_msgs.msg import Float64

from .arm_config import ArmConfig
from .inference_worker import Stamped
from .ros_io import trajectory_message
from .safety import OFF_TRAJECTORY, Commanded, Limits, hold_point, off_trajectory, receipt_times, safe_path


class ArmCommander:
    def __init__(self) -> None:
        self.commanded: Commanded | None = None  # the last published trajectory (motion or hold)
        self.holding = False
        self.published = 0
        self.config: ArmConfig | None = None

    def attach(
        self,
        config: ArmConfig,
        limits: Limits,
        dt: float,
        trajectory_pub: Any,
        gripper_pub: Any,
        logger: Any,
        clock: Callable[[], float],
    ) -> None:
        """The configured arm, its publishers and the node's ROS clock (each configure; what was
        commanded is kept, so a reconfigured node still waits for a measurement after its last hold)."""
        self.config, self.limits, self.dt = config, limits, dt
        self._trajectory_pub, self._gripper_pub, self._logger = trajectory_pub, gripper_pub, logger
        self._clock = clock
        self.on_receipt = config.control.controller_start == "receipt"

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
        return self.measurement_time(joints) > moment

    def stamped_on_our_clock(self, joints: Stamped) -> bool:
        """Whether a joint state's stamp says when it was measured: set, and agreeing with its
        arrival within joint_state_timeout (not another clock, not a replayed bag)."""
        return joints.stamp > 0 and abs(joints.received_ros - joints.stamp) <= self.config.safety.joint_state_timeout

    def measurement_time(self, joints: Stamped) -> float:
        """When a joint state was measured, on the node's ROS clock (see measured_after)."""
        return joints.stamp if self.stamped_on_our_clock(joints) else joints.received_ros - self.dt

    def off_trajectory(self, joints: Stamped | None, now: float) -> str:
        """'' or why the measured arm is not where the running trajectory has it (arm joints only:
        a gripper's units differ and it may close on an object). Nothing to compare while holding,
        for a reading measured before the trajectory took effect, or for one whose stamp does not
        say when it was measured (a moving arm's reading is only comparable at its own moment).
        Compared twice: at the reading's moment, and at `now`, where the next message would start.
        The second catches an arm a hand holds still while the trajectory moves on: between
        readings and control updates the trajectory may travel ~0.1 rad, and the next message would
        start that much beyond the tolerance. It carries the arm's *deviation* on at the measured
        velocity less the trajectory's: an arm that follows keeps its deviation, a held one falls
        behind at the trajectory's speed. Carrying the arm's position on in a straight line instead
        counted the trajectory's own curvature as deviation (0.3 rad in 50 ms at a reversal): 20
        needless holds of an exact arm in 300 s of fuzzing."""
        commanded, n = self.commanded, len(self.config.joints.names)
        if commanded is None or self.holding or joints is None or not self.stamped_on_our_clock(joints):
            return ""
        moment = self.measurement_time(joints)
        if moment < commanded.start_time:
            return ""
        names, tolerance = self.config.joints.names, self.config.safety.tracking_tolerance
        there = commanded.position_at(moment)[:n]
        why = off_trajectory(joints.value[:n], there, names, tolerance)
        if why or joints.velocity is None:
            return why
        start = self._effect_time(now)  # as move() will start it
        vmax = self.limits.max_velocity[:n]
        falling_behind = np.clip(joints.velocity[:n], -vmax, vmax) - commanded.velocity_at(moment)[:n]
        deviation = joints.value[:n] - there + falling_behind * max(start - moment, 0.0)
        planned_start = commanded.position_at(start)[:n]
        why = off_trajectory(planned_start + deviation, planned_start, names, tolerance)
        return why and f"{why} where the next message would start"

    def move(self, now: float, start: np.ndarray, times: np.ndarray, targets: np.ndarray) -> bool:
        """The planned targets from `start`, clamped to the limits; False in dry run (nothing sent:
        whatever held before still holds). A controller that starts on receipt gets the first point
        within reach in the interval less control.receipt_jitter."""
        if self.config.safety.dry_run:
            return False
        # on the running trajectory the arm moves as its cubic says; after a hold it is at rest
        running = self.commanded is not None and not self.holding
        reach = times
        if self.on_receipt:  # the message starts when it arrives: plan it as of the last moment
            now, start, times, targets = self._as_of_now(now, start, times, targets, running)
            if len(times) == 0:
                return False
            reach = receipt_times(times, self.config.control.receipt_jitter)
        points = safe_path(targets, start, reach, self.limits)
        velocity = self.commanded.velocity_at(now) if running else np.zeros_like(start)
        self.holding = False
        self._publish(now, start, times, points, velocity)
        return True

    def _effect_time(self, now: float) -> float:
        """When a message published for `now` takes effect: at its stamp for a controller that
        honours the stamp; on receipt, the clock's present (the node may have stalled since `now`)."""
        return max(self._clock(), now) if self.on_receipt else now

    def _as_of_now(
        self, now: float, start: np.ndarray, times: np.ndarray, targets: np.ndarray, running: bool
    ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
        """A plan made at `now`, re-timed to the clock's present (the node may have been stalled
        since): points whose time has passed are dropped, the start is where the running
        trajectory has the arm now (after a hold the arm rests where it was measured)."""
        present = self._effect_time(now)
        late = present - now
        if late <= 0:
            return now, start, times, targets
        keep = times - late > 0
        start = self.commanded.position_at(present) if running else start
        return present, start, times[keep] - late, targets[keep]

    def hold(self, now: float, why: str) -> None:
        """Stop where the arm is, once: nothing in dry run or before any command. Then nothing
        until the node commands motion again."""
        if self.holding or self.commanded is None or self.config is None:
            return
        self.holding = True
        if self.config.safety.dry_run:
            return
        now = self._effect_time(now)  # stop from where the arm is when the message takes effect
        start = self.commanded.position_at(now)
        point = hold_point(self.commanded, now, self.limits)
        self._publish(now, start, np.array([self.dt]), point[None, :], self.commanded.velocity_at(now))
        self._logger.info(f"holding position: {why}", throttle_duration_sec=2.0)

    def hold_if_off_trajectory(self, now: float, joints: Stamped | None) -> str:
        """Hold where the arm is measured when it is off the running trajectory; the status reason
        (a stable phrase) or ''. The node then restarts from a joint state measured after the hold."""
        why = self.off_trajectory(joints, now)
        if not why:
            return ""
        self.hold_at(now, joints.value, why)
        return OFF_TRAJECTORY

    def hold_at(self, now: float, position: np.ndarray, why: str) -> None:
        """Stop where the arm was measured (it is off the running trajectory, so the trajectory's
        own stopping point would pull it back). Since that reading the controller may have moved it
        toward the trajectory, so the arm is somewhere between the two: the one point at rest is
        timed for the whole distance at the velocity limit, never faster."""
        if self.holding or self.config is None:
            return
        self.holding = True
        if self.config.safety.dry_run or self.commanded is None:
            return
        now = self._effect_time(now)
        point = np.asarray(position, float)  # plausible: within the limits and joint_state_tolerance
        gap = np.abs(point - self.commanded.position_at(now)) / self.limits.max_velocity
        duration = max(self.dt, float(gap.max()))
        self._publish(now, point, np.array([duration]), point[None, :], np.zeros_like(point))
        self._logger.warning(f"holding where the arm is measured: {why}", throttle_duration_sec=2.0)

    def _publish(
        self, now: float, start: np.ndarray, times: np.ndarray, points: np.ndarray, start_velocity: np.ndarray
    ) -> None:
        """start, start_velocity: where the arm is and how it moves when this message takes effect."""
        msg = trajectory_message(self.config.trajectory_names, points, start, times)
        if self.config.control.controller_start == "stamp":
            msg.header.stamp = Time(nanoseconds=round(now * 1e9)).to_msg()
        self._trajectory_pub.publish(msg)
        self.commanded = Commanded(now, np.asarray(start, float), np.asarray(times, float), points, start_velocity)
        if self._gripper_pub is not None:
            self._gripper_pub.publish(Float64(data=float(points[0][-1])))
        self.published += 1
