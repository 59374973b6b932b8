"""`evo1 bench-node`: the policy node's own cost, measured from outside over DDS.

The node runs in its own process (as on a robot); this process feeds it cameras and joint
states at fixed rates and reads the node's PolicyStatus: per-update processing time (the
control loop, model excluded), observation-to-trajectory latency, control period, inference
latency; plus the node's memory (RSS) from /proc.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
import yaml
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from evo1_msgs.msg import PolicyStatus

from ..arm_config import NODE_NAME, ArmConfig
from ..paths import config_path
from ..process import start_policy_node
from ..ros_io import COMMAND_QOS, INSTRUCTION_QOS, follow_trajectory, stamp_seconds
from ..sim.follower import TrajectoryFollower


class Feeder(Node):
    """Publishes camera frames (cycling a few pre-made ones) and joint states at fixed rates, and
    records the node's trajectories and status. Its arm follows the trajectories as
    joint_trajectory_controller does (no dynamics) and keeps its own record for audits."""

    def __init__(
        self,
        config: ArmConfig,
        image_shape: tuple[int, int] = (480, 640),
        camera_hz: float = 30.0,
        joint_hz: float = 100.0,
        **kwargs: Any,
    ):
        super().__init__("evo1_feeder", **kwargs)
        self.config = config
        rng = np.random.default_rng(0)
        self.frames = [rng.integers(0, 256, (*image_shape, 3), dtype=np.uint8).tobytes() for _ in range(4)]
        self.shape = image_shape
        self.image_pubs = [self.create_publisher(Image, t, qos_profile_sensor_data) for t in config.cameras.topics]
        self.joint_pub = self.create_publisher(JointState, config.topics.joint_states, qos_profile_sensor_data)
        self.instruction_pub = self.create_publisher(String, config.topics.instruction, INSTRUCTION_QOS)
        self.statuses: list[tuple[float, PolicyStatus]] = []
        self.trajectories: list[tuple[float, JointTrajectory]] = []
        self.create_subscription(PolicyStatus, f"{NODE_NAME}/status", self._on_status, 10)
        self.create_subscription(JointTrajectory, config.topics.trajectory, self._on_trajectory, COMMAND_QOS)
        self.create_timer(1.0 / camera_hz, self._publish_images)
        self.create_timer(1.0 / joint_hz, self._publish_joints)
        self.frame_index = 0
        self.images_sent = 0
        lower, upper = np.array(config.lower), np.array(config.upper)
        middle = (lower + upper) / 2
        names = config.trajectory_names
        self.follower = TrajectoryFollower(names, lower[: len(names)], upper[: len(names)], middle[: len(names)])
        self.gripper = list(middle[len(names) :])  # a gripper on its own topic stays where it is
        self.arm_log: list[tuple[float, np.ndarray]] = []  # (ROS time, positions): the arm's own record

    @property
    def positions(self) -> list[float]:
        return [*self.follower.position.tolist(), *self.gripper]

    def _on_status(self, msg: PolicyStatus) -> None:
        self.statuses.append((time.monotonic(), msg))

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        self.trajectories.append((time.monotonic(), msg))
        problem, effect, where = follow_trajectory(self.follower, msg, self.get_clock().now().nanoseconds * 1e-9)
        if not problem:
            self.arm_log.append((effect, where))

    def _publish_images(self) -> None:
        height, width = self.shape
        stamp = self.get_clock().now().to_msg()
        self.frame_index = (self.frame_index + 1) % len(self.frames)
        for name, pub in zip(self.config.cameras.names, self.image_pubs, strict=True):
            msg = Image(height=height, width=width, encoding="rgb8", step=width * 3)
            msg.header.stamp, msg.header.frame_id = stamp, name
            msg.data = self.frames[self.frame_index]
            pub.publish(msg)
            self.images_sent += 1

    def _publish_joints(self) -> None:
        now = self.get_clock().now()
        self.follower.step(now.nanoseconds * 1e-9)
        self.arm_log.append((now.nanoseconds * 1e-9, self.follower.position.copy()))
        msg = JointState(name=self.config.action_names, position=self.positions)
        msg.header.stamp = now.to_msg()
        self.joint_pub.publish(msg)


def config_copy(arm_config: str, folder: Path, name: str = "", **overrides: Any) -> Path:
    """A copy of an arm YAML (a path or a name in config/) with dotted parameter overrides."""
    path = config_path(arm_config)
    data = yaml.safe_load(path.read_text())
    params = data[NODE_NAME]["ros__parameters"]
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        target = params
        for key in parents:
            target = target.setdefault(key, {})
        target[leaf] = value
    out = folder / f"{name or path.stem}.yaml"
    out.write_text(yaml.safe_dump(data))
    return out


def config_with_cameras(arm_config: str, cameras: int, folder: Path, **overrides: Any) -> Path:
    """A copy of an arm YAML with `cameras` raw-image cameras and extra parameter overrides."""
    names = [f"cam{i}" for i in range(cameras)]
    overrides = {
        "cameras.names": names,
        "cameras.topics": [f"camera/{n}/image_raw" for n in names],
        "cameras.compressed": [False] * cameras,
        **overrides,
    }
    return config_copy(arm_config, folder, f"{config_path(arm_config).stem}_{cameras}cam", **overrides)


def node_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def spin(executor: SingleThreadedExecutor, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        executor.spin_once(timeout_sec=0.01)


def _wait_until_commanding(feeder: Feeder, executor: SingleThreadedExecutor, process: Any) -> None:
    feeder.instruction_pub.publish(String(data="pick up the red cube"))
    deadline = time.monotonic() + 120
    while not any(s.commanding for _, s in feeder.statuses) and time.monotonic() < deadline:
        spin(executor, 0.2)
        if process.poll() is not None:
            raise RuntimeError("the policy node exited during start-up")


def bench_node(
    arm_config: str = "sim_arm",
    checkpoint: str = "",
    cameras: int = 1,
    image_shape: tuple[int, int] = (480, 640),
    duration: float = 20.0,
    warmup: float = 8.0,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        overrides = {"model.checkpoint": checkpoint, "model.preset": ""}
        if not checkpoint:
            overrides = {"model.checkpoint": "", "model.preset": "evo1-tiny"}
        arm_yaml = config_with_cameras(arm_config, cameras, Path(tmp), **overrides)
        config = ArmConfig.from_yaml(arm_yaml)
        env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
        process = start_policy_node(arm_yaml, env=env)
        try:
            with rclpy.init():
                feeder = Feeder(config, image_shape)
                executor = SingleThreadedExecutor()
                executor.add_node(feeder)
                _wait_until_commanding(feeder, executor, process)
                spin(executor, warmup)
                rss_start, started = node_rss_mb(process.pid), time.monotonic()
                spin(executor, duration)
                rss_end = node_rss_mb(process.pid)
                window = [s for t, s in feeder.statuses if t >= started]
                stamps = [stamp_seconds(m) for t, m in feeder.trajectories if t >= started]
                executor.shutdown()
                feeder.destroy_node()
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=10)
    if not window:
        raise RuntimeError("no status from the policy node during the measurement")
    figures = {"arm_config": arm_config, "cameras": cameras, "image": f"{image_shape[1]}x{image_shape[0]}"}
    figures.update(window_figures(window, stamps, config.control.rate_hz, duration))
    return {**figures, "rss_mb_start": rss_start, "rss_mb_end": rss_end}


def window_figures(window: list, stamps: list[float], rate_hz: float, seconds: float) -> dict[str, Any]:
    """The node's figures over one measured window: its statuses and its trajectories' stamps."""
    last = window[-1]
    periods = np.diff(stamps)
    return {
        "seconds": seconds,
        "control_rate_hz": rate_hz,
        "update_ms_p50": last.update_time_p50 * 1e3,
        "update_ms_p95": last.update_time_p95 * 1e3,
        "observation_to_command_ms_p50": last.observation_to_command_p50 * 1e3,
        "observation_to_command_ms_p95": last.observation_to_command_p95 * 1e3,
        "inference_ms_last": last.inference_latency * 1e3,
        "inference_ms_p95": last.inference_latency_p95 * 1e3,
        "control_period_ms_p50": float(np.percentile(periods, 50) * 1e3) if len(periods) else float("nan"),
        "control_period_ms_p99": float(np.percentile(periods, 99) * 1e3) if len(periods) else float("nan"),
        "nominal_period_ms": 1e3 / rate_hz,
        "trajectories": len(stamps),
        "max_planned_steps": max(s.planned_steps for s in window),
        "rejected": {c: int(n) for c, n in zip(last.reject_causes, last.reject_counts, strict=True)},
    }


def format_bench_node(r: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"policy node, {r['arm_config']}, {r['cameras']} camera(s) {r['image']} at 30 Hz, {r['seconds']:.0f} s",
            f"  per update (node's own work, model excluded): p50 {r['update_ms_p50']:.2f} ms  "
            f"p95 {r['update_ms_p95']:.2f} ms",
            f"  observation -> trajectory: p50 {r['observation_to_command_ms_p50']:.1f} ms  "
            f"p95 {r['observation_to_command_ms_p95']:.1f} ms",
            f"  inference: last {r['inference_ms_last']:.1f} ms  p95 {r['inference_ms_p95']:.1f} ms",
            f"  control period: p50 {r['control_period_ms_p50']:.1f} ms  p99 {r['control_period_ms_p99']:.1f} ms  "
            f"(nominal {r['nominal_period_ms']:.1f} ms), {r['trajectories']} trajectories",
            f"  node RSS: {r['rss_mb_start']:.0f} -> {r['rss_mb_end']:.0f} MiB; most planned steps "
            f"{r['max_planned_steps']}; rejected {r['rejected'] or 'nothing'}",
        ]
    )
