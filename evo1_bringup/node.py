"""The Evo-1 policy node: cameras + joint states + instruction in, joint trajectories out.

A lifecycle node. configure: read and validate parameters, load the policy, create topics.
activate: start the control loop and the inference worker. deactivate / shutdown / SIGINT /
SIGTERM: command a hold and stop. Subscription callbacks only validate and store the latest
messages; the worker thread runs the model on a consistent snapshot; the control timer merges
chunks, applies the safety layer (safety.py, docs/safety.md) and publishes one JointTrajectory per
update. Plan time comes from the clock: a late update skips the steps that passed, and every
message starts from where the arm is at its own start time.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

import numpy as np
import rclpy
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64, String
from trajectory_msgs.msg import JointTrajectory

from evo1_msgs.msg import ActionChunk, PolicyStatus
from evo1_msgs.srv import Reset
from evo1_policy.chunking import ChunkExecutor, ControlClock, Request
from evo1_policy.images import header_problem
from evo1_policy.joints import JointStateError, joint_positions, joint_velocities
from evo1_policy.policy import Evo1Policy

from .arm_config import NODE_NAME, ArmConfig, parameter_schema
from .commander import ArmCommander
from .inference_worker import (
    MAX_DETAIL,
    InferenceWorker,
    Result,
    Snapshot,
    Stamped,
    check_fits,
    decode_frame,
    describe,
    instruction_problem,
    load_policy,
    warm_up,
)
from .node_status import Counters, NodeSnapshot, declare_parameters, fill_lifecycle, fill_rates
from .ros_io import COMMAND_QOS, INSTRUCTION_QOS, chunk_message, spin_until_signal, stamp_seconds
from .safety import Limits, OutlierFilter, check_chunk, input_problem, out_of_range


class PolicyNode(LifecycleNode):
    def __init__(self, node_name: str = NODE_NAME, policy: Evo1Policy | None = None, **kwargs: Any):
        super().__init__(node_name, **kwargs)
        self._injected_policy = policy  # tests and `evo1 bench-node` may hand in a loaded policy
        declare_parameters(self, parameter_schema())
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.config: ArmConfig | None = None
        self.policy: Evo1Policy | None = None
        self._lock = threading.Lock()
        self._worker = InferenceWorker(
            self._lock, self._snapshot, self._predict, self._reject, lambda text: self.get_logger().error(text)
        )
        self._arm = ArmCommander()
        self._active = False
        self._warmup_time = 0.0
        # entities of the configured state, created by configure and destroyed by cleanup/shutdown
        self._config_subscriptions: list[Any] = []
        self._config_publishers: list[Any] = []
        self._config_services: list[Any] = []
        self._control_timers: list[Any] = []
        self._reset_state()
        # The status lives as long as the node: a configure failure is reported there too.
        self.status_pub = self.create_publisher(PolicyStatus, self.get_parameter("topics.status").value, 10)
        self.create_timer(1.0 / self.get_parameter("status_rate_hz").value, lambda: self._publish_status(force=True))

    # ------------------------------------------------------------------ parameters
    def _on_set_parameters(self, params: list[Any]) -> SetParametersResult:
        for p in params:
            if p.name == "safety.dry_run" and self.config is not None:
                if p.value and self._active:
                    # Stop the arm before going quiet: it would otherwise run out the last trajectory.
                    # Leaving dry run then restarts from where the arm is measured (after this hold).
                    self._hold(self._ros_now(), "dry_run switched on")
                self.config.safety.dry_run = bool(p.value)
                self._status_changed = True
        return SetParametersResult(successful=True)

    @property
    def configure_failed(self) -> bool:
        return self.config is None and self._reason.startswith("configure failed")

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            config = ArmConfig.from_parameters({n: self.get_parameter(n).value for n, _, _ in parameter_schema()})
            config.validate()
            policy = self._injected_policy or load_policy(config)
            check_fits(policy, config)
            self._warmup_time = warm_up(policy, config, self.get_logger())
        except Exception as error:  # noqa: BLE001 - any failure (a corrupt file, a torch error) is one clear line
            self._last_error = f"configure failed: {describe(error)}"
            self._reason = self._last_error
            self.get_logger().error(self._last_error)
            self._publish_status(force=True)
            return TransitionCallbackReturn.FAILURE
        self.config, self.policy = config, policy
        self.dt = 1.0 / config.control.rate_hz
        self.limits = Limits.of(config.lower, config.upper, config.max_velocity, self.dt)
        self._outliers = OutlierFilter(self.limits.max_velocity, config.safety.joint_state_jump)
        self.executor_plan = ChunkExecutor.for_control(config.control)
        self._control_clock = ControlClock(self.dt)
        self._create_interfaces(config)
        self._arm.attach(
            config, self.limits, self.dt, self.trajectory_pub, self.gripper_pub, self.get_logger(), self._ros_now
        )
        self._worker.start()
        self.get_logger().info(
            f"configured: {policy.config.preset}, {len(config.cameras.names)} camera(s), joints {config.action_names}, "
            f"{config.control.rate_hz} Hz, merge={config.control.merge}, dry_run={config.safety.dry_run}"
        )
        self._status_changed = True
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._lock:
            self._reset_plan("activated")
            self._active = True
        self._control_clock.restart()  # the control grid starts at the first update
        self._control_timers = [self.create_timer(self.dt, self._control_step)]
        self._status_changed = True
        self.get_logger().info("active")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._go_inactive("deactivated")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._go_inactive("shutting down")
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def shutdown_cleanly(self) -> None:
        """Hold, stop the control loop and the worker (SIGINT/SIGTERM and `evo1 bringup` exit)."""
        self._go_inactive("shutting down")
        self._teardown()

    def _go_inactive(self, why: str) -> None:
        if self._active:
            self._hold(self._ros_now(), why)
        self._active = False
        for timer in self._control_timers:
            self.destroy_timer(timer)
        self._control_timers = []
        self._status_changed = True
        self._publish_status(force=True)

    def _teardown(self) -> None:
        self._worker.stop()
        # what configure created, each destroyed by its own kind (as ros2/demos lifecycle_py does)
        for subscription in self._config_subscriptions:
            self.destroy_subscription(subscription)
        for publisher in self._config_publishers:
            self.destroy_publisher(publisher)
        for service in self._config_services:
            self.destroy_service(service)
        self._config_subscriptions, self._config_publishers, self._config_services = [], [], []

    # ------------------------------------------------------------------ interfaces
    def _create_interfaces(self, config: ArmConfig) -> None:
        c = config.cameras
        self._camera_msgs: list[Stamped | None] = [None] * len(c.names)
        for index, (name, topic, compressed) in enumerate(zip(c.names, c.topics, c.compressed, strict=True)):
            kind = CompressedImage if compressed else Image
            self._config_subscriptions.append(
                self.create_subscription(
                    kind, topic, lambda msg, i=index, n=name: self._on_image(i, n, msg), qos_profile_sensor_data
                )
            )
        t = config.topics
        self._config_subscriptions += [
            self.create_subscription(JointState, t.joint_states, self._on_joint_state, qos_profile_sensor_data),
            self.create_subscription(String, t.instruction, self._on_instruction, INSTRUCTION_QOS),
        ]
        self._config_services.append(self.create_service(Reset, "~/reset", self._on_reset))
        self.trajectory_pub = self.create_publisher(JointTrajectory, t.trajectory, COMMAND_QOS)
        self.chunk_pub = self.create_publisher(ActionChunk, t.action_chunk, 10)
        self.gripper_pub = None
        if config.gripper.name and config.gripper.output == "topic":
            self.gripper_pub = self.create_publisher(Float64, config.gripper.topic, COMMAND_QOS)
        self._config_publishers += [p for p in (self.trajectory_pub, self.chunk_pub, self.gripper_pub) if p]

    # ------------------------------------------------------------------ inputs (callbacks: store only)
    def _reject(self, cause: str, detail: str = "") -> None:
        """Count a rejected input under a stable cause (its latest detail kept); log each cause at
        most every 5 s."""
        detail = detail or cause
        with self._lock:
            cause, log = self._counters.count(cause, detail, time.monotonic())
            self._last_error = detail[:MAX_DETAIL]
            count = self._counters.causes[cause]
        if log:
            self.get_logger().warning(f"rejected ({cause}): {detail[:MAX_DETAIL]} (x{count})")

    def _ros_now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_image(self, index: int, name: str, msg: Any) -> None:
        problem = header_problem(msg)  # cheap; full decoding happens in the worker
        if problem:
            kind, detail = problem
            self._reject(f"camera '{name}': {kind}", f"camera '{name}': {detail}")
            return
        with self._lock:
            self._camera_msgs[index] = Stamped(msg, time.monotonic(), stamp_seconds(msg))

    def _on_joint_state(self, msg: JointState) -> None:
        try:
            positions = joint_positions(msg.name, msg.position, self.config.action_names)
        except JointStateError as error:
            self._reject(error.cause, str(error))
            return
        received, received_ros = time.monotonic(), self._ros_now()
        tolerance = self.config.safety.joint_state_tolerance
        implausible = out_of_range(positions, self.config.action_names, self.limits, tolerance)
        if implausible:
            # The arm cannot be there, or the reading is garbage: either way the node must not plan
            # from it, and it holds until a plausible reading arrives.
            self._reject("joint_states beyond the joint limits", implausible)
            with self._lock:
                self._joint_fault = "joint_states beyond the joint limits"
            return
        with self._lock:
            accepted, glitch = self._outliers.accept(positions, received)
            if accepted:
                velocity = joint_velocities(msg.name, msg.velocity, self.config.action_names)
                self._joints = Stamped(positions, received, stamp_seconds(msg), received_ros, velocity)
                self._joint_fault = ""
            last = self._outliers.last[0]
        if glitch is not None:
            jump = np.abs(glitch - last).max()
            detail = f"joint_states jumped {jump:.4g} and the next reading did not confirm it: dropped"
            self._reject("joint_states outlier", detail)

    def _on_instruction(self, msg: String) -> None:
        text = msg.data.strip()
        problem = instruction_problem(text, self.policy, len(self.config.cameras.names))
        if problem:
            kind, detail = problem
            self._reject(kind, detail)
            return
        with self._lock:
            changed = self._instruction is None or text != self._instruction.value
            self._instruction = Stamped(text, time.monotonic(), 0.0)
            if changed:
                self._reset_plan("new instruction")
        if changed:
            self.get_logger().info(f"instruction: {text!r}")
            self._status_changed = True

    def _on_reset(self, request: Reset.Request, response: Reset.Response) -> Reset.Response:
        del request
        with self._lock:
            self._instruction = None
            self._reset_plan("reset")
        self._hold(self._ros_now(), "reset")
        response.success, response.message = True, "queue cleared; holding until a new instruction"
        self._status_changed = True
        return response

    # ------------------------------------------------------------------ state
    def _reset_state(self) -> None:
        self._camera_msgs = []
        self._joints: Stamped | None = None
        self._joint_fault = ""  # why the last joint state was refused ("" when the last was good)
        self._instruction: Stamped | None = None
        self._counters = Counters()
        self._last_error = ""
        self._status_changed = True
        self._reason = "unconfigured"
        self._plan_dropped = ""  # why the plan was last dropped ("" once a chunk arrived since)
        self._chunk_times: collections.deque[float] = collections.deque(maxlen=20)
        self._chunks = 0
        self.tick_durations: collections.deque[float] = collections.deque(maxlen=2000)
        self.tick_times: collections.deque[float] = collections.deque(maxlen=2000)
        self.obs_to_command: collections.deque[float] = collections.deque(maxlen=2000)
        self._pending_latency_mark: float | None = None

    def _reset_plan(self, why: str) -> None:
        """Drop queued actions and any chunk in flight (called with the lock held)."""
        if hasattr(self, "executor_plan"):
            self.executor_plan.reset()
        self._worker.drop()  # a chunk computed for the old situation is discarded on arrival
        self._plan_dropped = why
        self.get_logger().debug(f"plan reset: {why}")

    # ------------------------------------------------------------------ inference worker
    def _predict(self, snapshot: Snapshot, request: Request) -> np.ndarray:
        """The worker's model call (outside the lock): decode the frames, one chunk."""
        images = [
            decode_frame(s.value, name) for s, name in zip(snapshot.images, self.config.cameras.names, strict=True)
        ]
        return self.policy.predict_chunk(
            images,
            snapshot.positions,
            snapshot.instruction,
            steps=self.config.model.steps or None,
            seed=self.config.model.seed if self.config.model.seed >= 0 else None,
            guidance=request.guidance,
        )

    def _snapshot(self, tick: int) -> Snapshot | None:
        """The latest inputs, taken together (lock held)."""
        if any(m is None for m in self._camera_msgs) or self._joints is None or self._instruction is None:
            return None
        stamps = [m.stamp for m in self._camera_msgs] + [self._joints.stamp]
        return Snapshot(
            images=list(self._camera_msgs),
            positions=self._joints.value.copy(),
            instruction=self._instruction.value,
            tick=tick,
            oldest_stamp=min(stamps),
            received=max(m.received for m in self._camera_msgs),
        )

    # ------------------------------------------------------------------ control loop
    def _control_step(self) -> None:
        started = time.monotonic()
        now = self._ros_now()  # the stamp of whatever this update publishes
        self.tick_times.append(started)
        tick, late = self._control_clock.advance(started)
        with self._lock:
            reason = input_problem(
                started, self._instruction, self.config.cameras.names, self._camera_msgs, self._joints,
                self._joint_fault, self._worker.in_flight_since, self.config.safety,
            )  # fmt: skip
            arrived, joints = self._worker.take_result(), self._joints
        if arrived is not None:
            self._accept_chunk(arrived, tick=tick, now=now)
        reason = reason or self._arm.hold_if_off_trajectory(now, joints)  # pushed, blocked: hold where it is
        if reason:
            with self._lock:
                self._reset_plan(reason)
            self._stop(now, reason)
            self.tick_durations.append(time.monotonic() - started)
            return
        with self._lock:
            plan = self.executor_plan
            latency = self._worker.latency_estimate(self.dt)
            if self._worker.idle and plan.needs_chunk(tick, latency, self.dt):
                self._worker.ask(plan.request(tick, latency, self.dt))
            upcoming = plan.upcoming(tick, self.config.control.max_points)
            waiting = self._waiting_reason() if len(upcoming) == 0 else ""
        if waiting:
            self._stop(now, waiting)
        else:
            start = self._start_position(now)
            if start is None:
                self._set_reason("waiting for a joint state measured after the hold")
            else:
                self._set_reason("dry_run" if self.config.safety.dry_run else "")
                # Point i is for tick + 1 + i: its time from this update's start is on the tick grid.
                times = np.arange(1, len(upcoming) + 1) * self.dt - late
                self._command(now, start, times, upcoming)
        self.tick_durations.append(time.monotonic() - started)

    def _waiting_reason(self) -> str:
        """Why nothing is planned (lock held): the real cause, not just 'no chunk'."""
        if self._plan_dropped and self._plan_dropped != "activated":
            return f"waiting for a chunk: plan dropped ({self._plan_dropped})"
        if self._chunks == 0:
            return "waiting for the first chunk"
        if self._worker.failure:
            return f"holding: plan ran out; last inference failed ({self._worker.failure.split(':')[0]})"
        return "holding: plan ran out (inference slower than the plan)"

    def _stop(self, now: float, reason: str) -> None:
        self._hold(now, reason)
        self._set_reason(reason)

    def _start_position(self, now: float) -> np.ndarray | None:
        """Where the arm is at `now`, the start of the next message (ArmCommander.start_position)."""
        with self._lock:
            joints, unconfirmed = self._joints, self._outliers.candidate is not None
        return self._arm.start_position(now, joints, unconfirmed)

    def _accept_chunk(self, arrived: Result, tick: int, now: float) -> None:
        chunk, snapshot, latency = arrived.chunk, arrived.snapshot, arrived.latency
        self._chunks += 1
        self._chunk_times.append(time.monotonic())
        self._publish_chunk(chunk, snapshot, latency)
        problem = check_chunk(chunk, self.limits, self.config.safety.out_of_range_tolerance)
        if problem is None and latency > self.config.safety.inference_timeout:
            problem = ("chunk slower than safety.inference_timeout", f"chunk took {latency:.2f} s")
        if problem:
            kind, detail = problem
            self._reject(f"chunk dropped: {kind}", detail)
            with self._lock:
                self._reset_plan(f"chunk dropped: {kind}")
            self._hold(now, "rejected chunk")
            return
        with self._lock:
            if arrived.generation != self._worker.generation:
                return
            self.executor_plan.merge(chunk, snapshot.tick, tick)
            self._plan_dropped = ""
        self._pending_latency_mark = snapshot.received

    def _command(self, now: float, start: np.ndarray, times: np.ndarray, targets: np.ndarray) -> None:
        if self._arm.move(now, start, times, targets) and self._pending_latency_mark is not None:
            self.obs_to_command.append(time.monotonic() - self._pending_latency_mark)
            self._pending_latency_mark = None

    def _hold(self, now: float, why: str) -> None:
        self._arm.hold(now, why)

    def _publish_chunk(self, chunk: np.ndarray, snapshot: Snapshot, latency: float) -> None:
        steps = self.config.model.steps or self.policy.config.num_inference_steps
        msg = chunk_message(chunk, snapshot.oldest_stamp, snapshot.instruction, self.config.action_names, self.dt)
        msg.sequence, msg.inference_latency, msg.denoising_steps = self._chunks, latency, steps
        self.chunk_pub.publish(msg)

    # ------------------------------------------------------------------ status
    def _set_reason(self, reason: str) -> None:
        if reason != self._reason:
            self._reason = reason
            self._status_changed = True
            self._publish_status(force=True)

    def snapshot(self) -> NodeSnapshot:
        with self._lock:
            return NodeSnapshot(
                reason=self._reason,
                chunks=self._chunks,
                trajectories=self._arm.published,
                last_latency=self._worker.latencies[-1] if self._worker.latencies else None,
                rejected=dict(self._counters.causes),
                last_error=self._last_error,
                inference_path=self.policy.inference_path if self.policy is not None else "",
            )

    def _publish_status(self, force: bool = False) -> None:
        if not (force or self._status_changed) or not hasattr(self, "status_pub"):
            return
        self._status_changed = False
        now = time.monotonic()
        msg = PolicyStatus()
        msg.header.stamp = self.get_clock().now().to_msg()
        fill_lifecycle(msg, self._active, self.config is not None)
        msg.dry_run = bool(self.config and self.config.safety.dry_run)
        with self._lock:
            reason = self._reason if self._active or self.config is None else "inactive"
            msg.commanding = self._active and reason == ""
            msg.reason = reason
            msg.instruction = self._instruction.value if self._instruction else ""
            msg.camera_names = list(self.config.cameras.names) if self.config else []
            msg.camera_ages = [now - m.received if m else -1.0 for m in self._camera_msgs]
            msg.joint_state_age = now - self._joints.received if self._joints else -1.0
            msg.instruction_age = now - self._instruction.received if self._instruction else -1.0
            fill_rates(
                msg,
                self._worker.latencies,
                self._chunk_times,
                self.tick_times,
                self.tick_durations,
                self.obs_to_command,
            )
            msg.planned_steps = (
                self.executor_plan.planned(self._control_clock.tick) if hasattr(self, "executor_plan") else 0
            )
            msg.chunks_computed = self._chunks
            msg.trajectories_published = self._arm.published
            self._counters.fill(msg)
            msg.last_error = self._last_error
            msg.inference_path = self.policy.inference_path if self.policy is not None else ""
            msg.warmup_time = self._warmup_time
        self.status_pub.publish(msg)


def main(args: list[str] | None = None) -> int:
    with rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO):
        node = PolicyNode()
        spin_until_signal([node], autostart=[node] if node.get_parameter("autostart").value else [])
        node.destroy_node()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
