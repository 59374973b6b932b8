"""The policy node's parameters: one schema, the one source of their defaults.

The node declares every field below as a ROS parameter (dotted names, e.g. `safety.camera_timeout`)
with its description and range; `evo1 bringup`, the launch file and the bag tools read the
same YAML through `ArmConfig.from_yaml`. Arm files in config/ set what differs per arm.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from evo1_policy.config import COMPILE_MODES
from evo1_policy.settings import set_dotted

from .paths import config_path

NODE_NAME = "evo1_policy_node"
MERGE_MODES = ("latest_only", "blend", "rtc")
GRIPPER_OUTPUTS = ("trajectory", "topic")
# When the arm's controller starts a trajectory: at its header stamp (joint_trajectory_controller)
# or when it arrives (drivers that ignore the stamp; the node then sends a zero stamp).
CONTROLLER_STARTS = ("stamp", "receipt")
# What the operator's commands are that `evo1 record` stores as the demonstrated actions.
RECORD_COMMAND_TYPES = ("trajectory", "joint_state")


def _p(
    default: Any,
    description: str,
    low: float | None = None,
    high: float | None = None,
    dynamic: bool = False,
    choices: tuple[str, ...] = (),
):
    """A schema field: default, description, numeric range or string choices, and whether it may
    change while running."""
    factory = (lambda: list(default)) if isinstance(default, list) else None
    meta = {"description": description, "range": (low, high), "dynamic": dynamic, "choices": choices}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelParams:
    checkpoint: str = _p("", "Checkpoint directory (config.json, model.safetensors, norm_stats.json, tokenizer.json)")
    preset: str = _p("", "Untrained preset to run when no checkpoint is given (demos and tests only, e.g. evo1-tiny)")
    device: str = _p("auto", "Torch device: auto, cpu, cuda, cuda:N")
    dtype: str = _p("", "float32 or bfloat16; empty: fp32 on CPU, bf16 on CUDA")
    steps: int = _p(0, "Denoising steps per chunk; 0: the checkpoint's default", 0, 1000)
    dataset_key: str = _p("", "Norm-stats entry of a checkpoint trained on several datasets (reference RoboTwin)")
    seed: int = _p(-1, "Seed of the sampler's noise; -1: unseeded", -1, 2**31 - 1)
    threads: int = _p(0, "Torch CPU threads; 0: all cores but one (the control loop keeps one)", 0, 256)
    compile: str = _p(
        "off",
        "Inference path: off (eager), graphs (CUDA graphs over static shapes; CUDA only), compile "
        "(torch.compile); captured and warmed up at configure, eager if that fails",
        choices=COMPILE_MODES,
    )


@dataclass
class JointParams:
    names: list[str] = _p(["joint1"], "Arm joints in the order of the model's state and action dims")
    lower_limits: list[float] = _p([-3.14], "Lower position limit per joint (rad or m)")
    upper_limits: list[float] = _p([3.14], "Upper position limit per joint (rad or m)")
    max_velocity: list[float] = _p([1.0], "Velocity limit per joint (unit/s): caps the change per control step")


@dataclass
class GripperParams:
    name: str = _p("", "Gripper joint name in joint_states (last action dim); empty: no gripper")
    lower_limit: float = _p(0.0, "Gripper position lower limit")
    upper_limit: float = _p(1.0, "Gripper position upper limit")
    max_velocity: float = _p(1.0, "Gripper velocity limit (unit/s)", 0.0)
    output: str = _p("trajectory", "trajectory: a joint of the arm trajectory; topic: Float64 on gripper.topic")
    topic: str = _p("gripper/command", "Topic for gripper commands when output is 'topic'")


@dataclass
class CameraParams:
    names: list[str] = _p(["front"], "Camera names, in the model's view order (1 to 3)")
    topics: list[str] = _p(["camera/front/image_raw"], "Image topic per camera (relative: namespaces apply)")
    compressed: list[bool] = _p([False], "Per camera: sensor_msgs/CompressedImage (jpeg/png) instead of Image")


@dataclass
class TopicParams:
    joint_states: str = _p("joint_states", "sensor_msgs/JointState input")
    instruction: str = _p("instruction", "std_msgs/String input (reliable, transient local)")
    trajectory: str = _p("arm_controller/joint_trajectory", "trajectory_msgs/JointTrajectory output (reliable)")
    action_chunk: str = _p("~/action_chunk", "evo1_msgs/ActionChunk output: every raw chunk")
    status: str = _p("~/status", "evo1_msgs/PolicyStatus output: 1 Hz and on every change")


@dataclass
class ControlParams:
    rate_hz: float = _p(20.0, "Control rate: one trajectory per update, one action per step", 1.0, 1000.0)
    execute_steps: int = _p(25, "Steps of each chunk executed before the next chunk takes over", 1, 1000)
    max_points: int = _p(50, "Most points per published trajectory", 1, 1000)
    merge: str = _p(
        "rtc",
        "Overlapping chunks: latest_only, blend (crossfade), rtc (guided denoising + crossfade)",
        choices=MERGE_MODES,
    )
    blend_steps: int = _p(8, "Crossfade length in steps (blend and rtc)", 0, 1000)
    rtc_max_guidance: float = _p(10.0, "Real-time chunking: cap on the guidance weight (beta)", 0.0, 1000.0)
    rtc_decay_steps: int = _p(10, "Real-time chunking: steps over which guidance fades after the frozen part", 0, 1000)
    request_margin_steps: int = _p(2, "Request the next chunk this many steps before it is needed", 0, 1000)
    controller_start: str = _p(
        "stamp",
        "When the arm's controller starts a trajectory: stamp (at its header stamp, as "
        "joint_trajectory_controller does; the node stamps each one) or receipt (on arrival; the node "
        "sends a zero stamp and plans for control.receipt_jitter)",
        choices=CONTROLLER_STARTS,
    )
    receipt_jitter: float = _p(
        0.01,
        "With controller_start receipt: how much the delivery delay may differ between two "
        "trajectories (s); the first point keeps this much time in hand",
        0.0,
        1.0,
    )


@dataclass
class SafetyParams:
    camera_timeout: float = _p(0.5, "Hold when any camera is older than this (s)", 0.01, 60.0)
    joint_state_timeout: float = _p(0.25, "Hold when joint states are older than this (s)", 0.01, 60.0)
    inference_timeout: float = _p(2.0, "Hold when a chunk takes longer than this (s); it is dropped", 0.01, 600.0)
    out_of_range_tolerance: float = _p(0.1, "Drop a chunk beyond a limit by more than this; less is clamped", 0.0)
    joint_state_tolerance: float = _p(
        0.05, "Reject (and hold on) a joint state beyond a limit by more than this (unit of the joint)", 0.0
    )
    joint_state_jump: float = _p(
        0.3, "A joint state that jumps more than this plus max_velocity * elapsed is an outlier until confirmed", 0.0
    )
    tracking_tolerance: float = _p(
        0.2,
        "Hold when the measured arm is further than this from the running trajectory (unit of the "
        "joint): pushed, blocked or lagging its controller; it restarts from where it is measured",
        0.0,
    )
    dry_run: bool = _p(False, "Compute and publish chunks and status, but never a trajectory", dynamic=True)


@dataclass
class RecordParams:
    command_topic: str = _p(
        "",
        "The operator's commands that `evo1 record` stores as the actions: empty = topics.trajectory "
        "(a teleop driving the arm's controller); a leader arm's JointState topic (e.g. leader/joint_states)",
    )
    command_type: str = _p(
        "trajectory",
        "Type of record.command_topic: trajectory (trajectory_msgs/JointTrajectory) or joint_state "
        "(sensor_msgs/JointState, a position command per message)",
        choices=RECORD_COMMAND_TYPES,
    )


@dataclass
class ArmConfig:
    model: ModelParams = field(default_factory=ModelParams)
    joints: JointParams = field(default_factory=JointParams)
    gripper: GripperParams = field(default_factory=GripperParams)
    cameras: CameraParams = field(default_factory=CameraParams)
    topics: TopicParams = field(default_factory=TopicParams)
    control: ControlParams = field(default_factory=ControlParams)
    safety: SafetyParams = field(default_factory=SafetyParams)
    record: RecordParams = field(default_factory=RecordParams)
    status_rate_hz: float = _p(1.0, "PolicyStatus heartbeat rate", 0.1, 100.0)
    autostart: bool = _p(True, "Configure and activate on start (otherwise wait for lifecycle transitions)")

    # ------------------------------------------------------------ derived
    @property
    def action_names(self) -> list[str]:
        """Model dims: the arm joints, then the gripper."""
        return [str(name) for name in self._with_gripper(self.joints.names, self.gripper.name)]

    def _with_gripper(self, joint_values: list[float], gripper_value: float) -> list[float]:
        """A per-joint list extended to the model dims: the gripper's value last, when there is one."""
        return list(joint_values) + ([gripper_value] if self.gripper.name else [])

    @property
    def lower(self) -> list[float]:
        return self._with_gripper(self.joints.lower_limits, self.gripper.lower_limit)

    @property
    def upper(self) -> list[float]:
        return self._with_gripper(self.joints.upper_limits, self.gripper.upper_limit)

    @property
    def max_velocity(self) -> list[float]:
        return self._with_gripper(self.joints.max_velocity, self.gripper.max_velocity)

    @property
    def gripper_dims(self) -> list[int]:
        """Model dims that are a gripper (scored apart: open/close, not a joint angle)."""
        return [len(self.joints.names)] if self.gripper.name else []

    @property
    def command_topic(self) -> str:
        """Where the demonstrated actions are recorded from (`evo1 record`, bag2dataset, train)."""
        return self.record.command_topic or self.topics.trajectory

    @property
    def trajectory_names(self) -> list[str]:
        if self.gripper.name and self.gripper.output == "trajectory":
            return self.action_names
        return list(self.joints.names)

    # ------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise ValueError naming every problem at once."""
        problems: list[str] = []
        j, c, g, ctl = self.joints, self.cameras, self.gripper, self.control
        n = len(j.names)
        if n == 0:
            problems.append("joints.names is empty")
        if len(set(self.action_names)) != len(self.action_names):
            problems.append("joint names (and gripper) must be unique")
        for name in ("lower_limits", "upper_limits", "max_velocity"):
            if len(getattr(j, name)) != n:
                problems.append(f"joints.{name} has {len(getattr(j, name))} entries for {n} joints")
        if not problems:
            bad = [name for name, lo, hi in zip(j.names, j.lower_limits, j.upper_limits, strict=True) if not lo < hi]
            if bad:
                problems.append(f"lower limit not below upper limit for {bad}")
            if any(v <= 0 for v in j.max_velocity):
                problems.append("joints.max_velocity must be positive")
        if g.name and not g.lower_limit < g.upper_limit:
            problems.append("gripper.lower_limit must be below gripper.upper_limit")
        if g.output not in GRIPPER_OUTPUTS:
            problems.append(f"gripper.output {g.output!r} unknown; choose one of {GRIPPER_OUTPUTS}")
        if not 1 <= len(c.names) <= 3:
            problems.append(f"{len(c.names)} cameras configured; Evo-1 takes 1 to 3")
        if not (len(c.names) == len(c.topics) == len(c.compressed)):
            problems.append("cameras.names, cameras.topics and cameras.compressed must have equal lengths")
        if self.model.compile not in COMPILE_MODES:
            problems.append(f"model.compile {self.model.compile!r} unknown; choose one of {COMPILE_MODES}")
        if ctl.merge not in MERGE_MODES:
            problems.append(f"control.merge {ctl.merge!r} unknown; choose one of {MERGE_MODES}")
        if ctl.controller_start not in CONTROLLER_STARTS:
            problems.append(
                f"control.controller_start {ctl.controller_start!r} unknown; choose one of {CONTROLLER_STARTS}"
            )
        if self.record.command_type not in RECORD_COMMAND_TYPES:
            problems.append(
                f"record.command_type {self.record.command_type!r} unknown; choose one of {RECORD_COMMAND_TYPES}"
            )
        for section in (self.model, j, g, c, self.topics, ctl, self.safety, self.record, self):
            for f in dataclasses.fields(section):
                low, high = f.metadata.get("range", (None, None))
                value = getattr(section, f.name)
                numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
                if numeric and ((low is not None and value < low) or (high is not None and value > high)):
                    problems.append(f"{f.name} = {value} outside [{low}, {high}]")
        if problems:
            raise ValueError("invalid arm config: " + "; ".join(problems))

    # ------------------------------------------------------------ flat parameter view
    def to_parameters(self) -> dict[str, Any]:
        return dict(_flatten(self))

    @classmethod
    def from_parameters(cls, values: dict[str, Any]) -> ArmConfig:
        config = cls()
        for name, value in values.items():  # dotted names, or nested sections
            set_dotted(config, name, value, "parameter", strict=True)  # as strict as ROS parameter types
        return config

    @classmethod
    def from_yaml(cls, path: str | Path, node_name: str = NODE_NAME) -> ArmConfig:
        """A ROS parameter file (`<node>: ros__parameters: ...`, or `/**:`), nested or dotted keys."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"arm config {path} does not exist")
        data = yaml.safe_load(path.read_text()) or {}
        section = None
        for key in (node_name, f"/{node_name}", "/**"):
            if isinstance(data.get(key), dict) and "ros__parameters" in data[key]:
                section = data[key]["ros__parameters"]
                break
        if section is None:
            raise ValueError(f"{path}: no '{node_name}: ros__parameters:' section")
        config = cls.from_parameters(section)
        config.validate()
        return config

    @classmethod
    def named(cls, name_or_path: str) -> ArmConfig:
        """An arm config by path or by its name in config/ ('xarm6'), as every command takes it."""
        return cls.from_yaml(config_path(name_or_path))


def parameter_schema() -> list[tuple[str, Any, dict[str, Any]]]:
    """(dotted name, default, metadata) for every parameter, in declaration order."""
    return list(_schema(ArmConfig()))


def _schema(obj: Any, prefix: str = ""):
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from _schema(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", value, dict(f.metadata)


def _flatten(obj: Any, prefix: str = ""):
    for name, value, _ in _schema(obj, prefix):
        yield name, value
