"""`evo1 record`: the real command in a process of its own, recording the MuJoCo arm's topics
over DDS; its controls as services and as keys in a terminal; Ctrl-C and kill at random moments;
its bags read by Foxglove's mcap library, ROS 2's own deserializer and bag2dataset."""

from __future__ import annotations

import json
import os
import pty
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from fixtures import lerobot_ready, run_lerobot_check
from mcap.reader import make_reader
from rclpy.node import Node
from rclpy.serialization import deserialize_message
from ros_harness import spin_for
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from evo1_bringup.arm_config import ArmConfig
from evo1_bringup.paths import config_path
from evo1_bringup.record.episode_bag import read_metadata, saved_episodes
from evo1_bringup.sim.arm import SimArmNode
from evo1_msgs.msg import EpisodeEvent
from evo1_msgs.srv import RecordControl
from evo1_policy.data.rosbag import BagSpec, read_bag

CONFIG = ArmConfig.from_yaml(config_path("sim_arm"))
TASK = "touch the red cube"
ROS_TYPES = {
    "sensor_msgs/msg/Image": Image,
    "sensor_msgs/msg/JointState": JointState,
    "std_msgs/msg/String": String,
    "trajectory_msgs/msg/JointTrajectory": JointTrajectory,
}

pytestmark = pytest.mark.ros


