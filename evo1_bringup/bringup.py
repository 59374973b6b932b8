"""`evo1 bringup` and `evo1 instruct`: arm.launch.py's job for machines without `ros2 launch`.

bringup starts the same nodes (policy node, and the simulated arm unless --sim false) with the
same arm YAML and the same argument defaults (launch_args.py), in one process.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import rclpy
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from std_msgs.msg import String

from .arm_config import ArmConfig
from .launch_args import parse_bool, policy_overrides
from .node import PolicyNode
from .paths import config_path
from .process import ros_arguments as process_arguments
from .ros_io import INSTRUCTION_QOS, spin_until_signal


def ros_arguments(
    arm_yaml: str, checkpoint: str, device: str, dry_run: str, namespace: str, compile: str = "", enclave: str = ""
) -> list[str]:
    """The node's arguments from launch arguments, as arm.launch.py sets them."""
    return process_arguments(arm_yaml, policy_overrides(checkpoint, device, dry_run, compile), namespace, enclave)


class Monitor(Node):
    """Publishes the start-up instruction (if any) and prints a line of progress every few seconds."""

    def __init__(self, policy: PolicyNode, instruction: str | None, topic: str, every: float):
        super().__init__("evo1_bringup_monitor")
        self.policy = policy
        self.publisher = self.create_publisher(String, topic, INSTRUCTION_QOS)
        if instruction:
            self.publisher.publish(String(data=instruction))
        self.create_timer(every, self._report)

    def _report(self) -> None:
        now = self.policy.snapshot()
        latency = now.last_latency * 1e3 if now.last_latency is not None else float("nan")
        print(
            f"[evo1] {now.reason or 'commanding'} | chunks {now.chunks} | trajectories {now.trajectories} | "
            f"last inference {latency:.0f} ms",
            flush=True,
        )


def bringup(
    arm_config: str,
    checkpoint: str,
    device: str,
    dry_run: str,
    namespace: str,
    sim: str,
    episodes: str = "0",
    instruction: str | None = None,
    duration: float | None = None,
    report_every: float = 2.0,
    videos: str | None = None,
    compile: str = "",
    enclave: str = "",
) -> dict[str, Any]:
    """Every node in this one process shares one ROS context, so `enclave` is theirs together."""
    arm_yaml = config_path(arm_config)
    config = ArmConfig.from_yaml(arm_yaml)  # a bad YAML stops here with its problems named
    args = ros_arguments(str(arm_yaml), checkpoint, device, dry_run, namespace, compile, enclave)
    with rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO):
        policy = PolicyNode()
        sim_node, runner = _simulated_arm(config, sim, episodes, instruction, videos)
        nodes: list[Node] = [n for n in (policy, sim_node, runner) if n is not None]
        nodes.append(Monitor(policy, instruction, config.topics.instruction, report_every))
        started = time.monotonic()

        def finished() -> bool:
            return policy.configure_failed or (runner is not None and runner.done)

        autostart = [policy] if policy.get_parameter("autostart").value else []
        try:
            spin_until_signal(nodes, duration=duration, until=finished, autostart=autostart)
            if policy.configure_failed:
                raise RuntimeError(policy.snapshot().last_error)
            return _summary(policy, sim_node, runner, time.monotonic() - started, videos)
        finally:
            for node in nodes:
                node.destroy_node()


def _simulated_arm(
    config: ArmConfig, sim: str, episodes: str, instruction: str | None, videos: str | None
) -> tuple[Node | None, Node | None]:
    """With `sim`, the MuJoCo arm; with episodes and no instruction of the user's, their runner."""
    if not parse_bool(sim):
        return None, None
    from .sim.arm import SimArmNode

    sim_node = SimArmNode(config)
    if int(episodes) <= 0 or instruction:
        return sim_node, None
    from .sim.episodes import EpisodeRunner
    from .sim.seeds import EVAL_SEED_START

    seeds = list(range(EVAL_SEED_START, EVAL_SEED_START + int(episodes)))
    video_dir = Path(videos) if videos else None
    return sim_node, EpisodeRunner(config, seeds, video_dir=video_dir, videos=3 if videos else 0)


def _summary(policy: PolicyNode, sim_node: Any, runner: Any, seconds: float, videos: str | None) -> dict[str, Any]:
    """The run in figures (printing the episodes' summary when there were episodes)."""
    final = policy.snapshot()
    summary: dict[str, Any] = {
        "seconds": round(seconds, 1),
        "chunks": final.chunks,
        "trajectories": final.trajectories,
        "rejected": final.rejected,
        "last_reason": final.reason,
        "inference_path": final.inference_path,
    }
    if sim_node is not None:
        summary["sim_trajectories_followed"] = sim_node.trajectories
    if runner is not None:
        from .sim.episodes import format_summary, summarize

        results = summarize(runner.outcomes)
        print(format_summary(results), flush=True)
        summary["episodes"] = {k: v for k, v in results.items() if k != "outcomes"}
        if videos:
            print(f"[evo1] videos and frame strips of the first episodes: {videos}", flush=True)
    return summary


def instruct(text: str, namespace: str = "", topic: str = "instruction", wait: float = 10.0) -> int:
    """Publish one instruction the way the node expects it (reliable, transient local)."""
    if not text.strip():
        raise ValueError("instruction is empty: say what the robot should do")
    if "\x00" in text:
        # ROS 2 strings end at a NUL: the node would receive a silently truncated instruction.
        raise ValueError(f"instruction contains a NUL character at {text.index(chr(0))}: ROS 2 would cut it there")
    args = ["--ros-args", "-r", f"__ns:=/{namespace.strip('/')}"] if namespace.strip("/") else None
    with rclpy.init(args=args):
        node = rclpy.create_node("evo1_instruct")
        publisher = node.create_publisher(String, topic, INSTRUCTION_QOS)
        deadline = time.monotonic() + wait
        while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
        matched = publisher.get_subscription_count()
        publisher.publish(String(data=text))
        end = time.monotonic() + 1.0  # let reliable delivery (and any late joiner) complete
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.1)
        name = publisher.topic_name
        node.destroy_node()
    if matched == 0:
        print(f"evo1 instruct: published on {name}, but no policy node was listening within {wait:.0f} s")
        return 1
    print(f"evo1 instruct: sent {text!r} on {name} to {matched} subscriber(s)")
    return 0
