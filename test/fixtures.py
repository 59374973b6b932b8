"""Small demonstration data written by the tests themselves: bags (sqlite3 and mcap) and
LeRobot datasets, all holding the same known episodes; and weights under the reference
implementation's names, written independently of evo1_policy.checkpoint's mapping."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import torch
from rosbags.rosbag2 import StoragePlugin, Writer

from evo1_policy.data.episode import Episode
from evo1_policy.data.rosbag import BagSpec, typestore

JOINTS = ["joint1", "joint2", "joint3"]
SPEC = BagSpec(
    camera_names=["front"],
    camera_topics=["camera/front/image_raw"],
    joint_names=JOINTS,
    joint_states_topic="joint_states",
    command_topic="arm_controller/joint_trajectory",
    instruction_topic="instruction",
    rate_hz=10.0,
)


def known_episode(index: int, steps: int = 60, size: int = 32, instruction: str = "touch the red block") -> Episode:
    """A smooth motion whose picture encodes the step (so frames can be told apart)."""
    t = np.arange(steps) / SPEC.rate_hz
    phase = index * 0.7
    states = np.stack([0.5 * np.sin(t + phase), 0.3 * np.cos(0.5 * t + phase), 0.1 * t], axis=1)
    actions = np.vstack([states[1:], states[-1:] + (states[-1:] - states[-2:-1])])  # next state, extrapolated
    images = np.zeros((steps, size, size, 3), np.uint8)
    for k in range(steps):
        images[k, :, :, 0] = (k * 4) % 256
        images[k, : size // 2, :, 1] = (index * 50) % 256
        images[k, :, k % size, 2] = 255
    return Episode("known", index, instruction, SPEC.rate_hz, ["front"], [images], states, actions, JOINTS, JOINTS, t)


def write_arm_config(path: Path) -> Path:
    """An arm config naming the topics, joints and rate of the bags write_bag makes."""
    path.write_text(
        "evo1_policy_node:\n  ros__parameters:\n    joints:\n      names: [joint1, joint2, joint3]\n"
        "      lower_limits: [-1.0, -1.0, -1.0]\n      upper_limits: [1.0, 1.0, 8.0]\n"
        "      max_velocity: [1.0, 1.0, 1.0]\n    control:\n      rate_hz: 10.0\n"
    )
    return path


def write_bag(
    path: Path, episode: Episode, storage: str, start: float = 1000.0, offset: float = 0.013, commands: bool = True
) -> Path:
    """The episode as a live run would record it: images and joint states stamped a little after
    each step, trajectories (first point one step ahead; not without `commands`) and the instruction."""
    store = typestore()
    t = store.types
    Header, Time = t["std_msgs/msg/Header"], t["builtin_interfaces/msg/Time"]
    Duration = t["builtin_interfaces/msg/Duration"]
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    dt = 1.0 / SPEC.rate_hz

    def stamp(seconds: float):
        return Time(sec=int(seconds), nanosec=round((seconds % 1) * 1e9))

    with Writer(path, version=9, storage_plugin=plugin) as writer:
        image_c = writer.add_connection("/camera/front/image_raw", "sensor_msgs/msg/Image", typestore=store)
        joint_c = writer.add_connection("/joint_states", "sensor_msgs/msg/JointState", typestore=store)
        traj_c = writer.add_connection(
            "/arm_controller/joint_trajectory", "trajectory_msgs/msg/JointTrajectory", typestore=store
        )
        text_c = writer.add_connection("/instruction", "std_msgs/msg/String", typestore=store)
        writer.write(
            text_c,
            int((start - 0.5) * 1e9),
            store.serialize_cdr(t["std_msgs/msg/String"](data=episode.instruction), "std_msgs/msg/String"),
        )
        for k in range(episode.length):
            now = start + k * dt + offset
            header = Header(stamp=stamp(now), frame_id="")
            frame = episode.images[0][k]
            image = t["sensor_msgs/msg/Image"](
                header=header, height=frame.shape[0], width=frame.shape[1], encoding="rgb8", is_bigendian=0,
                step=frame.shape[1] * 3, data=frame.reshape(-1).copy(),
            )  # fmt: skip
            writer.write(image_c, int(now * 1e9), store.serialize_cdr(image, "sensor_msgs/msg/Image"))
            joints = t["sensor_msgs/msg/JointState"](
                header=header, name=["extra_joint", *JOINTS], position=np.r_[9.0, episode.states[k]],
                velocity=np.zeros(0), effort=np.zeros(0),
            )  # fmt: skip
            writer.write(joint_c, int(now * 1e9), store.serialize_cdr(joints, "sensor_msgs/msg/JointState"))
            point = t["trajectory_msgs/msg/JointTrajectoryPoint"](
                positions=episode.actions[k], velocities=np.zeros(3), accelerations=np.zeros(0), effort=np.zeros(0),
                time_from_start=Duration(sec=0, nanosec=int(dt * 1e9)),
            )  # fmt: skip
            cmd_time = now + 0.002
            traj = t["trajectory_msgs/msg/JointTrajectory"](
                header=Header(stamp=stamp(cmd_time - offset - 0.002 + 0.0), frame_id=""),
                joint_names=JOINTS,
                points=[point],
            )
            if commands:
                writer.write(
                    traj_c, int(cmd_time * 1e9), store.serialize_cdr(traj, "trajectory_msgs/msg/JointTrajectory")
                )
    return path


def to_reference_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our keys -> the reference implementation's (remote-code InternVL) keys, fused qkv included."""
    out: dict[str, torch.Tensor] = {}
    vision_pieces: dict[str, dict[str, torch.Tensor]] = {}
    renames = {
        "embeddings.cls_token": "embeddings.class_embedding",
        "embeddings.position_embeddings": "embeddings.position_embedding",
        "embeddings.patch_embeddings.projection.": "embeddings.patch_embedding.",
        "attention.projection_layer.": "attn.proj.",
        "lambda_1": "ls1",
        "lambda_2": "ls2",
        "layernorm_before.": "norm1.",
        "layernorm_after.": "norm2.",
    }
    for key, value in state.items():
        if key.startswith("embedder.model.vision_tower."):
            key = key.replace("embedder.model.vision_tower.", "embedder.model.vision_model.")
            key = key.replace(".encoder.layer.", ".encoder.layers.")
            qkv = re.match(r"(.*)\.attention\.([qkv])_proj\.(weight|bias)$", key)
            if qkv:
                vision_pieces.setdefault(f"{qkv[1]}.attn.qkv.{qkv[3]}", {})[qkv[2]] = value
                continue
            for ours, theirs in renames.items():
                key = key.replace(ours, theirs)
        elif key.startswith("embedder.model.multi_modal_projector."):
            key = (
                key.replace("multi_modal_projector.layer_norm", "mlp1.0")
                .replace("multi_modal_projector.linear_1", "mlp1.1")
                .replace("multi_modal_projector.linear_2", "mlp1.3")
            )
        elif key.startswith("embedder.model.language_model."):
            key = key.replace("embedder.model.language_model.", "embedder.model.language_model.model.")
        elif re.match(r"action_head\.(state_encoder|mlp_head)\.fc[12]\.|action_head\.action_encoder\.W[123]\.", key):
            key = re.sub(r"\.(weight|bias)$", r".linear.\1", key)
        out[key] = value
    for key, parts in vision_pieces.items():
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out


LEROBOT_VENV = Path(__file__).resolve().parents[1] / ".venv-lerobot"  # scripts/setup_lerobot.sh makes it


def lerobot_ready() -> bool:
    return (LEROBOT_VENV / ".ready").is_file() and (LEROBOT_VENV / "bin" / "python").is_file()


def run_lerobot_check(*args: str) -> dict:
    """test/lerobot_check.py in LeRobot's own venv (offline): what LeRobot sees, as its JSON line."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    command = [str(LEROBOT_VENV / "bin" / "python"), str(Path(__file__).with_name("lerobot_check.py")), *args]
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])