def start_record(env: dict[str, str], out: Path, *extra: str, keys: bool = False, stdin=None) -> subprocess.Popen:
    args = [sys.executable, "-m", "evo1_bringup.cli", "record", "--arm-config", "sim_arm", "--task", TASK]
    args += ["--out", str(out), *extra] + ([] if keys else ["--no-keys"])
    return subprocess.Popen(
        args, env=env, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


class Operator(Node):
    """A pedal or GUI: calls the recorder's services and listens to its episode events."""

    def __init__(self, context):
        super().__init__("test_record_operator", context=context)
        controls = ("start_episode", "stop_episode", "rerecord", "mark_success", "mark_failure")
        self.controls = {c: self.create_client(RecordControl, f"/evo1_recorder/{c}") for c in controls}
        self.events: list[EpisodeEvent] = []
        self.create_subscription(EpisodeEvent, "/evo1_recorder/episode_events", self.events.append, 10)


def call(context, nodes, operator: Operator, control: str, task: str = "") -> RecordControl.Response:
    future = operator.controls[control].call_async(RecordControl.Request(task=task))
    assert spin_for(context, nodes, 10.0, future.done), f"no answer to {control}"
    return future.result()


def read_with_mcap(bag: Path) -> dict[str, list]:
    """Every message of the bag through Foxglove's mcap reader, decoded by ROS 2's own deserializer."""
    messages: dict[str, list] = {}
    with (bag / f"{bag.name}.mcap").open("rb") as handle:
        for schema, channel, message in make_reader(handle).iter_messages():
            if schema.name in ROS_TYPES:
                decoded = deserialize_message(message.data, ROS_TYPES[schema.name])
                messages.setdefault(channel.topic, []).append((message.log_time, decoded))
    return messages


def test_silent_topics_are_one_error_naming_each_and_nothing_is_written(tmp_path, ros_env) -> None:
    process = start_record(ros_env, tmp_path / "demos", "--topic-timeout", "1.5")
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 1, output
    errors = [line for line in output.splitlines() if line.startswith("evo1 record:")]
    assert len(errors) == 1, output
    assert "camera front /camera/front/image_raw" in errors[0] and "joint states /joint_states" in errors[0]
    assert "Nothing was written" in errors[0]
    assert saved_episodes(tmp_path / "demos") == [] and not (tmp_path / "demos" / ".partial").exists()


def test_services_drive_episodes_and_every_bag_reads_back(tmp_path, ros_env, ros_context, nodes_in) -> None:
    """Start, re-record, refuse, mark and stop through the services; two whole episodes with their
    metadata and events; each bag read by the mcap library and by bag2dataset's reader."""
    arm = nodes_in(SimArmNode, CONFIG, node_name="test_record_arm")
    operator = nodes_in(Operator)
    nodes = [arm, operator]
    out = tmp_path / "demos"
    process = start_record(ros_env, out, "--wait-for-start", "--episode-time", "0", "--episodes", "2")
    try:
        ready = lambda: all(c.service_is_ready() for c in operator.controls.values())  # noqa: E731
        assert spin_for(ros_context, nodes, 60.0, ready), "the recorder's services never came up"
        assert call(ros_context, nodes, operator, "start_episode", "touch the blue cube").success
        spin_for(ros_context, nodes, 0.5)
        assert call(ros_context, nodes, operator, "rerecord").success  # dropped, recorded again
        refused = call(ros_context, nodes, operator, "stop_episode")
        assert not refused.success and "no episode is recording" in refused.message
        assert call(ros_context, nodes, operator, "start_episode").success  # the --task text
        spin_for(ros_context, nodes, 1.0)
        assert call(ros_context, nodes, operator, "mark_success").success
        first = call(ros_context, nodes, operator, "stop_episode")
        assert first.success and first.episode == 1
        assert call(ros_context, nodes, operator, "start_episode", "touch the green cube").success
        spin_for(ros_context, nodes, 1.0)
        assert call(ros_context, nodes, operator, "mark_failure").success
        assert call(ros_context, nodes, operator, "stop_episode").success
        spin_for(ros_context, nodes, 30.0, lambda: process.poll() is not None)
    finally:
        if process.poll() is None:
            process.kill()
    output = process.communicate(timeout=30)[0]
    assert process.returncode == 0, output
    bags = saved_episodes(out)
    assert [b.name for b in bags] == ["episode_0001", "episode_0002"] and not (out / ".partial").exists()
    metadata = [read_metadata(b) for b in bags]
    assert [(m["task"], m["success"]) for m in metadata] == [(TASK, "true"), ("touch the green cube", "false")]
    assert metadata[0]["arm_config"].endswith("sim_arm.yaml") and "joint1" in metadata[0]["arm_config_yaml"]
    assert metadata[0]["suite_version"][0].isdigit() and json.loads(metadata[0]["dropped_frames"]) == {
        "camera_front": 0
    }
    kinds = [(e.event, e.episode) for e in operator.events]
    assert kinds[:5] == [("start", 1), ("discard", 1), ("start", 1), ("end", 1), ("reset", 2)], kinds
    spec = BagSpec.from_arm_config(CONFIG, image_size=64, action_source="next-state")
    for bag, meta in zip(bags, metadata, strict=True):
        messages = read_with_mcap(bag)
        assert [m.data for _, m in messages["/instruction"]] == [meta["task"]]
        counts = json.loads(meta["counts"])
        assert len(messages["/camera/front/image_raw"]) == counts["camera_front"] >= 20  # 30 Hz for about 1 s
        assert len(messages["/joint_states"]) == counts["joint_states"] >= 20
        stamps = [t for t, _ in messages["/joint_states"]]
        headers = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _, m in messages["/joint_states"]]
        assert stamps == headers, "each message is logged at its header stamp"
        start, end = (int(meta[k].replace(".", "")) for k in ("start", "end"))
        assert start <= stamps[0] and stamps[-1] <= end
        episode = read_bag(bag, spec)
        assert episode.instruction == meta["task"] and episode.length >= 15
        assert np.isfinite(episode.states).all() and episode.images[0].shape[1:] == (64, 64, 3)


def test_keys_in_a_terminal_record_mark_and_finish(tmp_path, ros_env, ros_context, nodes_in) -> None:
    """n starts (with --wait-for-start), s marks success, q keeps the running episode and stops."""
    arm = nodes_in(SimArmNode, CONFIG, node_name="test_record_keys_arm")
    leader, follower = pty.openpty()
    out = tmp_path / "demos"
    process = start_record(ros_env, out, "--wait-for-start", "--episode-time", "0", keys=True, stdin=follower)
    os.close(follower)
    try:
        lines: list[str] = []
        started = lambda: process.poll() is not None or any("keys:" in line for line in lines)  # noqa: E731
        reader = _LineReader(process, lines)
        assert spin_for(ros_context, [arm], 60.0, lambda: reader.poll() or started()), "no key help shown"
        for key, pause in (("n", 1.0), ("s", 0.2), ("q", 0.0)):
            os.write(leader, key.encode())
            spin_for(ros_context, [arm], pause)
        spin_for(ros_context, [arm], 30.0, lambda: process.poll() is not None)
    finally:
        os.close(leader)
        if process.poll() is None:
            process.kill()
    assert process.wait(timeout=10) == 0
    bags = saved_episodes(out)
    assert [b.name for b in bags] == ["episode_0001"], "q keeps the episode that was recording"
    assert read_metadata(bags[0])["success"] == "true"


