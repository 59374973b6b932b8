"""Running `evo1 record`: the checks, the loop (DDS, keys, timers, the live line), and with
`--format lerobot` the dataset written from the episodes' bags.

With `--format lerobot --out DIR`, the bags are kept in `DIR-bags/` (a second run adds to them)
and at the end of every run the LeRobot v3 dataset at DIR is written anew from all of them: into
a staging folder first, swapped in by renames, so an interrupted write leaves the previous
dataset whole.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.serialization import deserialize_message
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import JointState

from evo1_policy.joints import JointStateError, joint_positions

from ..arm_config import ArmConfig
from .episode_bag import remove_partials
from .keys import HELP, KeyReader
from .recorder import RECORDER_NODE, RecorderNode, arm_streams
from .session import FORMATS, RecordError, RecordOptions, Session, live_line
from .takeover import Takeover

LIVE_PERIOD = 0.5  # seconds between live lines on a terminal (every 5 s in a log)
LINGER = 0.5  # seconds of spinning after the last episode
RATE_MARGIN = 0.9  # a stream below this fraction of the dataset's rate is warned about


def bag_folder(options: RecordOptions) -> Path:
    return options.out if options.format == "bag" else options.out.with_name(options.out.name + "-bags")


def record(config: ArmConfig, options: RecordOptions, node_name: str = RECORDER_NODE) -> Session:
    """Record `options.episodes` episodes; returns the session (what was saved, what was said)."""
    if options.format not in FORMATS:
        raise RecordError(f"format {options.format!r} unknown; choose one of {FORMATS}")
    if not options.task.strip():
        raise RecordError("no task: give the task text with --task (it is each episode's instruction)")
    folder = bag_folder(options)
    if options.format == "lerobot":
        _check_dataset_folder(options.out)
    for path in remove_partials(folder):
        print(f"[record] removed {path}: an episode an earlier run did not finish", file=sys.stderr)
    session = Session(config, options, folder, arm_streams(config))
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with rclpy.init(signal_handler_options=SignalHandlerOptions.NO):
            session.node = RecorderNode(config, session.streams, session.handle, node_name, options.pre_roll)
            if options.takeovers:
                session.takeover = Takeover(session.node, options.policy_node, session.node.now_ns)
            executor = SingleThreadedExecutor()
            executor.add_node(session.node)
            try:
                check_streams(session, executor, stop)
                session.node.offer_controls()
                _loop(session, executor, stop)
            finally:
                if session.node.bag is not None:  # an error while recording: nothing half-written stays
                    session.node.take_bag().discard()
                executor.shutdown(timeout_sec=1.0)
                session.node.destroy_node()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if options.format == "lerobot":
        write_dataset(config, options, session)
    return session


def _loop(session: Session, executor: SingleThreadedExecutor, stop: threading.Event) -> None:
    interactive = sys.stderr.isatty()
    next_line = time.monotonic()
    with KeyReader(session.options.keys) as keys:
        if keys.enabled:
            session.say(HELP)
        while session.phase != "done":
            executor.spin_once(timeout_sec=0.01)
            for control in keys.controls():
                session.handle(control)
            if stop.is_set():
                session.interrupt()
                break
            session.tick()
            if time.monotonic() >= next_line:
                line = live_line(session)
                print(
                    f"\r\033[K{line}" if interactive else f"[record] {line}",
                    end="" if interactive else "\n",
                    file=sys.stderr,
                    flush=True,
                )
                next_line = time.monotonic() + (LIVE_PERIOD if interactive else 5.0)
    if session.takeover is not None and session.takeover.active:
        session.say(
            f"the operator still has the arm: {session.options.policy_node} stays in dry run (give it back: "
            f"ros2 param set /{session.options.policy_node} safety.dry_run false)"
        )
    linger = time.monotonic() + LINGER  # the last event and service answers still go out
    while time.monotonic() < linger:
        executor.spin_once(timeout_sec=0.02)
    if interactive:
        print(file=sys.stderr)


def check_streams(session: Session, executor: SingleThreadedExecutor, stop: threading.Event) -> None:
    """Before anything is written: every camera and the joint states publish (one error naming
    every silent topic), the joint states name the arm's joints, stamps are on our clock; rates
    below the dataset's are warned about. The command topic may be silent until the operator moves."""
    node, options = session.node, session.options
    required = [k for k in node.stats if k != "commands"]
    deadline = time.monotonic() + options.topic_timeout
    while time.monotonic() < deadline and not stop.is_set():
        executor.spin_once(timeout_sec=0.05)
        if all(node.stats[k].count >= 2 for k in required):
            break
    silent = [k for k in required if node.stats[k].count == 0]
    if silent:
        named = "; ".join(_describe(node, k) for k in silent)
        raise RecordError(
            f"no messages in {options.topic_timeout:.1f} s on {named}. Nothing was written. Is the driver "
            f"running, on this ROS_DOMAIN_ID ({os.environ.get('ROS_DOMAIN_ID', '0')}), with these topic names?"
        )
    settle = time.monotonic() + 1.0  # a rate needs a second of messages
    while time.monotonic() < settle and not stop.is_set():
        executor.spin_once(timeout_sec=0.05)
    _check_joint_names(session)
    _check_clocks(session)
    now = node.now()
    for key, stats in node.stats.items():
        rate = stats.rate(now)
        if key != "commands" and rate < RATE_MARGIN * session.fps:
            session.say(
                f"warning: {_describe(node, key)} publishes at {rate:.1f} Hz, below the {session.fps:g} Hz "
                "the dataset samples at: frames or states will repeat"
            )


