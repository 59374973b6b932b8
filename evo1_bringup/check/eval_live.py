"""`evo1 eval-bag --live`: replay recorded runs to a running policy node and score what it does.

The bag's camera, joint-state and instruction topics are published with their recorded timing
(scaled by `rate`) and their original header stamps; what the node publishes (trajectories,
chunks, status) is recorded into a new bag (mcap) beside the report. Each ActionChunk carries the
stamp of the observation it was predicted from, which places it on the recording's time line, so
it is scored on the same metrics as the open-loop mode, plus observation-to-command latency.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from trajectory_msgs.msg import JointTrajectory

from evo1_msgs.msg import ActionChunk, PolicyStatus
from evo1_msgs.srv import Reset
from evo1_policy.data.episode import DatasetError
from evo1_policy.data.rosbag import BagSpec, message_class, read_bag, typestore
from evo1_policy.evaluation.open_loop import EpisodeResult, metrics
from evo1_policy.evaluation.report import write_report

from ..arm_config import NODE_NAME, ArmConfig
from ..ros_io import COMMAND_QOS, INSTRUCTION_QOS, stamp_seconds

RECORDED = (("trajectory", JointTrajectory), ("action_chunk", ActionChunk), ("status", PolicyStatus))


def _replayed_messages(bag: Path, spec: BagSpec) -> list[tuple[int, str, str, bytes]]:
    """(log time ns, topic, type, raw CDR) of the bag's camera, joint-state and instruction topics."""
    wanted = {t.strip("/") for t in [*spec.camera_topics, spec.joint_states_topic, spec.instruction_topic]}
    with AnyReader([bag], default_typestore=typestore()) as reader:
        connections = [c for c in reader.connections if any(c.topic.strip("/").endswith(w) for w in wanted)]
        return [(t, c.topic, c.msgtype, bytes(raw)) for c, t, raw in reader.messages(connections=connections)]


def _publishers(node: Node, messages: list, node_ns: str) -> dict[str, tuple[Any, type]]:
    """One publisher per recorded input topic (under the node's namespace), with its QoS."""
    publishers: dict[str, tuple[Any, type]] = {}
    for _, topic, msgtype, _ in messages:
        if topic not in publishers:
            qos = INSTRUCTION_QOS if msgtype == "std_msgs/msg/String" else qos_profile_sensor_data
            name = topic.lstrip("/") if not node_ns else f"{node_ns.rstrip('/')}/{topic.lstrip('/')}"
            publishers[topic] = (node.create_publisher(message_class(msgtype), name, qos), message_class(msgtype))
    return publishers


def _record_outputs(node: Node, writer: Writer, config: ArmConfig, prefix: str, chunks: list, statuses: list) -> None:
    """Subscribe to what the node publishes: each message into the new bag, chunks and statuses kept."""
    store = typestore()
    connections = {}
    for suffix, kind in RECORDED:
        topic = config.topics.trajectory if suffix == "trajectory" else f"{prefix}/{suffix}"
        msgtype = kind.__module__.split(".")[0] + "/msg/" + kind.__name__
        connections[suffix] = writer.add_connection(f"/{topic.lstrip('/')}", msgtype, typestore=store)

        def record(msg: Any, suffix: str = suffix) -> None:
            writer.write(connections[suffix], time.time_ns(), serialize_message(msg))
            if suffix == "action_chunk":
                chunks.append(msg)
            elif suffix == "status":
                statuses.append(msg)

        node.create_subscription(kind, topic, record, COMMAND_QOS if suffix == "trajectory" else 10)


def _wait_until_active(
    executor: SingleThreadedExecutor, statuses: list, reset: Any, prefix: str, timeout: float
) -> None:
    """Until the node's status says active (an error naming its state if not), then reset it."""
    deadline = time.monotonic() + timeout
    while not (statuses and statuses[-1].lifecycle_label == "active") and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.1)
    if not statuses:
        raise RuntimeError(f"no policy node answered on {prefix}/status within {timeout:.0f} s: start it first")
    if statuses[-1].lifecycle_label != "active":
        raise RuntimeError(f"the policy node on {prefix} is {statuses[-1].lifecycle_label}: {statuses[-1].reason}")
    if reset.service_is_ready():  # a clean slate: no instruction or queue left from the last bag
        future = reset.call_async(Reset.Request())
        while not future.done() and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)