class _LineReader:
    """Collects a process's output lines without blocking the test's spinning."""

    def __init__(self, process: subprocess.Popen, lines: list[str]):
        self.fd = process.stdout.fileno()
        os.set_blocking(self.fd, False)
        self.lines, self.pending = lines, b""

    def poll(self) -> bool:
        try:
            while chunk := os.read(self.fd, 65536):
                self.pending += chunk
        except BlockingIOError:
            pass
        *complete, self.pending = self.pending.split(b"\n")
        self.lines.extend(line.decode(errors="replace") for line in complete)
        return False


def _interrupted_runs(tmp_path: Path, env: dict[str, str], context, nodes, tries: int) -> list[str]:
    """Start `evo1 record` (1 s episodes, short resets) `tries` times into one folder and stop it
    with Ctrl-C (SIGINT to its process group, as a terminal sends it) at a random moment; returns
    the paths each run said it saved."""
    said: list[str] = []
    out = tmp_path / "demos"
    rng = random.Random(7)
    for _ in range(tries):
        process = start_record(env, out, "--episode-time", "1.0", "--reset-time", "0.2", "--episodes", "100")
        lines: list[str] = []
        reader = _LineReader(process, lines)
        spin_for(context, nodes, 60.0, lambda: reader.poll() or any("recording" in x for x in lines))  # noqa: B023
        spin_for(context, nodes, rng.uniform(0.1, 2.5), reader.poll)
        os.killpg(process.pid, signal.SIGINT)
        spin_for(context, nodes, 20.0, lambda: reader.poll() or process.poll() is not None)  # noqa: B023
        if process.poll() is None:
            process.kill()
        reader.poll()
        said += [line.split("saved ", 1)[1].split(" (")[0] for line in lines if "] saved " in line]
    return said


def _assert_whole(bags: list[Path]) -> None:
    for bag in bags:
        meta = read_metadata(bag)
        messages = read_with_mcap(bag)  # reads every chunk and record to the end
        assert sum(len(v) for v in messages.values()) == sum(json.loads(meta["counts"]).values()) + 1


def test_ctrl_c_at_random_moments_keeps_every_saved_episode_whole(tmp_path, ros_env, ros_context, nodes_in) -> None:
    arm = nodes_in(SimArmNode, CONFIG, node_name="test_record_sigint_arm")
    tries = int(os.environ.get("EVO1_SIGINT_TRIES", "4"))  # the figure in docs/recording.md: 20
    said = _interrupted_runs(tmp_path, ros_env, ros_context, [arm], tries)
    bags = saved_episodes(tmp_path / "demos")
    assert sorted(str(b) for b in bags) == sorted(said), "every episode said saved is there, and nothing else"
    assert not (tmp_path / "demos" / ".partial").exists(), "Ctrl-C leaves nothing half-written"
    _assert_whole(bags)


def test_a_killed_recorder_leaves_only_a_partial_the_next_run_removes(tmp_path, ros_env, ros_context, nodes_in) -> None:
    """kill -9 in the middle of an episode: no episode folder, only the staging folder; the next
    run says so, removes it and records."""
    arm = nodes_in(SimArmNode, CONFIG, node_name="test_record_kill_arm")
    out = tmp_path / "demos"
    process = start_record(ros_env, out, "--episode-time", "5.0", "--episodes", "1")
    lines: list[str] = []
    reader = _LineReader(process, lines)
    spin_for(ros_context, [arm], 60.0, lambda: reader.poll() or any("recording" in x for x in lines))
    spin_for(ros_context, [arm], 0.5)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    assert saved_episodes(out) == [] and (out / ".partial" / "episode_0001").is_dir()
    process = start_record(ros_env, out, "--episode-time", "0.5", "--episodes", "1")
    lines.clear()
    reader = _LineReader(process, lines)
    spin_for(ros_context, [arm], 60.0, lambda: reader.poll() or process.poll() is not None)
    reader.poll()
    assert any("an earlier run did not finish" in line for line in lines), lines
    assert not (out / ".partial").exists() and [b.name for b in saved_episodes(out)] == ["episode_0001"]
    _assert_whole(saved_episodes(out))