def _describe(node: RecorderNode, key: str) -> str:
    stream = node.streams[key]
    topic = node.resolve_topic_name(stream.topic)
    return f"{key.replace('_', ' ')} {topic} ({stream.msgtype}, {node.count_publishers(topic)} publishers)"


def _check_joint_names(session: Session) -> None:
    raw = session.node.stats["joint_states"].latest
    msg = deserialize_message(raw, JointState)
    try:
        joint_positions(list(msg.name), list(msg.position), session.config.action_names)
    except JointStateError as error:
        raise RecordError(f"{_describe(session.node, 'joint_states')}: {error}. Nothing was written.") from None


def _check_clocks(session: Session) -> None:
    node, limit = session.node, session.options.max_clock_offset
    off = {k: s.clock_offset for k, s in node.stats.items() if s.count and abs(s.clock_offset) > limit}
    if off:
        named = "; ".join(f"{_describe(node, k)} stamps {v:+.3f} s from this clock" for k, v in off.items())
        raise RecordError(
            f"{named}. Stamps and this machine's clock must agree within {limit:g} s (two clocks? a camera "
            "stamping its own clock, or sim time without use_sim_time). Nothing was written."
        )


def _check_dataset_folder(out: Path) -> None:
    """--format lerobot writes DIR anew each run: DIR must be absent or a dataset written before."""
    if out.exists() and any(out.iterdir()) and not (out / "meta" / "info.json").is_file():
        raise RecordError(f"{out} exists and is not a LeRobot dataset: pick another --out")


def write_dataset(config: ArmConfig, options: RecordOptions, session: Session) -> Path | None:
    """The LeRobot v3 dataset of every episode in the bag folder, swapped in whole."""
    from evo1_policy.data.episode import DatasetError
    from evo1_policy.data.lerobot import write_lerobot
    from evo1_policy.data.rosbag import BagSpec, read_bag

    from .episode_bag import saved_episodes

    bags = saved_episodes(session.folder)
    if not bags:
        session.say("no episodes: no dataset written")
        return None
    spec = BagSpec.from_arm_config(config, action_source=options.action_source)
    spec.rate_hz = session.fps
    try:
        episodes = [read_bag(bag, spec, None, i) for i, bag in enumerate(bags)]
    except DatasetError as error:
        raise RecordError(
            f"{error}. The episodes are kept in {session.folder}; write the dataset with evo1 bag2dataset"
        ) from None
    staged = options.out.with_name(options.out.name + ".partial")
    old = options.out.with_name(options.out.name + ".old")
    for path in (staged, old):
        shutil.rmtree(path, ignore_errors=True)
    write_lerobot(staged, episodes, "v3.0", overwrite=True)
    if options.out.exists():
        os.replace(options.out, old)
    os.replace(staged, options.out)
    shutil.rmtree(old, ignore_errors=True)
    frames = sum(e.length for e in episodes)
    session.say(f"LeRobot v3 dataset {options.out}: {len(episodes)} episodes, {frames} frames (from {session.folder})")
    return options.out
