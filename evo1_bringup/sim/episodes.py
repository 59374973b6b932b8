"""Scored episodes on the simulated arm, over ROS 2: the loop behind `evo1 sim-eval`,
`evo1 sim-record` and `evo1 bringup --episodes N`.

For each seed, the runner resets the driver (the policy node's `reset` service), starts an episode
on the simulator (`sim/start_episode`), publishes the instruction (the task's own, or a wrong one
that names another cube), and waits for the simulator's `end` event. The driver is either the
policy node (another node, maybe another process) or the scripted expert, which this node runs
itself and which then publishes JointTrajectory on the arm's command topic exactly as the policy
node does. With `record_dir`, each episode is written as a ROS 2 bag (mcap) of the topics a user
would record on a real arm; with `video_dir`, the first episodes' camera frames become mp4 files.
With `recorder`, the runner drives a running `evo1 record` through its services as an operator's
pedal would (start at the episode's start with its task, mark success or failure, stop at its end):
the scripted operator whose demonstrations `evo1 record` records through DDS.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from rclpy.serialization import serialize_message
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from evo1_msgs.msg import EpisodeEvent
from evo1_msgs.srv import RecordControl, Reset, StartEpisode
from evo1_policy.images import decode_image_msg
from evo1_policy.joints import JointStateError, joint_positions

from ..arm_config import NODE_NAME, ArmConfig
from ..ros_io import COMMAND_QOS, INSTRUCTION_QOS, stamp_seconds, trajectory_message
from .arm import EVENT_QOS, EVENTS_TOPIC, START_SERVICE
from .expert import ReachExpert
from .scene import CUBE_COLORS, Placement, Scene, instruction_for, surface_distance

EXPERT_LOOKAHEAD = 4  # points per expert trajectory (replaced every control step, like the policy's)
SETTLE = 0.3  # seconds between resetting the driver and starting the next episode


@dataclass
class EpisodeOutcome:
    episode: int
    seed: int
    task: str  # the simulator's instruction
    target: str  # the cube it names
    instruction: str  # what the driver was told (the task, or a wrong one)
    instructed: str  # the cube that names
    touched: str  # "" = none (timed out)
    success: bool  # touched the task's cube
    duration: float
    final_distance: float  # fingertip to the task's cube (surface), at the end
    instructed_distance: float  # fingertip to the instructed cube (the same one unless told wrong)
    nearest_distance: float  # fingertip to the nearest cube, whichever it is


def wrong_color(target: str, seed: int) -> str:
    others = [c for c in CUBE_COLORS if c != target]
    return others[seed % len(others)]


class EpisodeRunner(Node):
    def __init__(
        self,
        config: ArmConfig,
        seeds: list[int],
        driver: str = "policy",
        wrong_instruction: bool = False,
        record_dir: Path | None = None,
        video_dir: Path | None = None,
        videos: int = 0,
        policy_node: str = NODE_NAME,
        node_name: str = "evo1_sim_episodes",
        targets: list[str] | None = None,
        recorder: str = "",
    ):
        super().__init__(node_name)
        if driver not in ("policy", "expert"):
            raise ValueError(f"driver must be 'policy' or 'expert', not {driver!r}")
        self.config = config
        self.seeds = list(seeds)
        self.targets = list(targets) if targets else [""] * len(self.seeds)  # "" = the seed's own target
        self.driver = driver
        self.wrong_instruction = wrong_instruction
        self.record_dir, self.video_dir, self.videos = record_dir, video_dir, videos
        self.dt = 1.0 / config.control.rate_hz
        self.outcomes: list[EpisodeOutcome] = []
        self.bags: list[Path] = []
        self.instruction_pub = self.create_publisher(String, config.topics.instruction, INSTRUCTION_QOS)
        self.trajectory_pub = self.create_publisher(JointTrajectory, config.topics.trajectory, COMMAND_QOS)
        self.start_client = self.create_client(StartEpisode, START_SERVICE)
        self.reset_client = self.create_client(Reset, f"{policy_node}/reset")
        self.recorder_clients = {
            control: self.create_client(RecordControl, f"{recorder}/{control}")
            for control in ("start_episode", "stop_episode", "mark_success", "mark_failure")
            if recorder
        }
        self.create_subscription(EpisodeEvent, EVENTS_TOPIC, self._on_event, EVENT_QOS)
        self.create_subscription(JointState, config.topics.joint_states, self._on_joint_state, qos_profile_sensor_data)
        for name, topic in zip(config.cameras.names, config.cameras.topics, strict=True):
            callback = partial(self._on_image, name)
            self.create_subscription(Image, topic, callback, qos_profile_sensor_data)
        self.expert_scene = Scene([]) if driver == "expert" else None
        self.state = "idle"
        self.next_action_at = time.monotonic()
        self.pending_episode = -1
        self.start_events: dict[int, EpisodeEvent] = {}
        self.current: dict[str, Any] = {}
        self.joints: JointState | None = None
        self.expert: ReachExpert | None = None
        self.plan: list[np.ndarray] = []
        self.last_command: np.ndarray | None = None
        self.writer: Any = None
        self.connections: dict[str, Any] = {}
        self.frames: list[np.ndarray] = []
        self.create_timer(self.dt, self._step)

    @property
    def done(self) -> bool:
        return len(self.outcomes) >= len(self.seeds)

    # ------------------------------------------------------------------ the episode loop
    def _step(self) -> None:
        now = time.monotonic()
        if self.state == "idle" and not self.done and now >= self.next_action_at:
            if self.driver == "policy":
                if not self.reset_client.service_is_ready():
                    return  # the policy node is not up yet
                self.reset_client.call_async(Reset.Request())
            if not self.start_client.service_is_ready():
                return  # nor the simulator
            if not all(client.service_is_ready() for client in self.recorder_clients.values()):
                return  # nor the recorder
            self.state, self.next_action_at = "settling", now + SETTLE
        elif self.state == "settling" and now >= self.next_action_at:
            index = len(self.outcomes)
            request = StartEpisode.Request(seed=self.seeds[index], target=self.targets[index])
            self.start_client.call_async(request).add_done_callback(self._on_started)
            self.state = "starting"
        elif self.state == "running" and self.driver == "expert":
            self._expert_step()

    def _on_started(self, future: Any) -> None:
        response = future.result()
        if response is None or not response.success:
            self.get_logger().error(f"the simulator refused the episode: {getattr(response, 'message', 'no answer')}")
            self.state = "idle"
            return
        self.pending_episode = response.episode
        self._begin_if_started()

    def _on_event(self, event: EpisodeEvent) -> None:
        # The start event and the service's answer may arrive in either order.
        if event.event == "start":
            self.start_events[event.episode] = event
            self._begin_if_started()
        elif event.event == "end" and self.state == "running" and event.episode == self.pending_episode:
            self._finish(event)

    def _begin_if_started(self) -> None:
        if self.state == "starting" and self.pending_episode in self.start_events:
            self._begin(self.start_events.pop(self.pending_episode))
            self.start_events.clear()

    def _begin(self, event: EpisodeEvent) -> None:
        seed = int(event.seed)
        instructed = wrong_color(event.target, seed) if self.wrong_instruction else event.target
        instruction = instruction_for(instructed)
        stamp = stamp_seconds(event)
        self.current = {"event": event, "instruction": instruction, "instructed": instructed, "stamp": stamp}
        self.frames = []
        if self.record_dir is not None:
            self._open_bag(seed, event.target)
        if self.driver == "expert":
            positions = np.asarray(event.object_positions).reshape(-1, 3)
            cubes = {name: p[:2] for name, p in zip(event.object_names, positions, strict=True)}
            self.expert_placement = Placement(cubes, instructed)
            self.expert, self.plan, self.last_command = None, [], None
        self.state = "running"
        self._tell_recorder("start_episode", instruction, event.header.stamp)
        message = String(data=instruction)
        self.instruction_pub.publish(message)
        self._record("instruction", message, stamp)

    def _finish(self, event: EpisodeEvent) -> None:
        info = self.current
        outcome = EpisodeOutcome(
            episode=len(self.outcomes) + 1,
            seed=int(event.seed),
            task=event.instruction,
            target=event.target,
            instruction=info["instruction"],
            instructed=info["instructed"],
            touched=event.touched,
            success=bool(event.success),
            duration=round(float(event.duration), 2),
            final_distance=round(float(event.final_distance), 4),
            instructed_distance=round(_surface_distance(event, info["instructed"]), 4),
            nearest_distance=round(min(_surface_distance(event, name) for name in event.object_names), 4),
        )
        self.outcomes.append(outcome)
        self._tell_recorder("mark_success" if outcome.success else "mark_failure")
        self._tell_recorder("stop_episode")
        if self.driver == "policy" and self.reset_client.service_is_ready():
            self.reset_client.call_async(Reset.Request())  # hold until the next episode
        self.expert = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.video_dir is not None and len(self.outcomes) <= self.videos and self.frames:
            self._save_video(outcome)
        print(format_outcome(outcome, len(self.seeds)), flush=True)
        self.state, self.next_action_at = "idle", time.monotonic()

    def _tell_recorder(self, control: str, task: str = "", start: Any = None) -> None:
        """A control to `evo1 record`; a start from the episode's own start stamp (the recorder keeps
        its pre-roll), so that a request's way through DDS costs the recording nothing."""
        if control in self.recorder_clients:
            request = RecordControl.Request(task=task)
            if start is not None:
                request.start = start
            self.recorder_clients[control].call_async(request)

    # ------------------------------------------------------------------ the expert driver
    def _expert_step(self) -> None:
        joints = self.joints
        if joints is None:
            return
        stamp = stamp_seconds(joints)
        if self.expert is None:
            if stamp < self.current["stamp"]:
                return  # the arm's state from before the reset
            try:
                start = joint_positions(list(joints.name), list(joints.position), self.config.action_names)
            except JointStateError as error:
                self.get_logger().error(str(error))
                return
            self.expert = ReachExpert(self.expert_scene, self.expert_placement, start, self.dt)
            self.last_command = start
        if self.plan:
            self.last_command = self.plan.pop(0)
        while len(self.plan) < EXPERT_LOOKAHEAD:
            self.plan.append(self.expert.next_positions())
        plan = np.stack(self.plan)
        times = np.arange(1, len(plan) + 1) * self.dt
        msg = trajectory_message(self.config.trajectory_names, plan, self.last_command, times)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.trajectory_pub.publish(msg)
        self._record("trajectory", msg)

    # ------------------------------------------------------------------ recording
    def _on_joint_state(self, msg: JointState) -> None:
        self.joints = msg
        self._record("joint_states", msg)

    def _on_image(self, name: str, msg: Image) -> None:
        self._record(f"camera_{name}", msg)
        keep = self.video_dir is not None and len(self.outcomes) < self.videos and self.state == "running"
        if keep and name == self.config.cameras.names[0]:
            self.frames.append(decode_image_msg(msg))

    def _open_bag(self, seed: int, target: str) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        from evo1_policy.data.rosbag import typestore

        path = self.record_dir / f"episode_seed{seed:05d}_{target}"
        if path.exists():
            raise FileExistsError(f"{path} exists: record into an empty folder")
        self.record_dir.mkdir(parents=True, exist_ok=True)
        self.writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        t = self.config.topics
        recorded = {  # key -> (topic, type): what a user records on a real arm
            "instruction": (t.instruction, "std_msgs/msg/String"),
            "joint_states": (t.joint_states, "sensor_msgs/msg/JointState"),
            "trajectory": (t.trajectory, "trajectory_msgs/msg/JointTrajectory"),
        }
        for name, topic in zip(self.config.cameras.names, self.config.cameras.topics, strict=True):
            recorded[f"camera_{name}"] = (topic, "sensor_msgs/msg/Image")
        store = typestore()
        self.connections = {
            key: self.writer.add_connection(f"/{topic.lstrip('/')}", msgtype, typestore=store)
            for key, (topic, msgtype) in recorded.items()
        }
        self.bags.append(path)

    def _record(self, key: str, msg: Any, stamp: float | None = None) -> None:
        if self.writer is None or self.state != "running":
            return
        if stamp is None:
            stamp = stamp_seconds(msg)
            if stamp < self.current["stamp"]:
                return  # published before the reset
        self.writer.write(self.connections[key], int(stamp * 1e9), serialize_message(msg))

    def _save_video(self, outcome: EpisodeOutcome) -> None:
        import cv2

        from evo1_policy.data.video import write_mp4

        self.video_dir.mkdir(parents=True, exist_ok=True)
        verdict = "success" if outcome.success else "failure"
        stem = f"episode{outcome.episode:03d}_seed{outcome.seed}_{outcome.target}_{verdict}"
        write_mp4(self.video_dir / f"{stem}.mp4", self.frames, 30.0, lossless=False)
        strip = [self.frames[int(i)] for i in np.linspace(0, len(self.frames) - 1, 4)]
        cv2.imwrite(str(self.video_dir / f"{stem}.png"), np.hstack(strip)[..., ::-1])

    def destroy_node(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.expert_scene is not None:
            self.expert_scene.close()
        super().destroy_node()


def _surface_distance(event: EpisodeEvent, name: str) -> float:
    centers = dict(zip(event.object_names, np.asarray(event.object_positions).reshape(-1, 3), strict=True))
    return surface_distance(np.asarray(event.tip_position), centers[name])


def format_outcome(outcome: EpisodeOutcome, total: int) -> str:
    result = f"touched the {outcome.touched} cube" if outcome.touched else "touched nothing (timeout)"
    told = "" if outcome.instruction == outcome.task else f" (told {outcome.instruction!r})"
    verdict = "SUCCESS" if outcome.success else "failure"
    return (
        f"[sim] episode {outcome.episode}/{total} seed {outcome.seed}: {outcome.task!r}{told} -> {result} "
        f"in {outcome.duration:.1f} s: {verdict}"
    )


def summarize(outcomes: list[EpisodeOutcome]) -> dict[str, Any]:
    """Success rate overall and per instruction; how often the instructed cube was touched."""
    per_task: dict[str, list[bool]] = defaultdict(list)
    for o in outcomes:
        per_task[o.task].append(o.success)
    n = max(len(outcomes), 1)
    return {
        "episodes": len(outcomes),
        "success_rate": sum(o.success for o in outcomes) / n,
        "touched_instructed_cube_rate": sum(o.touched == o.instructed for o in outcomes) / n,
        "timeouts": sum(not o.touched for o in outcomes),
        "touched": dict(Counter(o.touched or "nothing" for o in outcomes)),
        "per_instruction": {
            task: {"episodes": len(v), "success_rate": sum(v) / len(v)} for task, v in sorted(per_task.items())
        },
        "outcomes": [asdict(o) for o in outcomes],
    }


def format_summary(summary: dict[str, Any], label: str = "") -> str:
    lines = [
        f"[sim] {label}{summary['episodes']} episodes: success {summary['success_rate']:.0%}, "
        f"touched the instructed cube {summary['touched_instructed_cube_rate']:.0%}, "
        f"timeouts {summary['timeouts']}"
    ]
    for task, figures in summary["per_instruction"].items():
        lines.append(f"[sim]   {task!r}: {figures['success_rate']:.0%} of {figures['episodes']}")
    return "\n".join(lines)


def main(args: list[str] | None = None) -> int:
    """evo1_sim_episodes: run scored episodes against a running simulator and policy node."""
    import argparse

    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from ..ros_io import spin_until_signal
    from .seeds import EVAL_SEED_START

    parser = argparse.ArgumentParser(description="Scored episodes on the simulated arm")
    parser.add_argument("--arm-config", default="sim_arm")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed-start", type=int, default=EVAL_SEED_START)
    parser.add_argument("--wrong-instruction", action="store_true")
    parser.add_argument("--driver", default="policy", choices=["policy", "expert"], help="who moves the arm")
    parser.add_argument("--recorder", default="", help="drive this `evo1 record` node's services (e.g. evo1_recorder)")
    known, ros_args = parser.parse_known_args(args)
    config = ArmConfig.named(known.arm_config)
    seeds = list(range(known.seed_start, known.seed_start + known.episodes))
    with rclpy.init(args=ros_args, signal_handler_options=SignalHandlerOptions.NO):
        runner = EpisodeRunner(
            config, seeds, known.driver, known.wrong_instruction, recorder=known.recorder.rstrip("/")
        )
        spin_until_signal([runner], until=lambda: runner.done)
        print(format_summary(summarize(runner.outcomes)), flush=True)
        runner.destroy_node()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