def test_lerobot_format_appends_across_runs(tmp_path, ros_env, ros_context, nodes_in) -> None:
    from evo1_policy.data.lerobot import read_lerobot

    arm = nodes_in(SimArmNode, CONFIG, node_name="test_record_lerobot_arm")
    out = tmp_path / "dataset"
    for episodes in (2, 1):
        process = start_record(
            ros_env, out, "--format", "lerobot", "--episodes", str(episodes), "--episode-time", "1.0",
            "--reset-time", "0.1", "--action-source", "next-state",
        )  # fmt: skip
        spin_for(ros_context, [arm], 120.0, lambda: process.poll() is not None)  # noqa: B023
        assert process.wait(timeout=10) == 0, process.stdout.read()
    dataset = read_lerobot(out)
    assert len(dataset) == 3 and {e.instruction for e in dataset} == {TASK}
    assert all(e.length >= 15 for e in dataset) and len(saved_episodes(Path(f"{out}-bags"))) == 3
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 3
    # LeRobot 0.4.4 itself, where scripts/setup_lerobot.sh could install it (test_lerobot_compat
    # skips with the reason where it could not)
    if lerobot_ready():
        lerobot = run_lerobot_check("--one", str(out))
        assert lerobot["episodes"] == 3 and lerobot["rows"] == lerobot["frames"] == sum(e.length for e in dataset)
        assert lerobot["tasks"] == [TASK] and lerobot["last_episode_index"] == 2
        assert {"observation.state", "action", "observation.images.front"} <= set(lerobot["features"])


