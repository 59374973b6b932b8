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
import math
import os
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
from rclpy.time import Time
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64, String
from trajectory_msgs.msg import JointTrajectory

from evo1_msgs.msg import ActionChunk, PolicyStatus
from evo1_msgs.srv import Reset
from evo1_policy.chunking import ChunkExecutor, Request
from evo1_policy.images import ImageError, decode_compressed_msg, decode_image_msg, header_problem
from evo1_policy.joints import JointStateError, joint_positions
from evo1_policy.normalize import Normalizer
from evo1_policy.policy import Evo1Policy

from .arm_config import NODE_NAME, ArmConfig, parameter_schema
from .paths import checkpoint_path
from .ros_io import COMMAND_QOS, INSTRUCTION_QOS, spin_until_signal, stamp_seconds, trajectory_message
from .safety import Commanded, Limits, OutlierFilter, check_chunk, hold_point, out_of_range, safe_path

MAX_REJECT_CAUSES = 32  # distinct causes kept in the status; further new kinds count as "other"
MAX_DETAIL = 300  # characters of a rejected input's detail kept for the status


def load_policy(config: ArmConfig) -> Evo1Policy:
    """The policy the config names: a checkpoint, or (demos/tests) an untrained preset."""
    m = config.model
    dtype = m.dtype or None
    if m.checkpoint:
        return Evo1Policy.from_checkpoint(
            checkpoint_path(m.checkpoint), device=m.device, dtype=dtype, dataset_key=m.dataset_key or None
        )
    if m.preset:
        dims = len(config.action_names)
        normalizer = Normalizer.from_limits(config.lower, config.upper, config.action_names)
        return Evo1Policy.from_preset(m.preset, dims, dims, device=m.device, dtype=dtype, normalizer=normalizer)
    raise ValueError("model.checkpoint is empty (and no model.preset): say which policy to run")


@dataclass
class Stamped:
    value: Any
    received: float  # time.monotonic() at arrival
    stamp: float  # header stamp in seconds (0 if none)
    received_ros: float = 0.0  # the node's ROS clock at arrival, seconds (the time base of trajectories)


@dataclass
class Snapshot:
    images: list[Any]
    positions: np.ndarray
    instruction: str
    tick: int
    oldest_stamp: float
    received: float  # monotonic arrival of the newest camera frame used


@dataclass(frozen=True)
class NodeSnapshot:
    """What the node has done so far, read under its lock: for progress lines and summaries."""

    reason: str  # why it is not commanding ("" when it is)
    chunks: int
    trajectories: int
    last_latency: float | None  # seconds of the last chunk, None before the first
    rejected: dict[str, int]  # rejected inputs and outputs by cause
    last_error: str
    inference_path: str


@dataclass
class Counters:
    """Rejected inputs by stable cause, bounded: the last detail of each cause is kept beside it."""

    causes: collections.Counter = field(default_factory=collections.Counter)
    details: dict[str, str] = field(default_factory=dict)
    last_logged: dict[str, float] = field(default_factory=dict)

    def count(self, cause: str, detail: str) -> str:
        if cause not in self.causes and len(self.causes) >= MAX_REJECT_CAUSES:
            cause = "other"
        self.causes[cause] += 1
        self.details[cause] = detail[:MAX_DETAIL]
        return cause


