"""ROS 2 bags (sqlite3 or mcap) -> Episodes, decoded exactly as the live node decodes.

The inputs are aligned by header stamp (the bag's log time where a stamp is zero) and resampled
to the control rate: at each step the latest camera frames and joint state at or before it.
The action of a step is the commanded position one step later, read from the command topic:
trajectory_msgs/JointTrajectory (evaluated at that time, so both streamed and long trajectories
work), sensor_msgs/JointState (a position command), or evo1_msgs/ActionChunk; with no command
topic, the next step's joint state. Two passes: stamps first, then only the frames used.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from ..images import ImageError, decode_compressed_msg, decode_image_msg, resize_square
from ..joints import JointStateError, joint_positions
from ..stamps import seconds, stamp_seconds
from .episode import DatasetError, Episode

ACTION_SOURCES = ("command", "next-state")
COMMAND_TYPES = (
    "trajectory_msgs/msg/JointTrajectory",
    "sensor_msgs/msg/JointState",
    "evo1_msgs/msg/ActionChunk",
)


@dataclass
class BagSpec:
    """Which topics hold what; usually made from the node's arm config (same topics, same joints)."""

    camera_names: list[str]
    camera_topics: list[str]
    joint_names: list[str]  # the model's state/action dims, in order
    joint_states_topic: str = "joint_states"
    command_topic: str = "arm_controller/joint_trajectory"  # "" = use the next joint state
    instruction_topic: str = "instruction"
    rate_hz: float = 20.0
    image_size: int | None = None  # resize frames on load (the model's input size saves memory)

    @classmethod
    def from_arm_config(cls, config: Any, image_size: int | None = None, action_source: str = "command") -> BagSpec:
        """The topics of an arm config (the node's). action_source "command": the recorded commands
        on its command topic (record.command_topic, else the trajectory topic) are the actions (a
        teleoperated, leader-follower or scripted arm driven through ROS); "next-state": the next
        joint state is the action (demonstrations without a command topic, e.g. kinesthetic
        teaching or a leader arm outside ROS)."""
        if action_source not in ACTION_SOURCES:
            raise ValueError(f"action source {action_source!r} unknown; choose one of {ACTION_SOURCES}")
        return cls(
            camera_names=list(config.cameras.names),
            camera_topics=list(config.cameras.topics),
            joint_names=config.action_names,
            joint_states_topic=config.topics.joint_states,
            command_topic=config.command_topic if action_source == "command" else "",
            instruction_topic=config.topics.instruction,
            rate_hz=config.control.rate_hz,
            image_size=image_size,
        )


def typestore() -> Any:
    """ROS 2 Kilted types plus evo1_msgs (from the .msg files beside this checkout or installed)."""
    store = get_typestore(Stores.ROS2_KILTED)
    for folder in _evo1_msg_folders():
        types = {}
        for path in sorted(folder.glob("*.msg")):
            types.update(get_types_from_msg(path.read_text(), f"evo1_msgs/msg/{path.stem}"))
        store.register(types)
        break
    return store


def _evo1_msg_folders() -> list[Path]:
    folders = [Path(__file__).resolve().parents[2] / "evo1_msgs" / "msg"]
    try:
        from ament_index_python.packages import get_package_share_directory

        folders.append(Path(get_package_share_directory("evo1_msgs")) / "msg")
    except Exception:  # noqa: BLE001 - no ament index: the checkout's folder is all there is
        pass
    return [f for f in folders if f.is_dir()]


def deserialize(reader: AnyReader, raw: bytes, msgtype: str) -> Any:
    """One message. rosbags rejects some CDR that ROS 2's own middleware writes (an empty array
    after a float64 array, e.g. a JointState without efforts, as many drivers publish it); ROS 2's
    deserializer reads those, and its messages have the same fields."""
    try:
        return reader.deserialize(raw, msgtype)
    except Exception as error:  # noqa: BLE001 - rosbags raises plain exceptions for size mismatches
        try:
            from rclpy.serialization import deserialize_message
        except ImportError:
            raise error from None
        return deserialize_message(bytes(raw), message_class(msgtype))