@pytest.mark.slow
def test_the_loop_closes_record_compare_train_and_score(tmp_path, ros_env, monkeypatch) -> None:
    """The whole loop in small: the scripted operator (the expert, driving evo1 record's services)
    is recorded by evo1 record through DDS; that decodes to the same training samples as the
    runner's own bags of the same run; `evo1 train` fine-tunes the shipped policy on it; sim-eval
    scores the result in closed loop (scripts/reproduce/record_loop.sh is the full size)."""
    from evo1_bringup.check.compare_bags import compare_folders
    from evo1_bringup.sim.evaluate import sim_eval, sim_record
    from evo1_bringup.sim.seeds import VALIDATION_SEED_START

    for key, value in ros_env.items():
        monkeypatch.setenv(key, value)
    recorded = sim_record(
        str(tmp_path / "recorded"), episodes=3, seed_start=40, through_recorder=True, direct_copy=str(tmp_path / "own")
    )
    assert len(recorded) == 3
    assert all(read_metadata(b)["success"] == "true" for b in recorded), "the expert's outcome is marked"
    result = compare_folders(tmp_path / "own", tmp_path / "recorded", BagSpec.from_arm_config(CONFIG))
    assert result["instructions_same"] and result["largest_length_difference"] <= 1
    assert result["largest"]["action_max_diff_within_one_step"] < 1e-6
    assert result["largest"]["state_max_diff_within_one_step"] < 0.05
    assert result["largest"]["frame_max_mean_abs_diff_within_one_step"] < 2.0
    train = [sys.executable, "-m", "evo1_bringup.cli", "train", "config/train/train_sim.yaml"]
    train += ["model.init_checkpoint=sim_touch", "model.internvl_hf=", "train.stages=[2]", "train.stage2_steps=5"]
    train += ["train.batch_size=4", "train.warmup_steps=1", "train.lr=1e-5", "train.device=cpu"]
    train += [f'data.bags=["{tmp_path}/recorded/episode_*"]', f"output={tmp_path}/finetuned"]
    done = subprocess.run(train, env=ros_env, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "data: 3 episodes" in done.stdout + done.stderr, "trained on what evo1 record wrote"
    final = tmp_path / "finetuned" / "final"
    summary = sim_eval(str(final), 2, str(tmp_path / "eval"), VALIDATION_SEED_START, videos=0, device="cpu")
    assert summary["episodes"] == 2 and summary["success_rate"] >= 0.5, summary


def test_takeovers_hand_the_arm_to_the_operator_and_back_and_are_marked(
    tmp_path, ros_env, ros_context, nodes_in
) -> None:
    """t / ~/takeover puts the running policy node into dry run; the operator's commands on the
    trajectory topic move the arm; ~/release gives it back. The span is in the episode's metadata,
    read_bag marks its steps, and training can take those steps alone or weighted."""
    from rclpy.parameter_client import AsyncParameterClient
    from ros_harness import start_node, stop_node

    from evo1_bringup.ros_io import COMMAND_QOS, trajectory_message
    from evo1_policy.training.trainer import Windows

    arm = nodes_in(SimArmNode, CONFIG, node_name="test_record_takeover_arm")
    operator = nodes_in(Operator)
    for control in ("takeover", "release"):
        operator.controls[control] = operator.create_client(RecordControl, f"/evo1_recorder/{control}")
    teleop = operator.create_publisher(JointTrajectory, CONFIG.topics.trajectory, COMMAND_QOS)
    nodes = [arm, operator]
    policy = start_node(ros_env, model__preset="evo1-tiny")
    out = tmp_path / "demos"
    recorder = start_record(ros_env, out, "--wait-for-start", "--episode-time", "0", "--episodes", "1", "--takeovers")
    try:
        policy_params = AsyncParameterClient(operator, "evo1_policy_node")
        ready = lambda: all(c.service_is_ready() for c in operator.controls.values())  # noqa: E731
        assert spin_for(ros_context, nodes, 90.0, ready), "the recorder's services never came up"
        assert spin_for(ros_context, nodes, 90.0, policy_params.services_are_ready), "no policy node"
        refused = call(ros_context, nodes, operator, "release")
        assert not refused.success and "the policy has the arm already" in refused.message
        assert call(ros_context, nodes, operator, "start_episode").success
        spin_for(ros_context, nodes, 0.5)
        assert call(ros_context, nodes, operator, "takeover").success
        took = lambda: any(e.event == "takeover" for e in operator.events)  # noqa: E731
        assert spin_for(ros_context, nodes, 20.0, took), "the policy node never confirmed dry run"
        home = arm.follower.position.copy()
        for i in range(20):  # the operator drives joint1 away, 0.05 rad per step from where it is
            target = home.copy()
            target[0] += 0.05 * (i + 1)
            msg = trajectory_message(CONFIG.trajectory_names, target[None], target, np.array([0.05]))
            msg.header.stamp = operator.get_clock().now().to_msg()
            teleop.publish(msg)
            spin_for(ros_context, nodes, 0.05)
        assert arm.follower.position[0] > home[0] + 0.3, "the operator's commands moved the arm"
        assert call(ros_context, nodes, operator, "release").success
        released = lambda: any(e.event == "release" for e in operator.events)  # noqa: E731
        assert spin_for(ros_context, nodes, 20.0, released), "the policy node never left dry run"
        spin_for(ros_context, nodes, 0.6)
        assert call(ros_context, nodes, operator, "stop_episode").success
        spin_for(ros_context, nodes, 30.0, lambda: recorder.poll() is not None)
    finally:
        if recorder.poll() is None:
            recorder.kill()
        stop_node(policy)
    assert recorder.wait(timeout=10) == 0, recorder.stdout.read()
    bag = saved_episodes(out)[0]
    meta = read_metadata(bag)
    spans = json.loads(meta["takeovers"])
    start, end = (int(meta[k].replace(".", "")) for k in ("start", "end"))
    assert len(spans) == 1 and start <= spans[0][0] < spans[0][1] <= end
    assert 0.9e9 < spans[0][1] - spans[0][0] < 10e9, "about the second the operator drove"
    episode = read_bag(bag, BagSpec.from_arm_config(CONFIG, image_size=32))
    taken = int(episode.takeover.sum())
    assert 10 <= taken < episode.length, "the operator's steps are marked, the policy's after the release are not"
    assert len(Windows([episode], 4, "only").index) == taken
    assert len(Windows([episode], 4, "weight", 3.0).index) == episode.length + 2 * taken
    assert len(Windows([episode], 4).index) == episode.length
