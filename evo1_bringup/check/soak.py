"""`evo1 soak`: the shipped policy on the MuJoCo arm, episodes back to back, for an hour (or as
long as asked), measured per window from outside over DDS.

The simulator and the policy node run as processes of their own (as `evo1 sim-eval` starts them);
this process runs the episodes (validation seeds) and listens. Per window (default 5 minutes): the
node's resident memory, per-chunk inference latency (from `~/action_chunk`), the control period
from the trajectories' stamps, the status rate, inputs the node refused, episodes and successes.
At the end: memory growth from the first window to the last, the drift of the p99 control period,
and whether the node is still alive. Torch-free: the model runs only in the node's process.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from trajectory_msgs.msg import JointTrajectory

from evo1_msgs.msg import ActionChunk, PolicyStatus

from ..arm_config import NODE_NAME, ArmConfig
from ..launch_args import policy_overrides
from ..paths import config_path
from ..process import start_policy_node
from ..ros_io import COMMAND_QOS, isolate_domain, stamp_seconds
from ..sim.episodes import EpisodeRunner
from ..sim.evaluate import simulator_process, stop_processes
from ..sim.seeds import VALIDATION_SEED_START
from .bench_node import node_rss_mb


class Listener(Node):
    """What the node publishes, with this process's monotonic time of arrival."""

    def __init__(self, config: ArmConfig) -> None:
        super().__init__("evo1_soak_listener")
        self.chunks: list[tuple[float, float]] = []  # (arrival, inference latency)
        self.stamps: list[tuple[float, float]] = []  # (arrival, trajectory stamp)
        self.statuses: list[tuple[float, PolicyStatus]] = []
        self.create_subscription(ActionChunk, f"{NODE_NAME}/action_chunk", self._on_chunk, 10)
        self.create_subscription(PolicyStatus, f"{NODE_NAME}/status", self._on_status, 10)
        self.create_subscription(JointTrajectory, config.topics.trajectory, self._on_trajectory, COMMAND_QOS)

    def _on_chunk(self, msg: ActionChunk) -> None:
        self.chunks.append((time.monotonic(), msg.inference_latency))

    def _on_status(self, msg: PolicyStatus) -> None:
        self.statuses.append((time.monotonic(), msg))

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        self.stamps.append((time.monotonic(), stamp_seconds(msg)))


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def window_row(listener: Listener, episodes: list, start: float, end: float, rss_mb: float) -> dict[str, Any]:
    """The figures of one window [start, end) (monotonic seconds); `episodes`: the outcomes of the
    episodes that ended in it."""
    latencies = [lat for t, lat in listener.chunks if start <= t < end]
    stamps = [s for t, s in listener.stamps if start <= t < end]
    statuses = [m for t, m in listener.statuses if start <= t < end]
    last = statuses[-1] if statuses else None
    return {
        "start_s": start,
        "rss_mb": rss_mb,
        "chunks": len(latencies),
        "inference_ms_p50": 1e3 * _percentile(latencies, 50),
        "inference_ms_p95": 1e3 * _percentile(latencies, 95),
        "trajectories": len(stamps),
        # the node's own control timer (its status: p99 of its recent ticks), worst in the window;
        # gaps between trajectories are holds between episodes, not the loop's period
        "control_period_ms_p99": 1e3 * max((m.control_period_p99 for m in statuses), default=float("nan")),
        "status_hz": len(statuses) / (end - start),
        "rejected_total": int(sum(last.reject_counts)) if last else 0,
        "episodes": len(episodes),
        "successes": sum(1 for o in episodes if o.success),
    }


def soak(
    checkpoint: str = "sim_touch",
    duration: float = 3600.0,
    window: float = 300.0,
    out: str = "runs/soak",
    episode_timeout: float = 8.0,
    log: Any = print,
) -> dict[str, Any]:
    """Run episodes back to back for `duration` seconds; a row of figures every `window` seconds."""
    arm_yaml = config_path("sim_arm")
    config = ArmConfig.from_yaml(arm_yaml)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    isolate_domain()
    policy_log = out_dir / "policy.log"
    node = start_policy_node(arm_yaml, policy_overrides(checkpoint, "auto", "false"), policy_log)
    simulator = simulator_process(arm_yaml, VALIDATION_SEED_START, episode_timeout, out_dir)
    rows: list[dict[str, Any]] = []
    seeds = list(range(VALIDATION_SEED_START, VALIDATION_SEED_START + int(duration)))  # more than can run
    try:
        with rclpy.init():
            runner, listener = EpisodeRunner(config, seeds, "policy"), Listener(config)
            executor = SingleThreadedExecutor()
            executor.add_node(runner)
            executor.add_node(listener)
            began, counted = time.monotonic(), 0
            for k in range(max(1, round(duration / window))):
                start = began + k * window
                while time.monotonic() < start + window and node.poll() is None and simulator[1].poll() is None:
                    executor.spin_once(timeout_sec=0.05)
                alive = node.poll() is None
                ended, counted = runner.outcomes[counted:], len(runner.outcomes)
                rows.append(window_row(listener, ended, start, time.monotonic(), node_rss_mb(node.pid) if alive else 0))
                log(format_row(k, rows[-1]))
                if not alive or simulator[1].poll() is not None:
                    break
            executor.shutdown()
            runner.destroy_node()
            listener.destroy_node()
    finally:
        alive = node.poll() is None
        stop_processes([node, simulator[1]])
    summary = summarize_soak(rows, alive, checkpoint, duration, window)
    (out_dir / "soak.json").write_text(json.dumps(summary, indent=2) + "\n")
    log(format_soak(summary))
    return summary


def summarize_soak(rows: list[dict[str, Any]], alive: bool, checkpoint: str, duration: float, window: float) -> dict:
    first, last = rows[0], rows[-1]
    p99 = [r["control_period_ms_p99"] for r in rows]
    return {
        "checkpoint": checkpoint,
        "seconds": duration,
        "window_s": window,
        "windows": rows,
        "node_alive_at_end": alive,
        "rss_growth_pct": 100.0 * (last["rss_mb"] - first["rss_mb"]) / first["rss_mb"],
        "control_period_p99_ms_range": [min(p99), max(p99)],
        "episodes": sum(r["episodes"] for r in rows),
        "successes": sum(r["successes"] for r in rows),
    }


def format_row(k: int, r: dict[str, Any]) -> str:
    return (
        f"[soak] window {k + 1}: RSS {r['rss_mb']:.0f} MB | inference p50/p95 {r['inference_ms_p50']:.0f}/"
        f"{r['inference_ms_p95']:.0f} ms ({r['chunks']} chunks) | control period p99 "
        f"{r['control_period_ms_p99']:.1f} ms | {r['trajectories']} trajectories | status {r['status_hz']:.2f} Hz | "
        f"refused inputs {r['rejected_total']} | episodes {r['episodes']} ({r['successes']} succeeded)"
    )


def format_soak(s: dict[str, Any]) -> str:
    low, high = s["control_period_p99_ms_range"]
    return (
        f"[soak] {s['seconds'] / 60:.0f} min, {len(s['windows'])} windows: RSS growth {s['rss_growth_pct']:+.2f} % "
        f"(first window to last), control period p99 {low:.1f}-{high:.1f} ms across windows, "
        f"{s['episodes']} episodes ({s['successes']} succeeded), node alive at the end: {s['node_alive_at_end']}"
    )
