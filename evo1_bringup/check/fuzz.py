"""`evo1 fuzz-node`: try to make the policy node command an unsafe motion, on any arm config.

The node runs in its own process (as on a robot), in a DDS domain of its own. This process plays
the arm: a kinematic stand-in (follower.py) that follows the node's trajectories like
joint_trajectory_controller, publishes joint states at 100 Hz and a frame per configured camera at
30 Hz, and logs where it really was. Meanwhile, from a seeded schedule, it sends the node bad and
odd inputs on the same topics (every image encoding, malformed sizes, compressed garbage,
shuffled / missing / NaN / 1e9 / out-of-range / jumping / repeated joint states, empty, 10 kB,
emoji and NUL instructions, 1 kHz bursts) and freezes the node's process (SIGSTOP/SIGCONT,
0.1-1.0 s) while the arm moves. At the end every published trajectory is audited against the
arm (audit.py), and every rejected input must be counted under its cause in the status.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64, String
from trajectory_msgs.msg import JointTrajectory

from evo1_msgs.msg import PolicyStatus

from ..arm_config import NODE_NAME, ArmConfig
from ..process import start_policy_node
from ..ros_io import COMMAND_QOS, INSTRUCTION_QOS, follow_trajectory, isolate_domain
from ..safety import OFF_TRAJECTORY
from ..sim.follower import PUSH_SECONDS, TrajectoryFollower
from .audit import audit_commands, audit_gripper
from .bench_node import config_copy

FRAME = (72, 96)  # height, width of the stand-in cameras' frames
FREEZES = (0.1, 0.2, 0.35, 0.6, 1.0)  # seconds the node's process is stopped
LAG_ERROR = 0.1  # the most a lagging stand-in arm trails its controller (units of the joints)


class StandInArm(Node):
    """A kinematic arm for any arm config: follows JointTrajectory like joint_trajectory_controller
    (a stamped one from its stamp), publishes JointState and camera frames, logs its true position."""

    def __init__(self, config: ArmConfig, lag: float = 0.0, max_tracking_error: float = np.inf, **kwargs: Any):
        super().__init__("evo1_stand_in_arm", **kwargs)
        self.config = config
        lower, upper = np.array(config.lower), np.array(config.upper)
        start = np.clip(np.zeros(len(lower)), lower, upper)
        n = len(config.trajectory_names)  # the joints; a gripper on its own topic is not the follower's
        self.follower = TrajectoryFollower(
            config.trajectory_names, config.lower[:n], config.upper[:n], start[:n], lag, max_tracking_error
        )
        self.on_receipt = config.control.controller_start == "receipt"  # a driver that ignores stamps
        self.pushes: list[tuple[float, np.ndarray]] = []  # (ROS time, displacement)
        self.lock = threading.RLock()  # the arm's thread follows and logs; the fuzzer's pushes and reads
        self.gripper = float(start[-1]) if config.gripper.name else 0.0
        self.log: list[tuple[float, np.ndarray]] = []  # (ROS time, every action dim): the arm's own record
        self.gripper_commands: list[tuple[float, float]] = []  # (arrival, value) on the gripper topic
        self.joint_pub = self.create_publisher(JointState, config.topics.joint_states, qos_profile_sensor_data)
        c = config.cameras
        self.cameras = [
            (name, self.create_publisher(CompressedImage if compressed else Image, topic, qos_profile_sensor_data))
            for name, topic, compressed in zip(c.names, c.topics, c.compressed, strict=True)
        ]
        self.create_subscription(JointTrajectory, config.topics.trajectory, self._on_trajectory, COMMAND_QOS)
        if config.gripper.name and config.gripper.output == "topic":
            self.create_subscription(Float64, config.gripper.topic, self._on_gripper, COMMAND_QOS)
        self.rng = np.random.default_rng(0)
        self.create_timer(0.01, self._publish_joints)
        self.create_timer(1 / 30, self._publish_frames)
        self.taken: list[tuple[float, JointTrajectory]] = []  # (when it took effect or was refused, message)
        self.arrivals: list[float] = []  # when each of those arrived
        self.refused: Counter[str] = Counter()

    def now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        with self.lock:
            problem, effect, where = follow_trajectory(self.follower, msg, self.now(), self.on_receipt)
            self.taken.append((effect, msg))
            self.arrivals.append(self.now())
            if problem:
                self.refused[problem] += 1
            else:
                self.log.append((effect, self._with_gripper(where)))  # where the arm is when it takes effect

    def _on_gripper(self, msg: Float64) -> None:
        with self.lock:
            now = self.now()
            self.gripper_commands.append((now, float(msg.data)))
            self.log.append((now, self.positions()))  # where the gripper is when the command arrives
            self.gripper = float(np.clip(msg.data, self.config.gripper.lower_limit, self.config.gripper.upper_limit))

    def push(self, rng: np.random.Generator) -> None:
        """Push one arm joint 0.3-0.5 (its units) toward the middle of its range and hold it there
        for PUSH_SECONDS, as a person or an obstacle would; the arm logs where it was and where it
        is now, at the same moment."""
        with self.lock:
            n = len(self.config.joints.names)
            j = int(rng.integers(n))
            lower, upper = self.config.joints.lower_limits[j], self.config.joints.upper_limits[j]
            offset = np.zeros(len(self.follower.names))
            now = self.now()
            here = self.follower.measured(now)[0][j]
            offset[j] = float(rng.uniform(0.3, 0.5)) * (1.0 if here < (lower + upper) / 2 else -1.0)
            self.log.append((now, self.positions()))
            self.follower.push(offset, now, PUSH_SECONDS)
            self.follower.step(now)
            self.pushes.append((now, offset))
            self.log.append((now, self.positions()))

    def _with_gripper(self, arm: np.ndarray) -> np.ndarray:
        extra = [self.gripper] if len(arm) < len(self.config.action_names) else []
        return np.concatenate([arm, extra])

    def positions(self) -> np.ndarray:
        """Every action dim (arm joints, then a gripper commanded on its own topic), now: a joint
        state sent between two ticks says where the arm is when it is sent, as a driver's does."""
        with self.lock:
            return self._with_gripper(self.follower.measured(self.now())[0])

    def _publish_joints(self) -> None:
        with self.lock:
            now = self.get_clock().now()
            self.follower.step(now.nanoseconds * 1e-9)
            self.log.append((now.nanoseconds * 1e-9, self.positions()))
            names, velocity = self.config.action_names, np.zeros(len(self.config.action_names))
            velocity[: len(self.follower.velocity)] = self.follower.velocity  # a gripper on its own topic: 0
            msg = JointState(name=names, position=self.positions().tolist(), velocity=velocity.tolist())
            msg.header.stamp = now.to_msg()
            self.joint_pub.publish(msg)

    def _publish_frames(self) -> None:
        frame = self.rng.integers(0, 256, (*FRAME, 3), dtype=np.uint8)
        stamp = self.get_clock().now().to_msg()
        for name, publisher in self.cameras:
            if publisher.msg_type is CompressedImage:
                msg = CompressedImage(format="jpeg", data=cv2.imencode(".jpg", frame)[1].tobytes())
            else:
                msg = Image(height=FRAME[0], width=FRAME[1], encoding="rgb8", step=FRAME[1] * 3, data=frame.tobytes())
            msg.header.stamp, msg.header.frame_id = stamp, name
            publisher.publish(msg)


