"""A simulated arm driver for running the suite without hardware.

It behaves like a ros2_control arm with joint_trajectory_controller: it follows
trajectory_msgs/JointTrajectory (cubic interpolation between points from positions and
velocities, a new trajectory replaces the active one from the current state, joint limits),
and publishes sensor_msgs/JointState and one camera image per configured camera at 30 Hz.
The picture is a top view of a planar arm over a table with coloured blocks, drawn with OpenCV.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from trajectory_msgs.msg import JointTrajectory

from .arm_config import ArmConfig
from .node import COMMAND_QOS


@dataclass
class _Segment:
    t0: float
    t1: float
    p0: np.ndarray
    v0: np.ndarray
    p1: np.ndarray
    v1: np.ndarray


class TrajectoryFollower:
    """Joint-space trajectory tracking as joint_trajectory_controller does it (no dynamics)."""

    def __init__(self, names: list[str], lower: list[float], upper: list[float], start: np.ndarray):
        self.names = list(names)
        self.lower, self.upper = np.asarray(lower, float), np.asarray(upper, float)
        self.position = np.clip(np.asarray(start, float), self.lower, self.upper)
        self.velocity = np.zeros_like(self.position)
        self.segments: list[_Segment] = []
        self.rejected = 0

    def command(self, names: list[str], points: list[tuple[float, np.ndarray, np.ndarray | None]], now: float) -> str:
        """Replace the active trajectory. points: (time_from_start, positions, velocities or None).
        Returns '' or why the trajectory was rejected (as the controller would)."""
        index = {n: i for i, n in enumerate(names)}
        if not points:
            return "empty trajectory"
        unknown = [n for n in names if n not in self.names]
        if unknown:
            return f"unknown joints {unknown}"
        covered = [i for i, n in enumerate(self.names) if n in index]
        times = [t for t, _, _ in points]
        if any(b <= a for a, b in itertools.pairwise(times)) or times[0] < 0:
            return "time_from_start not strictly increasing"
        segments, t_prev = [], now
        p_prev, v_prev = self.sample(now)
        for t, positions, velocities in points:
            p = p_prev.copy()
            v = np.zeros_like(p)
            for j in covered:
                p[j] = positions[index[self.names[j]]]
                v[j] = velocities[index[self.names[j]]] if velocities is not None and len(velocities) else 0.0
            p = np.clip(p, self.lower, self.upper)
            segments.append(_Segment(t_prev, now + t, p_prev, v_prev, p, v))
            t_prev, p_prev, v_prev = now + t, p, v
        self.segments = segments
        return ""

    def sample(self, now: float) -> tuple[np.ndarray, np.ndarray]:
        for seg in self.segments:
            if now <= seg.t1:
                duration = max(seg.t1 - seg.t0, 1e-9)
                s = min(max((now - seg.t0) / duration, 0.0), 1.0)
                h00, h10 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s
                h01, h11 = -2 * s**3 + 3 * s**2, s**3 - s**2
                p = h00 * seg.p0 + h10 * duration * seg.v0 + h01 * seg.p1 + h11 * duration * seg.v1
                dh00, dh10 = 6 * s**2 - 6 * s, 3 * s**2 - 4 * s + 1
                dh01, dh11 = -6 * s**2 + 6 * s, 3 * s**2 - 2 * s
                v = (dh00 * seg.p0 + dh01 * seg.p1) / duration + dh10 * seg.v0 + dh11 * seg.v1
                return np.clip(p, self.lower, self.upper), v
        if self.segments:
            return self.segments[-1].p1.copy(), np.zeros_like(self.position)
        return self.position.copy(), np.zeros_like(self.position)

    def step(self, now: float) -> None:
        self.position, self.velocity = self.sample(now)


BLOCK_COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (230, 200, 40)}


class PlanarScene:
    """Top view of a planar arm (revolute joints, equal links) over a table with coloured blocks."""

    def __init__(self, joints: int, size: int = 224, seed: int = 0):
        self.size = size
        self.link = 0.8 / max(joints, 1)
        rng = np.random.default_rng(seed)
        self.blocks = {name: rng.uniform([-0.6, 0.2], [0.6, 0.8]) for name in BLOCK_COLORS}

    def tip(self, angles: np.ndarray) -> np.ndarray:
        return self.points(angles)[-1]

    def points(self, angles: np.ndarray) -> np.ndarray:
        heading, xy, pts = math.pi / 2, np.zeros(2), [np.zeros(2)]
        for angle in angles:
            heading += angle
            xy = xy + self.link * np.array([math.cos(heading), math.sin(heading)])
            pts.append(xy)
        return np.array(pts)

    def render(self, angles: np.ndarray, gripper: float | None = None) -> np.ndarray:
        s = self.size
        image = np.full((s, s, 3), (205, 190, 160), np.uint8)

        def px(xy: np.ndarray) -> tuple[int, int]:
            return int((xy[0] + 1) / 2 * s), int((1 - (xy[1] + 0.1) / 1.1) * s)

        for name, xy in self.blocks.items():
            cx, cy = px(xy)
            half = s // 28
            cv2.rectangle(image, (cx - half, cy - half), (cx + half, cy + half), BLOCK_COLORS[name], -1)
        pts = [px(p) for p in self.points(angles)]
        for a, b in itertools.pairwise(pts):
            cv2.line(image, a, b, (60, 60, 60), max(2, s // 50))
        radius = max(3, s // 40) + (0 if gripper is None else int(gripper * 3))
        cv2.circle(image, pts[-1], radius, (20, 20, 20), -1)
        return image


class SimArmNode(Node):
    def __init__(
        self, config: ArmConfig, node_name: str = "evo1_sim_arm", rate_hz: float = 30.0, seed: int = 0, **kwargs: Any
    ):
        super().__init__(node_name, **kwargs)
        self.config = config
        names = config.action_names
        start = np.clip(np.zeros(len(names)), config.lower, config.upper)
        self.follower = TrajectoryFollower(names, config.lower, config.upper, start)
        self.scene = PlanarScene(len(config.joints.names), seed=seed)
        self.joint_pub = self.create_publisher(JointState, config.topics.joint_states, qos_profile_sensor_data)
        self.image_pubs = [self.create_publisher(Image, t, qos_profile_sensor_data) for t in config.cameras.topics]
        self.create_subscription(JointTrajectory, config.topics.trajectory, self._on_trajectory, COMMAND_QOS)
        self.create_timer(1.0 / rate_hz, self._tick)
        self.trajectories = 0
        self.cameras_enabled = True  # False: stop publishing images (tests of the camera watchdog)
        self.joints_enabled = True  # False: stop publishing joint states (tests of that watchdog)
        self.last_joint_time = 0.0
        self.last_image_time = 0.0

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        points = [
            (p.time_from_start.sec + p.time_from_start.nanosec * 1e-9, np.array(p.positions), np.array(p.velocities))
            for p in msg.points
        ]
        problem = self.follower.command(list(msg.joint_names), points, time.monotonic())
        if problem:
            self.get_logger().warning(f"trajectory rejected: {problem}")
        else:
            self.trajectories += 1

    def _tick(self) -> None:
        now = time.monotonic()
        self.follower.step(now)
        stamp = self.get_clock().now().to_msg()
        follower = self.follower
        state = JointState(
            name=follower.names, position=follower.position.tolist(), velocity=follower.velocity.tolist()
        )
        state.header.stamp = stamp
        if self.joints_enabled:
            self.joint_pub.publish(state)
            self.last_joint_time = time.monotonic()
        if not self.cameras_enabled:
            return
        arm = self.follower.position[: len(self.config.joints.names)]
        gripper = self.follower.position[-1] if self.config.gripper.name else None
        frame = self.scene.render(arm, gripper)
        for name, pub in zip(self.config.cameras.names, self.image_pubs, strict=True):
            msg = Image(height=frame.shape[0], width=frame.shape[1], encoding="rgb8", step=frame.shape[1] * 3)
            msg.header.stamp, msg.header.frame_id = stamp, name
            msg.data = frame.tobytes()
            pub.publish(msg)
        self.last_image_time = time.monotonic()


def main(args: list[str] | None = None) -> int:
    import argparse

    from .paths import config_path

    parser = argparse.ArgumentParser(description="Simulated arm for the Evo-1 suite")
    parser.add_argument("--arm-config", default="sim_arm")
    known, ros_args = parser.parse_known_args(args)
    config = ArmConfig.from_yaml(config_path(known.arm_config))
    with rclpy.init(args=ros_args):
        node = SimArmNode(config)
        with contextlib.suppress(KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
            rclpy.spin(node)
    return 0
