"""`evo1 bench-record`: can `evo1 record` keep up with a real arm's sensors on this machine?

A publisher process of its own plays the arm: N cameras (640x480 rgb8 at 30 Hz by default) and
joint states (100 Hz), stamped on publishing. `evo1 record` (the real command, a process of its
own) records one episode of `--duration` seconds. Figures: per stream, messages published inside
the episode's span against messages in the bag (dropped = the difference), and the recorder
process's CPU time over the episode (all its threads, as it writes into the bag's metadata) in
cores. No torch anywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

CAMERA_NAMES = ("front", "wrist", "side")


def bench_arm_yaml(out: Path, cameras: int, rate_hz: float) -> Path:
    """The simulated arm's config with `cameras` cameras, written to `out` (the recorder reads it)."""
    from ..paths import config_path

    data = yaml.safe_load(config_path("sim_arm").read_text())
    params = data["evo1_policy_node"]["ros__parameters"]
    names = list(CAMERA_NAMES[:cameras])
    params["cameras"] = {
        "names": names,
        "topics": [f"bench/{n}/image_raw" for n in names],
        "compressed": [False] * cameras,
    }
    params["control"]["rate_hz"] = rate_hz
    path = out / "bench_arm.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def publish(arm_yaml: Path, width: int, height: int, fps: float, joint_rate: float, duration: float, report: Path):
    """The publisher process: cameras and joint states until `duration` ends; their stamps to `report`."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState

    from ..arm_config import ArmConfig

    config = ArmConfig.from_yaml(arm_yaml)
    stamps: dict[str, list[float]] = {f"camera_{n}": [] for n in config.cameras.names}
    stamps["joint_states"] = []
    with rclpy.init():
        node = rclpy.create_node("evo1_bench_record_arm")
        images = [node.create_publisher(Image, t, qos_profile_sensor_data) for t in config.cameras.topics]
        joints = node.create_publisher(JointState, config.topics.joint_states, qos_profile_sensor_data)
        pixels = bytes(os.urandom(width * height * 3))  # content is not looked at; size is what counts
        frame = Image(height=height, width=width, encoding="rgb8", step=width * 3, data=pixels)
        state = JointState(name=config.action_names, position=[0.0] * len(config.action_names))

        def send_frames() -> None:
            stamp = node.get_clock().now()
            frame.header.stamp = stamp.to_msg()
            for name, publisher in zip(config.cameras.names, images, strict=True):
                publisher.publish(frame)
                stamps[f"camera_{name}"].append(stamp.nanoseconds * 1e-9)

        def send_state() -> None:
            stamp = node.get_clock().now()
            state.header.stamp = stamp.to_msg()
            joints.publish(state)
            stamps["joint_states"].append(stamp.nanoseconds * 1e-9)

        node.create_timer(1.0 / fps, send_frames)
        node.create_timer(1.0 / joint_rate, send_state)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        end = time.monotonic() + duration
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.01)
        node.destroy_node()
    report.write_text(json.dumps(stamps))


def _spawn(args: list[str], log: Path, transports: str) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop("FASTDDS_BUILTIN_TRANSPORTS", None)
    if transports != "DEFAULT":
        env["FASTDDS_BUILTIN_TRANSPORTS"] = transports
    with log.open("w") as handle:
        return subprocess.Popen([sys.executable, "-m", *args], stdout=handle, stderr=subprocess.STDOUT, env=env)


def recorded_stamps(bag: Path) -> dict[str, list[float]]:
    """Each topic's log times (the header stamps evo1 record writes), read without deserializing."""
    from rosbags.rosbag2 import Reader

    stamps: dict[str, list[float]] = {}
    with Reader(bag) as reader:
        for connection, log_time, _ in reader.messages():
            stamps.setdefault(connection.topic, []).append(log_time * 1e-9)
    return stamps