class Fuzzer(Node):
    """Sends the node bad and odd inputs on its own topics, and records what the node says."""

    def __init__(self, config: ArmConfig, arm: StandInArm, seed: int, **kwargs: Any):
        super().__init__("evo1_fuzzer", **kwargs)
        self.config, self.arm = config, arm
        self.rng = np.random.default_rng(seed)
        self.joints = self.create_publisher(JointState, config.topics.joint_states, qos_profile_sensor_data)
        self.instructions = self.create_publisher(String, config.topics.instruction, INSTRUCTION_QOS)
        camera, topic, compressed = config.cameras.names[0], config.cameras.topics[0], config.cameras.compressed[0]
        self.camera, self.compressed = camera, compressed
        self.images = self.create_publisher(CompressedImage if compressed else Image, topic, qos_profile_sensor_data)
        self.statuses: list[PolicyStatus] = []
        self.create_subscription(PolicyStatus, f"{NODE_NAME}/status", self.statuses.append, 10)
        self.sent: Counter[str] = Counter()  # fuzz cases sent, by kind
        self.expected: set[str] = set()  # reject causes the node must report

    def _send(self, case: str, publisher: Any, msg: Any, cause: str = "") -> None:
        publisher.publish(msg)
        time.sleep(0.01)  # sensor-data topics keep the last 5: a faster volley would drop its own cases
        self.sent[case] += 1
        if cause:
            self.expected.add(cause)

    def instruct(self, text: str) -> None:
        self.instructions.publish(String(data=text))

    def images_case(self) -> None:
        camera = f"camera '{self.camera}'"
        if self.compressed:
            garbage = self.rng.integers(0, 256, 600, dtype=np.uint8).tobytes()
            self._send("jpeg garbage", self.images, CompressedImage(format="jpeg", data=garbage),
                       f"{camera}: undecodable image")  # fmt: skip
            self._send(
                "tiff", self.images, CompressedImage(format="tiff", data=garbage), f"{camera}: unsupported format"
            )
            self._send("empty jpeg", self.images, CompressedImage(format="jpeg"), f"{camera}: empty image")
            return
        height, width = FRAME
        for encoding, channels in (("bgr8", 3), ("mono8", 1), ("8UC1", 1), ("8UC3", 3), ("rgba8", 4), ("bgra8", 4)):
            data = self.rng.integers(0, 256, height * width * channels, dtype=np.uint8).tobytes()
            image = Image(height=height, width=width, encoding=encoding, step=width * channels, data=data)
            self._send(f"{encoding} image", self.images, image)
        self._send("yuv422", self.images, Image(height=4, width=4, encoding="yuv422", step=8, data=bytes(32)),
                   f"{camera}: unsupported encoding")  # fmt: skip
        self._send("short data", self.images, Image(height=height, width=width, encoding="rgb8", step=width * 3,
                   data=bytes(100)), f"{camera}: image size mismatch")  # fmt: skip
        self._send("claims 100000x100000", self.images, Image(height=100000, width=100000, encoding="rgb8",
                   step=300000, data=bytes(30)), f"{camera}: image size mismatch")  # fmt: skip
        self._send("zero width", self.images, Image(height=4, width=0, encoding="rgb8"), f"{camera}: empty image")

    def joint_states_case(self) -> None:
        names, arm = list(self.config.action_names), self.arm.positions()
        lower, upper = np.array(self.config.lower), np.array(self.config.upper)
        order = self.rng.permutation(len(names))
        shuffled = JointState(name=[names[i] for i in order] + ["extra_joint"], position=[*arm[order], 0.0])
        self._send("shuffled + extra joint", self.joints, shuffled)
        self._send("missing joint", self.joints, JointState(name=names[1:], position=arm[1:].tolist()),
                   "joint_states lacks joints")  # fmt: skip
        self._send("repeated name", self.joints, JointState(name=[*names, names[0]], position=[*arm, arm[0]]),
                   "joint_states repeats joint names")  # fmt: skip
        self._send("length mismatch", self.joints, JointState(name=names, position=arm[:-1].tolist()),
                   "malformed joint_states")  # fmt: skip
        j = int(self.rng.integers(len(names)))
        for case, value, cause in (
            ("NaN", float("nan"), "joint_states has NaN/inf positions"),
            ("1e9", 1e9, "joint_states beyond the joint limits"),
            ("beyond a limit", upper[j] + 0.3, "joint_states beyond the joint limits"),
            ("jump within the limits", lower[j] if arm[j] > (lower[j] + upper[j]) / 2 else upper[j], ""),
        ):
            positions = arm.copy()
            positions[j] = value
            self._send(case, self.joints, JointState(name=names, position=positions.tolist()), cause)
        if upper[j] - lower[j] > 2 * self.config.safety.joint_state_jump + 0.2:
            self.expected.add("joint_states outlier")

    def instructions_case(self) -> None:
        for case, text, cause in (
            ("empty", "  ", "empty instruction"),
            ("10 kB", "put the red cube in the bowl " * 350, "instruction too long"),
            ("2,000 emoji", "\U0001f916" * 2000, "instruction too long"),
            ("NUL (ROS 2 cuts it)", "touch the red cube\x00 and then the blue one", ""),
            ("unicode", "berühre den roten Würfel, s'il vous plaît 🤖", ""),
        ):
            self._send(f"instruction: {case}", self.instructions, String(data=text), cause)

    def burst(self, executor: SingleThreadedExecutor, seconds: float = 0.3) -> None:
        """Joint states at about 1 kHz (the arm's own values) for `seconds`."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            msg = JointState(name=list(self.config.action_names), position=self.arm.positions().tolist())
            self.joints.publish(msg)
            self.sent["1 kHz burst"] += 1
            executor.spin_once(timeout_sec=0.0)
            time.sleep(0.001)


def _spin(executor: SingleThreadedExecutor, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        executor.spin_once(timeout_sec=0.005)


def _wait_until_commanding(fuzzer: Fuzzer, executor: SingleThreadedExecutor, process: Any, log: Path) -> None:
    """Instruct the node and wait (at most 180 s) until its status says it commands."""
    fuzzer.instruct("touch the red cube")
    deadline = time.monotonic() + 180
    while not any(s.commanding for s in fuzzer.statuses) and time.monotonic() < deadline:
        _spin(executor, 0.2)
        if process.poll() is not None:
            raise RuntimeError(f"the policy node exited during start-up:\n{log.read_text()[-2000:]}")
    if not any(s.commanding for s in fuzzer.statuses):
        reason = fuzzer.statuses[-1].reason if fuzzer.statuses else "no status"
        raise RuntimeError(f"the policy node never commanded within 180 s ({reason})")


def _fuzz_rounds(
    fuzzer: Fuzzer, executor: SingleThreadedExecutor, process: Any, duration: float, pushes: bool
) -> list[float]:
    """The schedule: bad images, bad joint states, bad and good instructions, a burst, a freeze of
    the node's process (SIGSTOP), and with `pushes` a shove of the arm, in turn, with a random
    pause after each. Returns the freezes."""
    freezes: list[float] = []
    end = time.monotonic() + duration
    round_ = 0
    while time.monotonic() < end and process.poll() is None:
        kind = round_ % (6 if pushes else 5)
        if kind == 0:
            fuzzer.images_case()
        elif kind == 1:
            fuzzer.joint_states_case()
        elif kind == 2:
            fuzzer.instructions_case()
            fuzzer.instruct(["touch the red cube", "touch the blue cube"][round_ % 2])
        elif kind == 3:
            fuzzer.burst(executor)
        elif kind == 5:
            fuzzer.arm.push(fuzzer.rng)
        else:
            pause = FREEZES[len(freezes) % len(FREEZES)]
            os.kill(process.pid, signal.SIGSTOP)
            _spin(executor, pause)
            os.kill(process.pid, signal.SIGCONT)
            freezes.append(pause)
        _spin(executor, float(fuzzer.rng.uniform(0.4, 1.2)))
        round_ += 1
    return freezes


def _audits(
    config: ArmConfig, arm: StandInArm, tolerance: float, unknowable: list[tuple[float, float]]
) -> tuple[Any, Any]:
    """Every trajectory and gripper command judged against the stand-in arm's own record (where it
    took each one), within the arm's stated tracking error, except the first points of those that
    took effect before the node could know of a push."""
    names, arm_log, gripper_commands = config.trajectory_names, arm.log, arm.gripper_commands
    audit = audit_commands(
        arm.taken, arm_log, names, config.lower, config.upper, config.max_velocity, tolerance, unknowable, arm.arrivals
    )
    g = config.gripper
    gripper = audit_gripper(
        gripper_commands, arm_log, len(config.joints.names), g.lower_limit, g.upper_limit, g.max_velocity,
        1.0 / config.control.rate_hz,
    )  # fmt: skip
    return audit, gripper


def _problems(
    audit: Any,
    gripper: Any,
    returncode: int | None,
    alive: bool,
    node_log: str,
    expected: set[str],
    causes: dict[str, str],
    statuses: list,
    refused: dict,
) -> list[str]:
    """What the run found wrong: commands beyond the limits, a dead or crashing node, rejected
    inputs the status does not name, holds without a reason, trajectories the arm refused."""
    silent_holds = sum(1 for s in statuses if s.lifecycle_label == "active" and not s.commanding and not s.reason)
    problems = list(audit.violations[:20]) + list(gripper.violations[:10])
    if not alive:
        problems.append(f"the node died (exit code {returncode})")
    if returncode not in (0, None):
        problems.append(f"the node exited with {returncode} on SIGTERM")
    if "Traceback" in node_log:
        problems.append("the node's log has a traceback: " + node_log[node_log.index("Traceback") :][:500])
    missing = sorted(expected - set(causes))
    if missing:
        problems.append(f"rejected inputs without their cause in the status: {missing}")
    if silent_holds:
        problems.append(f"{silent_holds} statuses not commanding without a reason")
    if refused:
        problems.append(f"the arm refused trajectories: {refused}")
    return problems


def fuzz_node(
    arm_config: str = "sim_arm",
    checkpoint: str = "",
    duration: float = 60.0,
    seed: int = 0,
    controller: str = "",
    lag: float = 0.0,
    pushes: bool = False,
) -> dict:
    """Run the fuzz schedule for `duration` seconds; return the figures and verdicts. `controller`
    (stamp, receipt; default the config's) says when the stand-in arm starts a trajectory; `lag`
    (s) makes it trail its controller (first order, at most LAG_ERROR behind); `pushes` shoves it."""
    isolate_domain()
    with tempfile.TemporaryDirectory() as tmp:
        arm_yaml = config_copy(arm_config, Path(tmp), **_overrides(checkpoint, controller))
        config = ArmConfig.from_yaml(arm_yaml)
        # How far a lagging or hand-held arm may be from where the node can know it is: the
        # tracking tolerance the node holds on (within it, the node plans from its trajectory).
        tolerance = config.safety.tracking_tolerance if lag > 0 or pushes else 0.0
        log = Path(tmp) / "node.log"
        process = start_policy_node(arm_yaml, output=log)
        try:
            with rclpy.init():
                run = _fuzz_session(config, process, log, seed, duration, lag, pushes, tolerance)
        finally:
            _stop_node(process)
        node_log = log.read_text()
    statuses, audit, gripper = run["statuses"], run["audit"], run["gripper"]
    causes = dict(zip(statuses[-1].reject_causes, statuses[-1].reject_details, strict=True))
    problems = _problems(
        audit, gripper, process.returncode, run["alive"], node_log, run["expected"], causes, statuses, run["refused"]
    )
    return {
        "arm_config": arm_config,
        "checkpoint": checkpoint or "evo1-tiny (untrained)",
        "seconds": duration,
        "seed": seed,
        "controller_start": config.control.controller_start,
        "lag_s": lag,
        "tracking_tolerance": tolerance,
        "pushes": run["pushes"],
        "off_trajectory_holds": _entered(OFF_TRAJECTORY, [s.reason for s in statuses]),
        "unjudged_after_push": audit.unknowable,
        "inputs_sent": run["sent"],
        "freezes_s": run["freezes"],
        "trajectories": audit.messages,
        "points": audit.points,
        "violations": len(audit.violations),
        "worst_first_step_of_velocity_limit": round(audit.worst_ratio, 4),
        "gripper_commands": gripper.messages,
        "gripper_violations": len(gripper.violations),
        "worst_gripper_step_of_velocity_limit": round(gripper.worst_ratio, 4),
        "node_alive": run["alive"],
        "reject_causes": causes,
        "reasons": dict(Counter(s.reason for s in statuses)),
        "problems": problems,
    }


def _overrides(checkpoint: str, controller: str) -> dict[str, Any]:
    """The node's parameters for a run: the checkpoint (or the untrained tiny preset) and, when
    given, the controller kind."""
    model: dict[str, Any] = {"model.checkpoint": checkpoint, "model.preset": "" if checkpoint else "evo1-tiny"}
    if not checkpoint:
        model["control.execute_steps"] = 8  # of the tiny preset's 16-step chunks
    if controller:
        model["control.controller_start"] = controller
    return model


def _stop_node(process: Any) -> None:
    """SIGTERM (after SIGCONT, in case a freeze was under way); kill after 10 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGCONT)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def _fuzz_session(
    config: ArmConfig, process: Any, log: Path, seed: int, duration: float, lag: float, pushes: bool, tolerance: float
) -> dict[str, Any]:
    """The stand-in arm and the fuzzer against the running node: wait until it commands, run the
    rounds, audit. What the run found, as a dict (the figures fuzz_node reports)."""
    arm = StandInArm(config, lag, LAG_ERROR)
    fuzzer = Fuzzer(config, arm, seed)
    # The arm runs in a thread of its own, as a driver does: the fuzzer's volleys and bursts
    # must not stall it (a receipt controller would take that as delivery delay).
    arm_executor = SingleThreadedExecutor()
    arm_executor.add_node(arm)
    arm_thread = threading.Thread(target=arm_executor.spin, daemon=True)
    arm_thread.start()
    executor = SingleThreadedExecutor()
    executor.add_node(fuzzer)
    _wait_until_commanding(fuzzer, executor, process, log)
    freezes = _fuzz_rounds(fuzzer, executor, process, duration, pushes)
    _spin(executor, 1.5)  # let the last statuses arrive
    arm_executor.shutdown()
    arm_thread.join(timeout=5)
    alive = process.poll() is None
    executor.shutdown()
    unknowable = [(t, t + config.safety.joint_state_timeout) for t, _ in arm.pushes]
    audit, gripper = _audits(config, arm, tolerance, unknowable)
    run = {"statuses": fuzzer.statuses, "sent": dict(fuzzer.sent), "expected": fuzzer.expected, "alive": alive}
    run.update(refused=dict(arm.refused), freezes=freezes, pushes=len(unknowable), audit=audit, gripper=gripper)
    arm.destroy_node()
    fuzzer.destroy_node()
    return run


