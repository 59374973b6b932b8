"""ROS plumbing that every node and tool of the suite shares (the policy node, the simulated arm,
the episode runner, the fuzzer, the benchmarks): QoS profiles, the trajectory message, stamps in
seconds, spinning until a signal. No torch and no MuJoCo: a driver that imports this starts fast."""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from builtin_interfaces.msg import Duration
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from evo1_policy.stamps import seconds, stamp_seconds

from .safety import finite_difference_velocities

# The instruction is latched: a node that starts later still gets the last one.
INSTRUCTION_QOS = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)
# joint_trajectory_controller subscribes reliably: a best-effort publisher would not match.
COMMAND_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def trajectory_message(names: list[str], points: np.ndarray, start: np.ndarray, times: np.ndarray) -> JointTrajectory:
    """Points at `times` (seconds from the message's start, increasing), with finite-difference
    velocities from `start` that end at rest; `names` may leave out trailing columns (a gripper
    commanded on its own topic). Unstamped."""
    columns = len(names)
    velocities = finite_difference_velocities(points, start, times)
    msg = JointTrajectory(joint_names=list(names))
    for position, velocity, offset in zip(points, velocities, times, strict=True):
        nanoseconds = round(float(offset) * 1e9)
        msg.points.append(
            JointTrajectoryPoint(
                positions=position[:columns].tolist(),
                velocities=velocity[:columns].tolist(),
                time_from_start=Duration(sec=nanoseconds // 10**9, nanosec=nanoseconds % 10**9),
            )
        )
    return msg


def chunk_message(chunk: np.ndarray, stamp: float, instruction: str, names: list[str], time_step: float) -> Any:
    """An ActionChunk of `chunk` (horizon x dims, non-finite values as 0), stamped with the oldest
    input it was computed from."""
    from evo1_msgs.msg import ActionChunk

    msg = ActionChunk()
    msg.header.stamp.sec = int(stamp)
    msg.header.stamp.nanosec = int((stamp % 1) * 1e9)
    msg.instruction = instruction
    msg.joint_names = names
    msg.horizon, msg.action_dim = int(chunk.shape[0]), int(chunk.shape[1])
    msg.time_step = time_step
    msg.data = np.nan_to_num(chunk, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32).ravel().tolist()
    return msg


def isolate_domain() -> int:
    """A DDS domain of this run's own unless ROS_DOMAIN_ID is set: an evaluation must not hear
    (or command) another simulator or policy node on the same machine or network."""
    if not os.environ.get("ROS_DOMAIN_ID"):
        os.environ["ROS_DOMAIN_ID"] = str(150 + os.getpid() % 80)
    return int(os.environ["ROS_DOMAIN_ID"])


def follow_trajectory(
    follower: Any, msg: JointTrajectory, ros_now: float, on_receipt: bool = False
) -> tuple[str, float, np.ndarray]:
    """Hand a JointTrajectory to a TrajectoryFollower (follower.py) as joint_trajectory_controller
    takes it: a stamped one starts at its stamp, an unstamped one on arrival (`ros_now`; step the
    follower with the ROS clock too); a controller that ignores stamps (`on_receipt`) starts every
    one on arrival. Returns '' or why
    the controller would refuse it, the ROS time the trajectory takes effect, and where the arm
    is then, measured (what an audit must judge the command against)."""
    # The follower runs on the ROS clock, the stamps' own: mapping each stamp onto another clock
    # would shift trajectories against each other by the jitter of reading two clocks.
    start = ros_now if on_receipt else (stamp_seconds(msg) or ros_now)
    points = [(seconds(p.time_from_start), np.array(p.positions), np.array(p.velocities)) for p in msg.points]
    problem = follower.command(list(msg.joint_names), points, start)
    return problem, start, follower.measured(start)[0]


def spin_until_signal(
    nodes: list[Any],
    context: Any = None,
    duration: float | None = None,
    until: Callable[[], bool] | None = None,
    autostart: Sequence[Any] = (),
) -> None:
    """Spin until SIGINT/SIGTERM (or `duration` seconds, or `until()`), then hold and shut every
    node down cleanly. The lifecycle nodes in `autostart` are configured and activated first."""
    stop = threading.Event()
    deadline = time.monotonic() + duration if duration else math.inf
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    executor = SingleThreadedExecutor(context=context)
    for node in nodes:
        executor.add_node(node)
    try:
        for node in autostart:
            if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                node.trigger_activate()
        while not stop.is_set() and time.monotonic() < deadline and not (until and until()):
            executor.spin_once(timeout_sec=0.05)
    except ExternalShutdownException:
        pass
    finally:
        for node in nodes:
            if hasattr(node, "shutdown_cleanly"):
                node.shutdown_cleanly()
        executor.shutdown(timeout_sec=1.0)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