def message_class(msgtype: str) -> type:
    """The ROS 2 Python class of 'pkg/msg/Name' (imported only when asked for: needs a ROS install)."""
    import importlib

    package, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


def _stamp(msg: Any, log_time_ns: int) -> float:
    """The header stamp, or the time the bag logged the message when it has none (or a zero one)."""
    return stamp_seconds(msg) or log_time_ns * 1e-9


def _find(topics: dict[str, Any], wanted: str, path: Path, what: str) -> Any:
    """A connection whose topic is `wanted`, absolute or under a namespace."""
    name = wanted.strip("/")
    for topic, connection in topics.items():
        if topic.strip("/") == name or topic.endswith("/" + name):
            return connection
    available = ", ".join(f"{t} ({c.msgtype})" for t, c in sorted(topics.items()))
    raise DatasetError(f"{path}: no {what} topic '{wanted}'; the bag has: {available}")


def read_bag(path: str | Path, spec: BagSpec, instruction: str | None = None, index: int = 0) -> Episode:
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such bag")
    try:
        with AnyReader([path], default_typestore=typestore()) as reader:
            return _read(reader, path, spec, instruction, index)
    except DatasetError:
        raise
    except Exception as error:  # noqa: BLE001 - rosbags raises many kinds for damaged bags
        raise DatasetError(f"{path}: cannot read the bag ({type(error).__name__}: {error})") from None


@dataclass
class _Streams:
    """Pass 1 of a bag: every camera's frame stamps, and the joint states, commands and
    instruction texts in full (they are small)."""

    cameras: list[Any]  # the camera connections, in the spec's order
    frame_stamps: list[list[float]]
    joint_times: list[float] = field(default_factory=list)
    joint_values: list[np.ndarray] = field(default_factory=list)
    command_times: list[float] = field(default_factory=list)
    commands: list[Any] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)


def _read(reader: AnyReader, path: Path, spec: BagSpec, instruction: str | None, index: int) -> Episode:
    cameras, joints, command, text_connection = _connections(reader, path, spec)
    streams = _read_streams(reader, path, spec, cameras, joints, command, text_connection)
    instruction = instruction or next((t for t in streams.texts if t), "")
    if not instruction:
        raise DatasetError(f"{path}: no instruction on '{spec.instruction_topic}' and none given for this bag")
    dt = 1.0 / spec.rate_hz
    ticks = _ticks(path, spec, streams, command is not None)
    states = np.stack([streams.joint_values[_latest(streams.joint_times, t)] for t in ticks])
    if command is None:
        actions = np.stack([streams.joint_values[_latest(streams.joint_times, t + dt)] for t in ticks])
    else:
        actions = np.stack([streams.commands[_latest(streams.command_times, t)].at(t + dt) for t in ticks])
    return Episode(
        takeover=_takeover_steps(path, ticks),
        source=str(path),
        index=index,
        instruction=instruction,
        fps=spec.rate_hz,
        camera_names=list(spec.camera_names),
        images=_decode_frames(reader, path, spec, streams, ticks),
        states=states,
        actions=actions,
        state_names=list(spec.joint_names),
        action_names=list(spec.joint_names),
        timestamps=ticks - ticks[0],
        start_time=float(ticks[0]),
    )


def _takeover_steps(path: Path, ticks: np.ndarray) -> np.ndarray | None:
    """The steps inside an operator's takeover, from `evo1 record --takeovers`'s metadata
    (custom_data evo1.takeovers: [[start_ns, end_ns], ...]); None for other bags."""
    import json

    import yaml

    metadata = (path if path.is_dir() else path.parent) / "metadata.yaml"
    if not metadata.is_file():
        return None
    info = yaml.safe_load(metadata.read_text()) or {}
    custom = (info.get("rosbag2_bagfile_information") or {}).get("custom_data") or {}
    if "evo1.takeovers" not in custom:
        return None
    spans = json.loads(custom["evo1.takeovers"])
    ticks_ns = np.round(ticks * 1e9)
    return np.array([any(start <= t < end for start, end in spans) for t in ticks_ns], dtype=bool)


