"""Faults that once made the node command a jump, or hide its trouble (issue: safety measured
against the arm). The node runs in its own process (or, to inject a failing model, in this one)
over real DDS; every command is audited against where the simulated arm really was."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from ros_harness import (
    SIM_YAML,
    Recorder,
    assert_safe_commands,
    node_sim_recorder,
    spin_for,
    start_node,
    stop_node,
    wild_checkpoint,
)
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from evo1_bringup.arm_config import ArmConfig
from evo1_bringup.check.audit import message_start
from evo1_bringup.commander import ArmCommander
from evo1_bringup.inference_worker import Stamped
from evo1_bringup.node import PolicyNode, load_policy
from evo1_bringup.safety import OFF_TRAJECTORY, Limits
from evo1_bringup.sim.arm import PUSH_TOPIC, SimArmNode
from evo1_bringup.sim.scene import HOME
from evo1_policy.policy import Evo1Policy

pytestmark = pytest.mark.ros
CONFIG = ArmConfig.from_yaml(SIM_YAML)


def _moving(ros_context, process, sim, recorder) -> None:
    recorder.instruct("touch the red block")
    moving = spin_for(ros_context, [sim, recorder], 60.0, until=lambda: len(recorder.received.trajectories) > 40)
    assert moving, "the node never commanded:\n" + stop_node(process)[-2000:]


def test_freezes_of_the_node_never_command_beyond_the_velocity_limit(
    ros_context, ros_env, nodes_in, tmp_path: Path
) -> None:
    """SIGSTOP/SIGCONT of the node's process for 0.1-1.0 s while the arm moves at its velocity
    limit: the controller goes on executing the last trajectory meanwhile, and the node's next
    message must start from there (on main before this fix: 1.3-6x the velocity limit, backwards)."""
    checkpoint = wild_checkpoint(CONFIG, tmp_path / "wild")
    process, sim, recorder = node_sim_recorder(
        ros_env, nodes_in, model__checkpoint=checkpoint, safety__out_of_range_tolerance=10.0
    )
    try:
        _moving(ros_context, process, sim, recorder)
        resumed = []
        for pause in (0.12, 0.18, 0.3, 0.55, 1.0):
            os.kill(process.pid, signal.SIGSTOP)
            spin_for(ros_context, [sim, recorder], pause)
            os.kill(process.pid, signal.SIGCONT)
            count = len(recorder.received.trajectories)
            more = lambda n=count: len(recorder.received.trajectories) > n + 10  # noqa: E731
            resumed.append(spin_for(ros_context, [sim, recorder], 8.0, until=more))
        alive = process.poll() is None
    finally:
        output = stop_node(process)
    assert alive and all(resumed), f"the node stopped commanding after a freeze ({resumed}):\n{output[-2000:]}"
    audit = assert_safe_commands(recorder, sim, CONFIG)
    assert audit.worst_ratio > 0.9, f"the arm was not moving near its velocity limit: {audit.summary()}"


def _commander(nodes_in, clock) -> tuple[ArmCommander, Limits]:
    """An ArmCommander on CONFIG publishing from a test node, with `clock` as its ROS clock."""
    node = nodes_in(Node, "commander_under_test")
    limits = Limits.of(CONFIG.lower, CONFIG.upper, CONFIG.max_velocity, 1.0 / CONFIG.control.rate_hz)
    commander = ArmCommander()
    publisher = node.create_publisher(JointTrajectory, "commander_under_test/trajectory", 10)
    commander.attach(CONFIG, limits, limits.dt, publisher, None, node.get_logger(), clock)
    return commander, limits


def test_an_arm_held_still_is_caught_where_the_next_message_would_start(nodes_in) -> None:
    """A hand holds the arm still 0.15 rad behind its trajectory, which moves on at 1 rad/s. The
    reading alone is within safety.tracking_tolerance (0.2); where the next message would start,
    80 ms later, the trajectory is 0.23 from the arm: the commander holds. A reading that moves with
    the trajectory, or one without velocities, is judged at its own moment only. (A CI run caught
    the pushed-arm test below starting a message 0.30 from a held arm.)"""
    now = [100.0]
    commander, limits = _commander(nodes_in, lambda: now[0])
    first_joint = np.eye(len(CONFIG.action_names))[0]
    start = HOME[: len(first_joint)].copy()
    times = np.arange(1, 11) * limits.dt
    commander.move(now[0], start, times, start + np.outer(times, first_joint))  # 1 rad/s
    moment, later = 100.2, 100.28
    held = commander.commanded.position_at(moment) - 0.15 * first_joint

    def reading(velocity: np.ndarray | None) -> Stamped:
        return Stamped(held, received=0.0, stamp=moment, received_ros=moment, velocity=velocity)

    assert commander.hold_if_off_trajectory(later, reading(commander.commanded.velocity_at(moment))) == ""
    assert commander.hold_if_off_trajectory(later, reading(None)) == ""
    assert not commander.holding
    assert commander.hold_if_off_trajectory(later, reading(np.zeros(len(held)))) == OFF_TRAJECTORY
    assert commander.holding
    hold = commander.commanded
    np.testing.assert_allclose(hold.points[-1], held)  # held where it was measured


def test_an_arm_that_follows_a_reversal_is_not_held(nodes_in) -> None:
    """The arm exactly on a trajectory that reverses at the velocity limit. Carried on in a straight
    line at its velocity, 100 ms later it would be 0.27 from the trajectory (beyond the 0.2
    tolerance), which held an exact arm 20 times in 300 s of fuzzing; its deviation (zero) carried
    on is still zero: no hold."""
    commander, limits = _commander(nodes_in, lambda: 100.0)
    first_joint = np.eye(len(CONFIG.action_names))[0]
    start = HOME[: len(first_joint)].copy()
    steps = np.array([1, 2, 3, 4, 3, 2, 1, 0, -1, -2]) * CONFIG.max_velocity[0] * limits.dt  # out and back
    commander.move(100.0, start, np.arange(1, 11) * limits.dt, start + np.outer(steps, first_joint))
    moment, later = 100.17, 100.27
    here, velocity = commander.commanded.position_at(moment), commander.commanded.velocity_at(moment)
    straight_line = here + velocity * (later - moment)
    assert np.abs(straight_line - commander.commanded.position_at(later)).max() > CONFIG.safety.tracking_tolerance
    reading = Stamped(here, received=0.0, stamp=moment, received_ros=moment, velocity=velocity)
    assert commander.hold_if_off_trajectory(later, reading) == ""
    assert not commander.holding


def test_a_pushed_arm_is_held_where_it_is_and_restarted_from_there(ros_context, ros_env, nodes_in) -> None:
    """Someone pushes the simulated arm (0.4 rad on one joint) while the node commands: the node
    finds it off its trajectory, holds where the arm is measured (the trajectory's own stopping
    point would pull the arm back through whatever pushed it), then restarts from there. Every
    command is judged against the arm, except first points that took effect before any node could
    know of the push. Before this rule the node went on planning from its own trajectory."""
    process, sim, recorder = node_sim_recorder(ros_env, nodes_in)
    pusher = recorder.create_publisher(Float64MultiArray, PUSH_TOPIC, 10)
    nodes = [sim, recorder]
    holds = []
    try:
        _moving(ros_context, process, sim, recorder)
        for joint in (1, 3):
            seen, count = len(recorder.received.statuses), len(recorder.received.trajectories)
            offset = np.zeros(len(CONFIG.action_names))
            offset[joint] = -0.4 if sim.follower.position[joint] > 0 else 0.4  # toward the middle
            pusher.publish(Float64MultiArray(data=offset.tolist()))
            off = lambda k=seen: any(m.reason == OFF_TRAJECTORY for _, m in recorder.received.statuses[k:])  # noqa: E731
            holds.append(spin_for(ros_context, nodes, 5.0, until=off))
            more = lambda n=count: len(recorder.received.trajectories) > n + 20  # noqa: E731
            assert spin_for(ros_context, nodes, 15.0, until=more), "the node did not restart after the push"
    finally:
        stop_node(process)
    assert all(holds) and len(sim.pushes) == 2, f"no off-trajectory hold after a push: {holds}"
    log = list(sim.arm_log)
    vmax = np.array(CONFIG.max_velocity)
    for pushed in sim.pushes:  # the hold: one point at rest, within reach of the arm at the limit
        hold = next(m for _, m in recorder.received.trajectories if message_start(m, 0) > pushed and len(m.points) == 1)
        arm = [p for t, p in log if t <= message_start(hold, 0)][-1]
        point, seconds = np.array(hold.points[0].positions), hold.points[0].time_from_start
        reach = vmax * (seconds.sec + seconds.nanosec * 1e-9)
        assert not any(hold.points[0].velocities) and np.all(np.abs(point - arm) <= reach + 1e-4), (
            f"hold {point - arm} from the arm, reach {reach}"
        )
    # A message stamped shortly before a push can arrive after it: the span starts before the push.
    # While a hand holds the arm, the node plans from its trajectory until the arm is more than
    # safety.tracking_tolerance off it: that is the distance its commands are judged within.
    unknowable = [(t - 0.1, t + CONFIG.safety.joint_state_timeout) for t in sim.pushes]
    audit = assert_safe_commands(recorder, sim, CONFIG, unknowable, CONFIG.safety.tracking_tolerance)
    assert audit.unknowable >= 1 and audit.messages > 60


class _JointStateFaker(Node):
    """Publishes fake joint states on the arm's topic, beside the simulator's real ones."""

    def __init__(self, **kwargs) -> None:
        super().__init__("joint_state_faker", **kwargs)
        self.publisher = self.create_publisher(JointState, CONFIG.topics.joint_states, qos_profile_sensor_data)

    def send(self, positions: np.ndarray) -> None:
        msg = JointState(name=CONFIG.action_names, position=[float(v) for v in positions])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.publisher.publish(msg)


def test_implausible_joint_states_never_move_the_start(ros_context, ros_env, nodes_in, tmp_path: Path) -> None:
    """Glitch readings (1e9, beyond a limit, a jump within the limits) while moving and while the
    node restarts after a hold: refused, counted, the node holds on out-of-range ones, and every
    command stays within the velocity limit of where the arm really is (on main: an arm reported
    at 2.9, limit 2.6, got a first point 5x max_step away; a 1e9 glitch 31x)."""
    process, sim, recorder = node_sim_recorder(ros_env, nodes_in)
    faker = nodes_in(_JointStateFaker)
    nodes = [sim, recorder, faker]
    try:
        _moving(ros_context, process, sim, recorder)
        for i in range(30):  # while moving: single glitches between the simulator's sane readings
            arm = sim.follower.position.copy()
            glitch = arm.copy()
            if i % 2:
                glitch[0] = 1e9
            else:
                glitch[0] = arm[0] - 1.2 if arm[0] > 0 else arm[0] + 1.2  # within the limits, far from the arm
            faker.send(glitch)
            spin_for(ros_context, nodes, 0.05)
        sim.cameras_enabled = False  # a hold...
        spin_for(ros_context, nodes, 0.8)
        sim.cameras_enabled = True  # ...and the restart, while the arm is reported beyond its limit
        beyond = sim.follower.position.copy()
        beyond[0] = CONFIG.upper[0] + 0.3
        for _ in range(160):  # far more often than the simulator's sane readings (30 Hz)
            faker.send(beyond)
            spin_for(ros_context, nodes, 0.005)
        count = len(recorder.received.trajectories)
        resumed = spin_for(ros_context, nodes, 15.0, until=lambda: len(recorder.received.trajectories) > count + 10)
    finally:
        output = stop_node(process)
    assert resumed, "the node did not resume after the glitches:\n" + output[-2000:]
    assert_safe_commands(recorder, sim, CONFIG)
    status = recorder.last_status()
    causes = dict(zip(status.reject_causes, status.reject_details, strict=True))
    assert "did not confirm it: dropped" in causes["joint_states outlier"], causes
    assert "joint1 = 2.9" in causes["joint_states beyond the joint limits"], causes
    reasons = {s.reason for _, s in recorder.received.statuses}
    assert "joint_states beyond the joint limits" in reasons, reasons


class _FlakyPolicy(Evo1Policy):
    """The real tiny model, with inference failures switched on and off by the test (what a CUDA
    out-of-memory or a shape bug looks like to the worker)."""

    failing = False

    def predict_chunk(self, *args, **kwargs):
        if self.failing:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return super().predict_chunk(*args, **kwargs)


def test_the_inference_worker_survives_any_exception(ros_context, nodes_in) -> None:
    config = ArmConfig.from_yaml(SIM_YAML)
    config.model.checkpoint, config.model.preset = "", "evo1-tiny"
    tiny = load_policy(config)  # what the node process builds for this config
    flaky = _FlakyPolicy(tiny.model, tiny.processor, tiny.device, tiny.dtype)
    parameters = [Parameter(k, value=v) for k, v in config.to_parameters().items()]
    policy = nodes_in(PolicyNode, policy=flaky, parameter_overrides=parameters)
    sim = nodes_in(SimArmNode, CONFIG, node_name="test_sim_arm")
    recorder = nodes_in(Recorder, CONFIG)
    nodes = [policy, sim, recorder]
    try:
        assert policy.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert policy.trigger_activate() == TransitionCallbackReturn.SUCCESS
        recorder.instruct("touch the red block")
        assert spin_for(ros_context, nodes, 60.0, until=lambda: len(recorder.received.trajectories) > 20)
        flaky.failing = True
        failed = spin_for(ros_context, nodes, 10.0, until=lambda: "plan ran out" in recorder.last_status().reason)
        status = recorder.last_status()
        flaky.failing = False
        count = len(recorder.received.trajectories)
        resumed = spin_for(ros_context, nodes, 20.0, until=lambda: len(recorder.received.trajectories) > count + 10)
    finally:
        policy.shutdown_cleanly()
    assert failed, [s.reason for _, s in recorder.received.statuses[-5:]]
    assert status.reason == "holding: plan ran out; last inference failed (RuntimeError)"
    causes = dict(zip(status.reject_causes, status.reject_details, strict=True))
    assert "CUDA out of memory" in causes["inference failed: RuntimeError"]
    assert resumed and recorder.last_status().commanding, "the worker did not recover"
    assert_safe_commands(recorder, sim, CONFIG)


def test_a_corrupt_checkpoint_is_one_line_in_the_log_the_status_and_bringup(
    ros_context, ros_env, nodes_in, tmp_path: Path
) -> None:
    folder = Evo1Policy.from_preset("evo1-tiny", 6, 6, device="cpu").save(tmp_path / "ckpt")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    expected = f"{weights} is not a readable safetensors file"
    process = start_node(ros_env, model__checkpoint=str(folder))
    recorder = nodes_in(Recorder, CONFIG)
    try:
        told = spin_for(
            ros_context, [recorder], 60.0, until=lambda: expected in getattr(recorder.last_status(), "reason", "")
        )
        status = recorder.last_status()
    finally:
        output = stop_node(process)
    assert told, f"status: {status}\n{output[-2000:]}"
    assert status.lifecycle_label == "unconfigured" and not status.commanding
    assert status.reason.startswith("configure failed: ") and status.last_error == status.reason
    errors = [line for line in output.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1 and expected in errors[0] and "Traceback" not in output, output[-2000:]
    evo1 = str(Path(sys.executable).parent / "evo1")
    done = subprocess.run(
        [evo1, "bringup", "--checkpoint", str(folder), "--sim", "false", "--duration", "30"],
        env=ros_env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1].startswith(f"evo1 bringup: configure failed: {expected}")


@pytest.mark.slow
def test_the_fuzzer_finds_no_unsafe_command_on_another_arm(ros_env, tmp_path: Path) -> None:
    """`evo1 fuzz-node --lag 0.05 --pushes` as a user runs it on their arm config (here SO-100,
    with a compressed camera): every input kind, freezes of 0.1-1.0 s, an arm that trails its
    controller and is held off by a hand now and then. Each push ends in an off-trajectory hold;
    every command keeps to the velocity limit from where the arm is, within
    safety.tracking_tolerance, except first points that took effect before any node could know
    of the push (counted)."""
    from evo1_bringup.check.bench_node import config_copy

    topics = ["camera/front/image_raw/compressed", "camera/wrist/image_raw"]
    arm = config_copy("so100", tmp_path, **{"cameras.compressed": [True, False], "cameras.topics": topics})
    evo1 = str(Path(sys.executable).parent / "evo1")
    report = tmp_path / "fuzz.json"
    command = [evo1, "fuzz-node", "--arm-config", str(arm), "--duration", "45", "--lag", "0.05", "--pushes"]
    done = subprocess.run([*command, "--json", str(report)], env=ros_env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(report.read_text())
    assert result["violations"] == 0 and result["node_alive"] and not result["problems"]
    assert len(result["freezes_s"]) >= 5 and result["trajectories"] > 400, done.stdout
    assert result["worst_first_step_of_velocity_limit"] > 0.9, "the arm never moved near its limit"
    assert "camera 'front': undecodable image" in result["reject_causes"], result["reject_causes"]
    assert result["pushes"] >= 4 and result["off_trajectory_holds"] >= result["pushes"] // 2, done.stdout
    assert result["tracking_tolerance"] == ArmConfig.named("so100").safety.tracking_tolerance
    assert 0 < result["unjudged_after_push"] < result["trajectories"] // 10, done.stdout


def _set_dry_run(ros_context, nodes, client, value: bool) -> None:
    from rcl_interfaces.srv import SetParameters

    request = SetParameters.Request(parameters=[Parameter("safety.dry_run", value=value).to_parameter_msg()])
    future = client.call_async(request)
    assert spin_for(ros_context, nodes, 10.0, until=future.done) and future.result().results[0].successful


def test_dry_run_switched_on_holds_and_off_restarts_from_the_arm(ros_context, ros_env, nodes_in) -> None:
    """Start in dry run (watch the chunks), let it move, go back to dry run while moving, move
    again: the arm is stopped (not left running out the last trajectory) and each restart is
    planned from where the arm is."""
    from rcl_interfaces.srv import SetParameters

    process, sim, recorder = node_sim_recorder(ros_env, nodes_in, safety__dry_run=True)
    client = recorder.create_client(SetParameters, "evo1_policy_node/set_parameters")
    nodes = [sim, recorder]
    try:
        recorder.instruct("touch the red block")
        assert spin_for(ros_context, nodes, 60.0, until=lambda: len(recorder.received.chunks) >= 3)
        assert recorder.received.trajectories == [], "dry run commanded"
        for _ in range(2):
            _set_dry_run(ros_context, nodes, client, False)
            count = len(recorder.received.trajectories)
            assert spin_for(
                ros_context, nodes, 20.0, until=lambda n=count: len(recorder.received.trajectories) > n + 20
            )
            _set_dry_run(ros_context, nodes, client, True)
            switched = len(recorder.received.trajectories)
            spin_for(ros_context, nodes, 1.0)
            quiet = recorder.received.trajectories[switched - 1 :]
            last = quiet[-1][1]
            assert len(quiet) <= 2 and len(last.points) == 1 and not any(last.points[0].velocities), "no hold"
    finally:
        stop_node(process)
    audit = assert_safe_commands(recorder, sim, CONFIG)
    assert audit.unchecked == 0