def _entered(reason: str, reasons: list[str]) -> int:
    """How many times the status turned to `reason`."""
    return sum(1 for a, b in itertools.pairwise(["", *reasons]) if b == reason != a)


def format_fuzz(result: dict) -> str:
    durations = ", ".join(f"{s:.2f}" for s in sorted(set(result["freezes_s"])))
    lines = [
        f"fuzz-node on {result['arm_config']} ({result['checkpoint']}), {result['seconds']:.0f} s, "
        f"seed {result['seed']}; controller starts at {result['controller_start']}, arm lag {result['lag_s']} s "
        f"(judged within {result['tracking_tolerance']}), {result['pushes']} pushes -> "
        f"{result['off_trajectory_holds']} off-trajectory holds ({result['unjudged_after_push']} first points "
        "not judged: they took effect before the node could know of a push)",
        f"  inputs sent: {sum(result['inputs_sent'].values())} in {len(result['inputs_sent'])} kinds; "
        f"node frozen {len(result['freezes_s'])} times ({durations} s)",
        f"  commands: {result['trajectories']} trajectories, {result['points']} points, "
        f"{result['violations']} beyond the velocity limit relative to the arm "
        f"(largest first step: {result['worst_first_step_of_velocity_limit']:.0%} of the limit)",
        f"  gripper commands on their own topic: {result['gripper_commands']}, {result['gripper_violations']} past "
        f"its limits (largest step from the gripper on arrival: {result['worst_gripper_step_of_velocity_limit']:.0%} "
        "of max_velocity x one period; commands delayed on the way arrive together)",
        f"  node alive: {result['node_alive']}; causes in its status: {len(result['reject_causes'])}",
    ]
    lines += [f"    {cause}: {detail[:100]}" for cause, detail in sorted(result["reject_causes"].items())]
    lines.append("  holds and waits: " + "; ".join(f"{r or 'commanding'} x{n}" for r, n in result["reasons"].items()))
    lines.append("  verdict: " + ("PASS" if not result["problems"] else "FAIL"))
    lines += [f"    {p}" for p in result["problems"]]
    return "\n".join(lines)