def _connections(reader: AnyReader, path: Path, spec: BagSpec) -> tuple[list[Any], Any, Any, Any]:
    """The bag's connections for the spec's cameras, joint states, command (None without one) and
    instruction (None when the bag has none); a missing or mistyped topic is one clear error."""
    topics = {c.topic: c for c in reader.connections}
    cameras = [
        _find(topics, t, path, f"camera '{n}'") for n, t in zip(spec.camera_names, spec.camera_topics, strict=True)
    ]
    joints = _find(topics, spec.joint_states_topic, path, "joint state")
    command = None
    if spec.command_topic:
        try:
            command = _find(topics, spec.command_topic, path, "command")
        except DatasetError as error:
            raise DatasetError(
                f"{error}. Demonstrations recorded without commands: --action-source next-state "
                "(data.action_source: next-state) takes the next joint state as the action"
            ) from None
    if command is not None and command.msgtype not in COMMAND_TYPES:
        raise DatasetError(
            f"{path}: command topic {command.topic} has type {command.msgtype}; expected {COMMAND_TYPES}"
        )
    text_connection = next((c for t, c in topics.items() if t.strip("/").endswith(spec.instruction_topic)), None)
    return cameras, joints, command, text_connection


def _read_streams(
    reader: AnyReader, path: Path, spec: BagSpec, cameras: list[Any], joints: Any, command: Any, text: Any
) -> _Streams:
    """Pass 1 (no image decoded); a topic without messages is one clear error."""
    streams = _Streams(cameras, [[] for _ in cameras])
    wanted = [*cameras, joints] + ([command] if command else []) + ([text] if text else [])
    for connection, log_time, raw in reader.messages(connections=wanted):
        msg = deserialize(reader, raw, connection.msgtype)
        if connection in cameras:
            streams.frame_stamps[cameras.index(connection)].append(_stamp(msg, log_time))
        elif connection is joints:
            try:
                streams.joint_values.append(joint_positions(list(msg.name), list(msg.position), spec.joint_names))
            except JointStateError as error:
                raise DatasetError(f"{path}, joint state #{len(streams.joint_values)}: {error}") from None
            streams.joint_times.append(_stamp(msg, log_time))
        elif connection is command:
            stamp = _stamp(msg, log_time)  # a zero stamp means "start on receipt"
            streams.command_times.append(stamp)
            streams.commands.append(_command(msg, connection.msgtype, spec, path, len(streams.commands), stamp))
        else:
            streams.texts.append(str(msg.data).strip())
    for name, stamps in zip(spec.camera_names, streams.frame_stamps, strict=True):
        if not stamps:
            raise DatasetError(f"{path}: camera '{name}' topic has no messages")
    if not streams.joint_times:
        raise DatasetError(f"{path}: joint state topic {joints.topic} has no messages")
    if command is not None and not streams.command_times:
        raise DatasetError(
            f"{path}: command topic {command.topic} has no messages (no commands recorded: "
            "--action-source next-state takes the next joint state as the action)"
        )
    return streams