def bench_record(
    out: Path,
    duration: float = 60.0,
    cameras: int = 3,
    width: int = 640,
    height: int = 480,
    fps: float = 30.0,
    transports: tuple[str, ...] = ("LARGE_DATA",),
    keep_bags: bool = False,
) -> dict[str, Any]:
    """One run per Fast DDS transport setting (FASTDDS_BUILTIN_TRANSPORTS for both processes;
    DEFAULT: unset), side by side."""
    from ..ros_io import isolate_domain

    out.mkdir(parents=True, exist_ok=True)
    isolate_domain()
    arm_yaml = bench_arm_yaml(out, cameras, fps)
    runs = {t: _bench_one(out / t.lower(), arm_yaml, duration, (width, height, fps), t, keep_bags) for t in transports}
    return {"cameras": f"{cameras} x {width}x{height} rgb8 at {fps:g} Hz", "cpu_count": os.cpu_count(), "runs": runs}


def _bench_one(
    out: Path, arm_yaml: Path, duration: float, video: tuple[int, int, float], transports: str, keep_bag: bool
) -> dict[str, Any]:
    from ..record.episode_bag import read_metadata, saved_episodes

    out.mkdir(parents=True, exist_ok=True)
    report = out / "published.json"
    width, height, fps = video
    publisher_args = [str(arm_yaml), str(width), str(height), str(fps), str(duration + 15), str(report)]
    publisher = _spawn(["evo1_bringup.check.bench_record", *publisher_args], out / "publisher.log", transports)
    time.sleep(2.0)
    record_args = ["evo1_bringup.cli", "record", "--arm-config", str(arm_yaml), "--task", "bench", "--no-keys"]
    record_args += ["--out", str(out / "bags"), "--episodes", "1", "--episode-time", str(duration)]
    recorder = _spawn(record_args, out / "record.log", transports)
    try:
        recorder.wait(timeout=duration + 60)
        publisher.wait(timeout=duration + 30)
    finally:
        for process in (recorder, publisher):
            if process.poll() is None:
                process.kill()
    bag = saved_episodes(out / "bags")[-1]
    meta = read_metadata(bag)
    # Judged inside the episode less its last 0.2 s: a message published just before the bag
    # closed may still be on its way, which is the end of an episode, not a dropped message.
    start, end = float(meta["start"]), float(meta["end"]) - 0.2
    published = json.loads(report.read_text())
    topics = json.loads(meta["topics"])
    recorded = recorded_stamps(bag)
    streams = {}
    for key, stamps in published.items():
        sent = sum(start <= s < end for s in stamps)
        got = sum(start <= s < end for s in recorded.get("/" + topics[key][0].lstrip("/"), []))
        streams[key] = {"published": sent, "recorded": got, "dropped": sent - got}
    size = sum(f.stat().st_size for f in bag.iterdir())
    if not keep_bag:
        shutil.rmtree(bag)
    wall = float(meta["duration"])
    return {
        "duration": wall,
        "streams": streams,
        "recorder_cpu_cores": float(meta["cpu_cores"]),  # the recorder's own CPU time over the episode
        "bag_megabytes": size / 1e6,
        "megabytes_per_second": size / 1e6 / wall,
    }


def format_bench(result: dict[str, Any]) -> str:
    lines = []
    for transports, run in result["runs"].items():
        lines.append(
            f"[bench-record] {transports}: {result['cameras']}, joint states at 100 Hz, {run['duration']:.1f} s"
        )
        for key, s in run["streams"].items():
            lines.append(
                f"[bench-record]   {key}: published {s['published']}, recorded {s['recorded']}, dropped {s['dropped']}"
            )
        lines.append(
            f"[bench-record]   recorder CPU {run['recorder_cpu_cores']:.2f} cores (of {result['cpu_count']}); "
            f"bag {run['bag_megabytes']:.0f} MB ({run['megabytes_per_second']:.1f} MB/s)"
        )
    return "\n".join(lines)


if __name__ == "__main__":  # the publisher process
    arm, w, h, rate, seconds, path = sys.argv[1:7]
    publish(Path(arm), int(w), int(h), float(rate), 100.0, float(seconds), Path(path))