def replay_bag(
    bag: Path, spec: BagSpec, config: ArmConfig, out_bag: Path, rate: float, node_ns: str, timeout: float
) -> tuple[list[ActionChunk], list[PolicyStatus]]:
    messages = _replayed_messages(bag, spec)
    if not messages:
        raise DatasetError(f"{bag}: nothing to replay (no camera, joint-state or instruction messages)")
    chunks: list[ActionChunk] = []
    statuses: list[PolicyStatus] = []
    prefix = f"{node_ns.rstrip('/')}/{NODE_NAME}" if node_ns else NODE_NAME
    with rclpy.init(), Writer(out_bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        node = rclpy.create_node("evo1_replay")
        publishers = _publishers(node, messages, node_ns)
        _record_outputs(node, writer, config, prefix, chunks, statuses)
        reset = node.create_client(Reset, f"{prefix}/reset")
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        _wait_until_active(executor, statuses, reset, prefix, timeout)
        statuses.clear()
        start_wall, start_log = time.monotonic(), messages[0][0]
        for log_time, topic, _, raw in messages:  # with their recorded timing, scaled by `rate`
            due = start_wall + (log_time - start_log) * 1e-9 / rate
            while (wait := due - time.monotonic()) > 0:
                executor.spin_once(timeout_sec=min(wait, 0.01))
            publisher, kind = publishers[topic]
            publisher.publish(deserialize_message(raw, kind))
        settle = time.monotonic() + 1.5
        while time.monotonic() < settle:
            executor.spin_once(timeout_sec=0.05)
        executor.shutdown()
        node.destroy_node()
    return chunks, statuses


def score_chunks(chunks: list[ActionChunk], episode: Any, start: float, bag: Path) -> tuple[EpisodeResult, int]:
    """Place each chunk at the recording's step of its observation stamp. Returns the result and
    how many chunks could not be placed (outside the recording, or for other joints)."""
    dt = 1.0 / episode.fps
    result = EpisodeResult(
        episode.source, episode.index, episode.instruction, episode.action_names, episode.fps, episode.actions
    )
    unplaced = 0
    for chunk in chunks:
        stamp = stamp_seconds(chunk)
        step = round((stamp - start) / dt)
        if not 0 <= step < episode.length or list(chunk.joint_names) != episode.action_names:
            unplaced += 1
            continue
        result.inference_steps.append(step)
        result.predictions.append(np.asarray(chunk.data, dtype=np.float64).reshape(chunk.horizon, chunk.action_dim))
        result.latencies_ms.append(chunk.inference_latency * 1e3)
    if not result.predictions:
        raise DatasetError(f"{bag}: the node published no chunk for this recording (is it active, with these topics?)")
    return result, unplaced


def eval_live(
    bags: list[str], arm_config: str, out: str, rate: float = 1.0, namespace: str = "", timeout: float = 60.0
) -> dict[str, Any]:
    config = ArmConfig.named(arm_config)
    spec = BagSpec.from_arm_config(config)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    gripper_dims = config.gripper_dims
    results, per_bag, latency = [], {}, {}
    for i, bag in enumerate(bags):
        episode = read_bag(bag, spec, None, i)
        recording = out_dir / f"live_{i:03d}_{Path(bag).stem}"
        chunks, statuses = replay_bag(Path(bag), spec, config, recording, rate, namespace, timeout)
        result, unplaced = score_chunks(chunks, episode, episode.start_time, Path(bag))
        results.append(result)
        per_bag[bag] = metrics([result], gripper_dims)
        last = statuses[-1] if statuses else None
        latency[bag] = {
            "observation_to_command_ms_p50": last.observation_to_command_p50 * 1e3 if last else float("nan"),
            "observation_to_command_ms_p95": last.observation_to_command_p95 * 1e3 if last else float("nan"),
            "recorded_outputs": str(recording),
            "chunks_scored": len(result.predictions),
            "chunks_not_scored": unplaced,  # outside the recording's time span, or for other joints
        }
    label = "live node"
    aggregate = metrics(results, gripper_dims)
    extra = {"mode": "live", "rate": rate, "bags": bags, "latency": latency}
    print(write_report(out_dir, {label: results}, {label: per_bag}, {label: aggregate}, extra))
    for bag, figures in latency.items():
        print(
            f"{Path(bag).name}: observation -> command p50 {figures['observation_to_command_ms_p50']:.1f} ms, "
            f"p95 {figures['observation_to_command_ms_p95']:.1f} ms; {figures['chunks_scored']} chunks scored, "
            f"{figures['chunks_not_scored']} not (outside the recording); node outputs in {figures['recorded_outputs']}"
        )
    return {"per_bag": per_bag, "aggregate": aggregate, "results": results, "latency": latency}