def _ticks(path: Path, spec: BagSpec, streams: _Streams, has_command: bool) -> np.ndarray:
    """The control grid (header-stamp seconds) over the span where every topic has data; an empty
    span is an error that lists each topic's span (usually two clocks)."""
    dt = 1.0 / spec.rate_hz
    frames, joint_times, command_times = streams.frame_stamps, streams.joint_times, streams.command_times
    start = max([s[0] for s in frames] + [joint_times[0]] + ([command_times[0]] if command_times else []))
    end = min([s[-1] for s in frames] + [joint_times[-1]])
    ticks = start + dt * np.arange(int(np.floor((end - start) / dt + 1e-6)) + 1)
    if not has_command:
        ticks = ticks[:-1]  # the last step has no next state to be its action
    if len(ticks) == 0:
        spans = [f"camera '{n}' {st[0]:.3f}..{st[-1]:.3f}" for n, st in zip(spec.camera_names, frames, strict=True)]
        spans.append(f"joint states {joint_times[0]:.3f}..{joint_times[-1]:.3f}")
        if command_times:
            spans.append(f"commands from {command_times[0]:.3f}")
        raise DatasetError(
            f"{path}: no time span where every topic has data ({'; '.join(spans)} s). Stamps far apart "
            "usually mean two clocks (sim time against wall time, or a camera stamping its own clock)"
        )
    return ticks


def _decode_frames(
    reader: AnyReader, path: Path, spec: BagSpec, streams: _Streams, ticks: np.ndarray
) -> list[np.ndarray]:
    """Pass 2: decode only the frames the ticks use (the latest at or before each)."""
    cameras = streams.cameras
    chosen = [[_latest(stamps, t) for t in ticks] for stamps in streams.frame_stamps]
    needed = [set(c) for c in chosen]
    decoded: list[dict[int, np.ndarray]] = [{} for _ in cameras]
    counters = [0] * len(cameras)
    for connection, _, raw in reader.messages(connections=cameras):
        cam = cameras.index(connection)
        number = counters[cam]
        counters[cam] += 1
        if number not in needed[cam]:
            continue
        msg = deserialize(reader, raw, connection.msgtype)
        try:
            rgb = decode_compressed_msg(msg) if "Compressed" in connection.msgtype else decode_image_msg(msg)
        except ImageError as error:
            raise DatasetError(f"{path}, camera '{spec.camera_names[cam]}', frame {number}: {error}") from None
        decoded[cam][number] = resize_square(rgb, spec.image_size) if spec.image_size else rgb
    return [np.stack([decoded[cam][n] for n in chosen[cam]]) for cam in range(len(cameras))]


def _latest(times: list[float], t: float) -> int:
    """Index of the last entry at or before t (the first one if t precedes them all)."""
    return max(bisect.bisect_right(times, t + 1e-9) - 1, 0)


@dataclass
class _Command:
    start: float
    times: np.ndarray  # seconds from start, increasing
    positions: np.ndarray  # (P, A)

    def at(self, t: float) -> np.ndarray:
        """Position commanded for time t (linear between points; held before the first and after the last)."""
        if len(self.times) == 1:
            return self.positions[0]
        offset = t - self.start
        return np.array([np.interp(offset, self.times, self.positions[:, j]) for j in range(self.positions.shape[1])])


def _command(msg: Any, msgtype: str, spec: BagSpec, path: Path, number: int, start: float) -> _Command:
    where = f"{path}, command #{number}"
    try:
        if msgtype == "sensor_msgs/msg/JointState":
            return _Command(
                0.0, np.zeros(1), joint_positions(list(msg.name), list(msg.position), spec.joint_names)[None]
            )
        if msgtype == "evo1_msgs/msg/ActionChunk":
            if list(msg.joint_names) != spec.joint_names:
                raise DatasetError(f"{where}: chunk joints {list(msg.joint_names)} differ from {spec.joint_names}")
            chunk = np.asarray(msg.data, dtype=np.float64).reshape(msg.horizon, msg.action_dim)
            times = (np.arange(msg.horizon) + 1) * msg.time_step
            return _Command(start, times, chunk)
        if not msg.points:
            raise DatasetError(f"{where}: trajectory has no points")
        names = list(msg.joint_names)
        positions = np.stack([joint_positions(names, list(p.positions), spec.joint_names) for p in msg.points])
        times = np.array([seconds(p.time_from_start) for p in msg.points])
        return _Command(start, times, positions)
    except JointStateError as error:
        raise DatasetError(f"{where}: {str(error).replace('joint_states', 'command')}") from None
