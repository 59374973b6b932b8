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
from evo1_bringup.check.audit import Audit, audit_commands, message_start
from evo1_bringup.process import start_policy_node
from evo1_bringup.ros_io import COMMAND_QOS, INSTRUCTION_QOS, seconds
from evo1_bringup.sim.arm import SimArmNode
from evo1_msgs.msg import ActionChunk, PolicyStatus

SIM_YAML = REPO / "config" / "sim_arm.yaml"


def start_node(env: dict[str, str], yaml: Path = SIM_YAML, **overrides: Any) -> subprocess.Popen[str]:
    if "model__preset" in overrides and "model__checkpoint" not in overrides:
        overrides["model__checkpoint"] = "''"  # the untrained preset, not the arm config's checkpoint
    params = {name.replace("__", "."): value for name, value in overrides.items()}
    return start_policy_node(yaml, params, subprocess.PIPE, env)


def node_sim_recorder(ros_env: dict[str, str], nodes_in: Any, **overrides: Any):
    """The policy node in its own process (tiny model unless a checkpoint is given) on the sim
    arm's config, and in the test's process a simulated arm and a recorder."""
    if "model__checkpoint" not in overrides:
        overrides.setdefault("model__preset", "evo1-tiny")
    process = start_node(ros_env, **overrides)
    config = ArmConfig.from_yaml(SIM_YAML)
    return process, nodes_in(SimArmNode, config, node_name="test_sim_arm"), nodes_in(Recorder, config)


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

    def configured(self) -> bool:
        """The node has its subscriptions (its status says inactive or active)."""
        status = self.last_status()
        return status is not None and status.lifecycle_label in ("inactive", "active")


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


def wild_checkpoint(config: ArmConfig, folder: Path) -> str:
    """A tiny checkpoint whose action range is three times the arm's: its outputs fly past the
    limits, so (with a large safety.out_of_range_tolerance) the arm moves at its velocity limit."""
    from evo1_policy.normalize import Normalizer
    from evo1_policy.policy import Evo1Policy

    lower, upper = np.array(config.lower), np.array(config.upper)
    mid, half = (lower + upper) / 2, (upper - lower) / 2
    wild = Normalizer.from_limits(list(mid - 3 * half), list(mid + 3 * half))
    dims = len(config.action_names)
    return str(Evo1Policy.from_preset("evo1-tiny", dims, dims, device="cpu", seed=3, normalizer=wild).save(folder))


def trajectory_arrays(msg: JointTrajectory) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    times = np.array([seconds(p.time_from_start) for p in msg.points])
    positions = np.array([list(p.positions) for p in msg.points])
    velocities = np.array([list(p.velocities) for p in msg.points])
    return times, positions, velocities


def assert_safe_commands(
    recorder: Recorder,
    arm: SimArmNode,
    config: ArmConfig,
    unknowable: list[tuple[float, float]] | None = None,
    tolerance: float = 0.0,
) -> Audit:
    """Every trajectory the recorder heard, audited against where the simulated arm really was
    (evo1_bringup.check.audit); fails with the first violations. Returns the audit. unknowable:
    spans after a push in which no node could know where the arm is; tolerance: how far the arm
    may be from where the node can know it is (see audit_commands)."""
    messages = []
    for _, msg in recorder.received.trajectories:
        assert msg.header.stamp.sec or msg.header.stamp.nanosec, "the audit needs stamped trajectories"
        messages.append((message_start(msg, 0.0), msg))
    names = config.trajectory_names
    audit = audit_commands(
        messages, list(arm.arm_log), names, config.lower, config.upper, config.max_velocity, tolerance, unknowable or []
    )
    assert not audit.violations, f"{audit.summary()}:\n" + "\n".join(audit.violations[:10])
    return audit
