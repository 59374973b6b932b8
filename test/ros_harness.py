"""Helpers for tests that run the policy node in its own process and talk to it over DDS."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from conftest import REPO
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from evo1_bringup.arm_config import ArmConfig
from evo1_bringup.node import COMMAND_QOS, INSTRUCTION_QOS
from evo1_msgs.msg import ActionChunk, PolicyStatus

SIM_YAML = REPO / "config" / "sim_arm.yaml"
NODE_EXECUTABLE = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "evo1_policy_node"


def start_node(env: dict[str, str], yaml: Path = SIM_YAML, **overrides: Any) -> subprocess.Popen[str]:
    args = [str(NODE_EXECUTABLE), "--ros-args", "--params-file", str(yaml)]
    if "model__preset" in overrides and "model__checkpoint" not in overrides:
        overrides["model__checkpoint"] = "''"  # the untrained preset, not the arm config's checkpoint
    for name, value in overrides.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        args += ["-p", f"{name.replace('__', '.')}:={text}"]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop_node(process: subprocess.Popen[str], timeout: float = 10.0) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.stdout.read() if process.stdout else ""


@dataclass
class Received:
    trajectories: list[tuple[float, JointTrajectory]] = field(default_factory=list)
    statuses: list[tuple[float, PolicyStatus]] = field(default_factory=list)
    chunks: list[tuple[float, ActionChunk]] = field(default_factory=list)


class Recorder(Node):
    """Records what the policy node publishes; publishes instructions like `evo1 instruct`."""

    def __init__(self, config: ArmConfig, node_namespace: str = "evo1_policy_node", **kwargs: Any):
        super().__init__("test_recorder", **kwargs)
        self.received = Received()
        t = config.topics
        self.create_subscription(
            JointTrajectory,
            t.trajectory,
            lambda m: self.received.trajectories.append((time.monotonic(), m)),
            COMMAND_QOS,
        )
        self.create_subscription(
            PolicyStatus, f"{node_namespace}/status", lambda m: self.received.statuses.append((time.monotonic(), m)), 10
        )
        self.create_subscription(
            ActionChunk,
            f"{node_namespace}/action_chunk",
            lambda m: self.received.chunks.append((time.monotonic(), m)),
            10,
        )
        self.instruction_pub = self.create_publisher(String, t.instruction, INSTRUCTION_QOS)

    def instruct(self, text: str) -> None:
        self.instruction_pub.publish(String(data=text))

    def last_status(self) -> PolicyStatus | None:
        return self.received.statuses[-1][1] if self.received.statuses else None


def spin_for(context: Any, nodes: list[Node], seconds: float, until: Callable[[], bool] | None = None) -> bool:
    """Spin the test's nodes for up to `seconds`; stop early when `until()` is true. Returns until()'s last value."""
    executor = SingleThreadedExecutor(context=context)
    for node in nodes:
        executor.add_node(node)
    deadline = time.monotonic() + seconds
    done = False
    try:
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.02)
            if until is not None and until():
                done = True
                break
    finally:
        for node in nodes:
            executor.remove_node(node)
        executor.shutdown(timeout_sec=1.0)
    return done


def trajectory_arrays(msg: JointTrajectory) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    times = np.array([p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points])
    positions = np.array([list(p.positions) for p in msg.points])
    velocities = np.array([list(p.velocities) for p in msg.points])
    return times, positions, velocities


def assert_safe_trajectories(messages: list[JointTrajectory], config: ArmConfig) -> int:
    """Every point of every message within limits and the per-step velocity limit; returns points checked."""
    lower = np.array(config.lower)[: len(config.trajectory_names)]
    upper = np.array(config.upper)[: len(config.trajectory_names)]
    max_step = np.array(config.max_velocity)[: len(config.trajectory_names)] / config.control.rate_hz
    eps = 1e-9
    checked, previous_first = 0, None
    for msg in messages:
        assert list(msg.joint_names) == config.trajectory_names
        times, positions, velocities = trajectory_arrays(msg)
        assert len(times) >= 1
        assert np.all(np.diff(times) > 0), "time_from_start must strictly increase"
        assert times[0] > 0
        assert np.all(velocities[-1] == 0), "the last point must be at rest"
        assert np.all(positions >= lower - eps) and np.all(positions <= upper + eps), "position beyond a joint limit"
        steps = np.abs(np.diff(positions, axis=0))
        assert np.all(steps <= max_step + eps), f"per-step change {steps.max():.4f} beyond the velocity limit"
        assert np.all(np.abs(velocities) <= max_step * config.control.rate_hz + 1e-6)
        if previous_first is not None:
            assert np.all(np.abs(positions[0] - previous_first) <= max_step + eps), "jump between messages"
        previous_first = positions[0]
        checked += len(times)
    return checked