class PolicyNode(LifecycleNode):
    def __init__(self, node_name: str = NODE_NAME, policy: Evo1Policy | None = None, **kwargs: Any):
        super().__init__(node_name, **kwargs)
        self._injected_policy = policy  # tests and `evo1 bench-node` may hand in a loaded policy
        self._declare_parameters()
        self.config: ArmConfig | None = None
        self.policy: Evo1Policy | None = None
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._active = False
        self._worker: threading.Thread | None = None
        self._stop_worker = False
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
    def _declare_parameters(self) -> None:
        for name, default, meta in parameter_schema():
            descriptor = ParameterDescriptor(description=meta["description"], read_only=not meta["dynamic"])
            if meta["choices"]:
                descriptor.additional_constraints = f"one of: {', '.join(meta['choices'])}"
            low, high = meta["range"]
            bounded = low is not None or high is not None
            if isinstance(default, float) and bounded:
                low, high = -1e300 if low is None else low, 1e300 if high is None else high
                descriptor.floating_point_range = [FloatingPointRange(from_value=float(low), to_value=float(high))]
            elif isinstance(default, int) and not isinstance(default, bool) and bounded:
                low, high = -(2**62) if low is None else low, 2**62 if high is None else high
                descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high))]
            self.declare_parameter(name, default, descriptor)
        self.add_on_set_parameters_callback(self._on_set_parameters)

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

    def _read_config(self) -> ArmConfig:
        values = {name: self.get_parameter(name).value for name, _, _ in parameter_schema()}
        config = ArmConfig.from_parameters(values)
        config.validate()
        return config

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            config = self._read_config()
            policy = self._injected_policy or load_policy(config)
            if policy.action_dim != len(config.action_names) or policy.state_dim != len(config.action_names):
                raise ValueError(
                    f"checkpoint has {policy.state_dim} state / {policy.action_dim} action dims but the arm config "
                    f"names {len(config.action_names)} ({config.action_names})"
                )
            if config.control.execute_steps > policy.config.horizon:
                raise ValueError(
                    f"control.execute_steps {config.control.execute_steps} exceeds the model's horizon "
                    f"{policy.config.horizon}"
                )
            if len(config.cameras.names) > policy.config.max_views:
                raise ValueError(f"{len(config.cameras.names)} cameras but the model takes {policy.config.max_views}")
            if policy.device.type == "cpu":
                import torch

                torch.set_num_threads(config.model.threads or max(1, (os.cpu_count() or 2) - 1))
            self._warm_up(policy, config)
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
        self.executor_plan = ChunkExecutor(
            config.control.execute_steps,
            config.control.merge,
            config.control.blend_steps,
            config.control.request_margin_steps,
            config.control.rtc_decay_steps,
            config.control.rtc_max_guidance,
        )
        self._create_interfaces(config)
        self._stop_worker = False
        self._worker = threading.Thread(target=self._inference_loop, name="evo1-inference", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"configured: {policy.config.preset}, {len(config.cameras.names)} camera(s), joints {config.action_names}, "
            f"{config.control.rate_hz} Hz, merge={config.control.merge}, dry_run={config.safety.dry_run}"
        )
        self._status_changed = True
        return TransitionCallbackReturn.SUCCESS

    def _warm_up(self, policy: Evo1Policy, config: ArmConfig) -> None:
        """Choose the inference path and run it once per shape the node will use (plain chunks, and
        guided ones under rtc), so capture, compilation and lazy initialisation happen here and the
        first chunk on the arm is not slow. A capture that fails leaves that shape eager, said once."""
        mode = config.model.compile
        if mode == "graphs" and policy.device.type != "cuda":
            self.get_logger().warning(f"model.compile 'graphs' needs CUDA; the policy runs on {policy.device}: eager")
            mode = "off"
        policy.set_compile(mode)
        self._warmup_time = policy.warm_up(
            len(config.cameras.names), steps=config.model.steps or None, guided=config.control.merge == "rtc"
        )
        path = policy.inference_path
        if mode != "off" and path != mode:
            self.get_logger().warning(f"model.compile '{mode}' could not be used, running {path}")
        self.get_logger().info(f"inference path: {path}; warm-up took {self._warmup_time:.2f} s")

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._lock:
            self._reset_plan("activated")
            self._active = True
        self._epoch = None  # the control grid starts at the first update
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
        with self._lock:
            self._stop_worker = True
            self._wake.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=5.0)
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
        now = time.monotonic()
        detail = detail or cause
        with self._lock:
            cause = self._counters.count(cause, detail)
            last = self._counters.last_logged.get(cause, -math.inf)
            log = now - last >= 5.0
            if log:
                self._counters.last_logged[cause] = now
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
                self._joints = Stamped(positions, received, stamp_seconds(msg), received_ros)
                self._joint_fault = ""
            last = self._outliers.last[0]
        if glitch is not None:
            jump = np.abs(glitch - last).max()
            detail = f"joint_states jumped {jump:.4g} and the next reading did not confirm it: dropped"
            self._reject("joint_states outlier", detail)

    def _on_instruction(self, msg: String) -> None:
        text = msg.data.strip()
        problem = self._instruction_problem(text)
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

    def _instruction_problem(self, text: str) -> tuple[str, str] | None:
        """(cause, detail) when an instruction cannot be used; checked here, at the topic, so a bad
        one is refused once with its reason instead of failing every inference. (An embedded NUL
        never arrives: ROS 2 cuts strings there when serialising, so `evo1 instruct` refuses it.)"""
        if not text:
            return "empty instruction", "empty instruction"
        if len(text) > 2000:
            return "instruction too long", f"instruction of {len(text)} characters is too long (max 2000)"
        try:
            self.policy.processor.check_instruction(text, len(self.config.cameras.names))
        except ValueError as error:
            return "instruction too long", f"instruction refused: {error}"
        return None

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
        self._epoch: float | None = None  # monotonic time of tick 0
        self._tick = 0
        self._holding = False
        self._commanded: Commanded | None = None  # the last published trajectory (motion or hold)
        self._plan_dropped = ""  # why the plan was last dropped ("" once a chunk arrived since)
        self._inference_failure = ""  # the last failed inference ("" after a success)
        self._request: Request | None = None
        self._in_flight_since: float | None = None
        self._result: tuple[np.ndarray, Snapshot, float, int] | None = None
        self._generation = 0
        self._latencies: collections.deque[float] = collections.deque(maxlen=20)
        self._inference_count = 0
        self._chunk_times: collections.deque[float] = collections.deque(maxlen=20)
        self._trajectories = 0
        self._chunks = 0
        self.tick_durations: collections.deque[float] = collections.deque(maxlen=2000)
        self.tick_times: collections.deque[float] = collections.deque(maxlen=2000)
        self.obs_to_command: collections.deque[float] = collections.deque(maxlen=2000)
        self._pending_latency_mark: float | None = None

    def _reset_plan(self, why: str) -> None:
        """Drop queued actions and any chunk in flight (called with the lock held)."""
        if hasattr(self, "executor_plan"):
            self.executor_plan.reset()
        self._generation += 1  # a chunk computed for the old situation is discarded on arrival
        self._result = None
        self._request = None
        self._plan_dropped = why
        self.get_logger().debug(f"plan reset: {why}")

    def _latency_estimate(self) -> float:
        # The first inference (cold start) is not representative; until others exist, assume one step.
        recent = list(self._latencies)[1:] if len(self._latencies) > 1 else []
        return float(np.percentile(recent, 90)) if recent else self.dt

    # ------------------------------------------------------------------ inference worker
    def _inference_loop(self) -> None:
        failures = 0  # consecutive unexpected failures: each doubles the pause before the next try
        while True:
            with self._lock:
                while not self._stop_worker and self._request is None:
                    self._wake.wait(timeout=0.5)
                if self._stop_worker:
                    return
                request, generation = self._request, self._generation
                snapshot = self._snapshot(request.tick)
            if snapshot is None:
                with self._lock:
                    self._request = None
                continue
            start = time.monotonic()
            with self._lock:
                self._in_flight_since = start
            chunk, cause, error = None, "", ""
            try:
                images = [self._decode(i, s) for i, s in enumerate(snapshot.images)]
                seed = self.config.model.seed if self.config.model.seed >= 0 else None
                chunk = self.policy.predict_chunk(
                    images,
                    snapshot.positions,
                    snapshot.instruction,
                    steps=self.config.model.steps or None,
                    seed=seed,
                    guidance=request.guidance,
                )
            except ImageError as exc:  # a bad frame: this observation is skipped
                cause, error = str(exc).split(":")[0] + ": undecodable image", str(exc)
            except ValueError as exc:  # an input the model refuses
                cause, error = "inference input refused", f"inference input: {exc}"
            except Exception as exc:  # noqa: BLE001 - the worker must outlive anything (CUDA OOM, a bug)
                cause, error = f"inference failed: {type(exc).__name__}", describe(exc)
                failures += 1
                if failures == 1:
                    self.get_logger().error(f"inference failed:\n{traceback.format_exc()}")
            finally:
                latency = time.monotonic() - start
                with self._lock:
                    self._in_flight_since = None
                    self._request = None
                    if chunk is not None and generation == self._generation:
                        self._result = (chunk, snapshot, latency, generation)
                    self._latencies.append(latency)
                    self._inference_count += 1
                    self._inference_failure = error
            if not error:
                failures = 0
                continue
            self._reject(cause, error)
            if failures:
                pause = min(0.1 * 2 ** (failures - 1), 5.0)
                with self._lock:
                    self._wake.wait_for(lambda: self._stop_worker, timeout=pause)

    def _decode(self, index: int, stamped: Stamped) -> np.ndarray:
        try:
            msg = stamped.value
            return decode_compressed_msg(msg) if isinstance(msg, CompressedImage) else decode_image_msg(msg)
        except ImageError as error:
            raise ImageError(f"camera '{self.config.cameras.names[index]}': {error}") from None

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
    def _why_not_commanding(self, now: float) -> str:
        """'' when every input is fresh and plausible and an instruction is known (lock held). A
        stable phrase per cause: the ages are in the status's own fields."""
        if self._instruction is None:
            return "no instruction"
        s = self.config.safety
        for name, msg in zip(self.config.cameras.names, self._camera_msgs, strict=True):
            if msg is None:
                return f"no image from camera '{name}'"
            if now - msg.received > s.camera_timeout:
                return f"camera '{name}' stale (> {s.camera_timeout} s)"
        if self._joint_fault:
            return self._joint_fault
        if self._joints is None:
            return "no joint states"
        if now - self._joints.received > s.joint_state_timeout:
            return f"joint states stale (> {s.joint_state_timeout} s)"
        if self._in_flight_since is not None and now - self._in_flight_since > s.inference_timeout:
            return f"inference slower than {s.inference_timeout} s"
        return ""

    def _clock_tick(self, started: float) -> tuple[int, float]:
        """The control tick from the clock (not a count of callbacks: a late update skips the
        steps that passed) and how late this update is for it, in seconds (negative: early)."""
        if self._epoch is None:
            self._epoch = started - self._tick * self.dt
        phase = (started - self._epoch) / self.dt
        tick = max(round(phase), self._tick)
        return tick, (phase - tick) * self.dt

    def _control_step(self) -> None:
        started = time.monotonic()
        now = self._ros_now()  # the stamp of whatever this update publishes
        self.tick_times.append(started)
        tick, late = self._clock_tick(started)
        self._tick = tick
        with self._lock:
            reason = self._why_not_commanding(started)
            arrived = self._result
            self._result = None
        if arrived is not None:
            self._accept_chunk(*arrived, tick=tick, now=now)
        if reason:
            with self._lock:
                self._reset_plan(reason)
            self._stop(now, reason)
            self.tick_durations.append(time.monotonic() - started)
            return
        with self._lock:
            plan = self.executor_plan
            idle = self._request is None and self._in_flight_since is None
            latency = self._latency_estimate()
            if idle and plan.needs_chunk(tick, latency, self.dt):
                self._request = plan.request(tick, latency, self.dt)
                self._wake.notify_all()
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
        if self._inference_failure:
            return f"holding: plan ran out; last inference failed ({self._inference_failure.split(':')[0]})"
        return "holding: plan ran out (inference slower than the plan)"

    def _stop(self, now: float, reason: str) -> None:
        self._hold(now, reason)
        self._set_reason(reason)

    def _start_position(self, now: float) -> np.ndarray | None:
        """Where the arm is at `now`, the start of the next message (docs/safety.md): on the running
        trajectory (or at rest at its end); after a hold, or before any command, at rest wherever a
        joint state measured after the hold ended says. None: no such joint state yet."""
        commanded = self._commanded
        if commanded is not None and not self._holding:
            return commanded.position_at(now)
        with self._lock:
            joints = self._joints
            # a reading that jumped is waiting for the next to confirm it: until then where the arm
            # is, is not known (it may have been moved: a reset, a push)
            unconfirmed = self._outliers.candidate is not None
        if unconfirmed or (commanded is not None and not self._measured_after(joints, commanded.end_time)):
            return None
        return joints.value.copy()

    def _measured_after(self, joints: Stamped, moment: float) -> bool:
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

    def _accept_chunk(
        self, chunk: np.ndarray, snapshot: Snapshot, latency: float, generation: int, tick: int, now: float
    ) -> None:
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
            if generation != self._generation:
                return
            self.executor_plan.merge(chunk, snapshot.tick, tick)
            self._plan_dropped = ""
        self._pending_latency_mark = snapshot.received

    def _command(self, now: float, start: np.ndarray, times: np.ndarray, targets: np.ndarray) -> None:
        if self.config.safety.dry_run:
            return  # nothing commanded: whatever held before still holds
        points = safe_path(targets, start, times, self.limits)
        # on the running trajectory the arm moves as its cubic says; after a hold it is at rest
        running = self._commanded is not None and not self._holding
        velocity = self._commanded.velocity_at(now) if running else np.zeros_like(start)
        self._holding = False
        self._publish_trajectory(now, start, times, points, velocity)
        if self._pending_latency_mark is not None:
            self.obs_to_command.append(time.monotonic() - self._pending_latency_mark)
            self._pending_latency_mark = None

    def _hold(self, now: float, why: str) -> None:
        """Stop where the arm is, once: one point at rest reached by decelerating from the running
        trajectory (safety.hold_point); nothing in dry_run or before any command. Then nothing
        until the node commands motion again."""
        if self._holding or self._commanded is None or self.config is None:
            return
        self._holding = True
        if self.config.safety.dry_run:
            return
        start = self._commanded.position_at(now)
        point = hold_point(self._commanded, now, self.limits)
        self._publish_trajectory(now, start, np.array([self.dt]), point[None, :], self._commanded.velocity_at(now))
        self.get_logger().info(f"holding position: {why}", throttle_duration_sec=2.0)

    def _publish_trajectory(
        self, now: float, start: np.ndarray, times: np.ndarray, points: np.ndarray, start_velocity: np.ndarray
    ) -> None:
        """start, start_velocity: where the arm is and how it moves when this message takes effect."""
        msg = trajectory_message(self.config.trajectory_names, points, start, times)
        if self.config.control.stamp_trajectories:
            msg.header.stamp = Time(nanoseconds=round(now * 1e9)).to_msg()
        self.trajectory_pub.publish(msg)
        self._commanded = Commanded(now, np.asarray(start, float), np.asarray(times, float), points, start_velocity)
        if self.gripper_pub is not None:
            self.gripper_pub.publish(Float64(data=float(points[0][-1])))
        self._trajectories += 1

    def _publish_chunk(self, chunk: np.ndarray, snapshot: Snapshot, latency: float) -> None:
        msg = ActionChunk()
        msg.header.stamp.sec = int(snapshot.oldest_stamp)
        msg.header.stamp.nanosec = int((snapshot.oldest_stamp % 1) * 1e9)
        msg.sequence = self._chunks
        msg.instruction = snapshot.instruction
        msg.joint_names = self.config.action_names
        msg.horizon, msg.action_dim = int(chunk.shape[0]), int(chunk.shape[1])
        msg.time_step = self.dt
        msg.data = np.nan_to_num(chunk, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32).ravel().tolist()
        msg.inference_latency = latency
        msg.denoising_steps = self.config.model.steps or self.policy.config.num_inference_steps
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
                trajectories=self._trajectories,
                last_latency=self._latencies[-1] if self._latencies else None,
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
        if self._active:
            msg.lifecycle_state, msg.lifecycle_label = PolicyStatus.STATE_ACTIVE, "active"
        elif self.config is not None:
            msg.lifecycle_state, msg.lifecycle_label = PolicyStatus.STATE_INACTIVE, "inactive"
        else:
            msg.lifecycle_state, msg.lifecycle_label = PolicyStatus.STATE_UNCONFIGURED, "unconfigured"
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
            latencies = list(self._latencies)
            msg.inference_latency = latencies[-1] if latencies else 0.0
            msg.inference_latency_p95 = float(np.percentile(latencies, 95)) if latencies else 0.0
            times = list(self._chunk_times)
            span = times[-1] - times[0] if len(times) > 1 else 0.0
            msg.inference_rate = (len(times) - 1) / span if span > 0 else 0.0
            ticks = np.diff(list(self.tick_times)[-200:])
            if len(ticks):
                msg.control_rate = float(1.0 / ticks.mean())
                msg.control_period_p99 = float(np.percentile(ticks, 99))
            msg.planned_steps = self.executor_plan.planned(self._tick) if hasattr(self, "executor_plan") else 0
            durations = list(self.tick_durations)[-200:]
            if durations:
                msg.update_time_p50, msg.update_time_p95 = (float(v) for v in np.percentile(durations, [50, 95]))
            delays = list(self.obs_to_command)[-50:]
            if delays:
                msg.observation_to_command_p50, msg.observation_to_command_p95 = (
                    float(v) for v in np.percentile(delays, [50, 95])
                )
            msg.chunks_computed = self._chunks
            msg.trajectories_published = self._trajectories
            msg.reject_causes = list(self._counters.causes)
            msg.reject_counts = [int(v) for v in self._counters.causes.values()]
            msg.reject_details = [self._counters.details[c] for c in self._counters.causes]
            msg.last_error = self._last_error
            msg.inference_path = self.policy.inference_path if self.policy is not None else ""
            msg.warmup_time = self._warmup_time
        self.status_pub.publish(msg)


def describe(error: BaseException) -> str:
    """One line for any error: the checkpoint loaders already name the file; anything else also
    gets its type, since 'CUDA out of memory' or a KeyError alone says too little."""
    text = " ".join(str(error).split()) or repr(error)
    return text if isinstance(error, (ValueError, FileNotFoundError)) else f"{type(error).__name__}: {text}"


def main(args: list[str] | None = None) -> int:
    with rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO):
        node = PolicyNode()
        spin_until_signal([node], autostart=[node] if node.get_parameter("autostart").value else [])
        node.destroy_node()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
