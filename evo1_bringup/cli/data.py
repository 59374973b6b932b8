"""`evo1` data and training: demonstrations (record on any arm, sim-record, metaworld-record),
bags to datasets (bag2dataset), stage 0 (pretrain-vlm) and the two-stage trainer (train)."""

from __future__ import annotations

import argparse
import sys

from .options import Command, action_source, json_option, write_json


def _train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="training YAML (see config/train/train_sim.yaml)")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. train.stage1_steps=200 output=runs/x")
    p.add_argument("--resume", help="a checkpoint folder with training_state.pt")


def run_train(args: argparse.Namespace) -> int:
    from evo1_policy.data.rosbag import BagSpec
    from evo1_policy.training.trainer import TrainConfig, Trainer

    from ..arm_config import ArmConfig
    from ..paths import checkpoint_path, training_config_path

    path, overrides = args.config, list(args.overrides)
    if path and "=" in path and not path.endswith((".yaml", ".yml")):  # no file, only overrides
        path, overrides = None, [path, *overrides]
    config = TrainConfig.load(training_config_path(path) if path else None, overrides)
    if config.model.init_checkpoint:  # a shipped policy by name, as everywhere else
        config.model.init_checkpoint = str(checkpoint_path(config.model.init_checkpoint))
    spec = None
    if config.data.bags:  # the arm config's topics: ROS knowledge stays on this side
        spec = BagSpec.from_arm_config(ArmConfig.named(config.data.arm_config), action_source=config.data.action_source)
    final = Trainer(config, bag_spec=spec).run(resume=args.resume)
    print(f"evo1 train: done; deploy with: evo1 bringup --checkpoint {final}")
    return 0


def _bag2dataset_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bags", nargs="+", help="bag folders or files (sqlite3 or mcap), one episode each")
    p.add_argument("--out", required=True, help="dataset folder to write")
    p.add_argument("--arm-config", default="sim_arm", help="topics, joints and control rate of the bags")
    p.add_argument("--instruction", help="for bags without an instruction topic")
    p.add_argument("--format", default="v3.0", choices=["v3.0", "v2.1"], help="LeRobot dataset format version")
    p.add_argument("--lossless", action="store_true", help="lossless RGB video (exact pixels, larger files)")
    p.add_argument("--robot-type", default="", help="info.json's robot_type (e.g. so100)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    action_source(p)


def run_bag2dataset(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from evo1_policy.data.lerobot import check_output, write_lerobot
    from evo1_policy.data.rosbag import BagSpec, read_bag

    from ..arm_config import ArmConfig

    check_output(args.out, args.overwrite)  # before reading every bag
    spec = BagSpec.from_arm_config(ArmConfig.named(args.arm_config), action_source=args.action_source)
    episodes = [
        read_bag(bag, spec, args.instruction, i)
        for i, bag in enumerate(tqdm(args.bags, desc="bag2dataset: reading bags", unit="bag", dynamic_ncols=True))
    ]
    print(f"evo1 bag2dataset: writing {args.format} to {args.out} (encoding video)", flush=True)
    root = write_lerobot(args.out, episodes, args.format, args.lossless, args.robot_type, args.overwrite)
    print(f"evo1 bag2dataset: {len(episodes)} episodes, {sum(e.length for e in episodes)} frames -> {root}")
    return 0


def _record_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arm-config", required=True, help="the arm's config: its cameras, joint states and command topic")
    p.add_argument("--task", required=True, help="the task text, stored as each episode's instruction")
    p.add_argument("--out", required=True, help="folder of episode bags; with --format lerobot, the dataset")
    p.add_argument(
        "--format", default="bag", choices=["bag", "lerobot"], help="one mcap bag per episode, or LeRobot v3"
    )
    p.add_argument("--episodes", type=int, default=10, help="episodes to record in this run")
    p.add_argument("--episode-time", type=float, default=60.0, help="seconds per episode; 0: until 'next'")
    p.add_argument("--reset-time", type=float, default=10.0, help="seconds between episodes to reset the scene")
    p.add_argument("--fps", type=float, default=0.0, help="rate each stream must reach, the dataset's; 0: control rate")
    p.add_argument("--wait-for-start", action="store_true", help="each episode starts on 'next' (key or service)")
    p.add_argument("--topic-timeout", type=float, default=5.0, help="seconds to wait for each topic before failing")
    p.add_argument(
        "--pre-roll", type=float, default=0.5, help="seconds kept before a start (a ~/start_episode with a stamp)"
    )
    p.add_argument("--no-keys", action="store_true", help="no terminal keys (services only)")
    p.add_argument("--node-name", default="evo1_recorder", help="the recorder node's name (its services' prefix)")
    p.add_argument(
        "--takeovers", action="store_true", help="t / ~/takeover: the operator takes the arm from a running policy"
    )
    p.add_argument("--policy-node", default="evo1_policy_node", help="with --takeovers: the policy node's name")
    action_source(p)


def run_record(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..arm_config import ArmConfig
    from ..paths import config_path
    from ..record.run import record
    from ..record.session import RecordError, RecordOptions

    if args.episodes < 1:
        raise SystemExit("evo1 record: --episodes must be at least 1")
    options = RecordOptions(
        out=Path(args.out),
        task=args.task,
        episodes=args.episodes,
        episode_time=args.episode_time,
        reset_time=args.reset_time,
        fps=args.fps,
        wait_for_start=args.wait_for_start,
        format=args.format,
        topic_timeout=args.topic_timeout,
        pre_roll=args.pre_roll,
        keys=not args.no_keys,
        action_source=args.action_source,
        takeovers=args.takeovers,
        policy_node=args.policy_node,
        arm_config=str(config_path(args.arm_config)),
    )
    try:
        session = record(ArmConfig.named(args.arm_config), options, args.node_name)
    except RecordError as error:
        print(f"evo1 record: {error}", file=sys.stderr)
        return 1
    print(f"evo1 record: {len(session.saved)} episodes saved in {session.folder}")
    return 0


def _compare_bags_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", help="a folder of bags (e.g. what evo1 sim-record wrote)")
    p.add_argument("b", help="another recording of the same episodes (e.g. what evo1 record wrote)")
    p.add_argument("--arm-config", default="sim_arm", help="topics, joints and control rate of the bags")
    action_source(p)
    json_option(p, "the per-pair figures")


def run_compare_bags(args: argparse.Namespace) -> int:
    from pathlib import Path

    from evo1_policy.data.rosbag import BagSpec

    from ..arm_config import ArmConfig
    from ..check.compare_bags import compare_folders, format_comparison

    spec = BagSpec.from_arm_config(ArmConfig.named(args.arm_config), action_source=args.action_source)
    result = compare_folders(Path(args.a), Path(args.b), spec)
    print(format_comparison(result))
    write_json(args.json, result)
    return 0


def _bench_record_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="folder for the bag, the logs and the publisher's stamps")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of the recorded episode")
    p.add_argument("--cameras", type=int, default=3, choices=[1, 2, 3], help="cameras published")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--fps", type=float, default=30.0, help="camera rate")
    p.add_argument(
        "--transports",
        default="LARGE_DATA",
        help="FASTDDS_BUILTIN_TRANSPORTS per run, side by side (DEFAULT: unset), e.g. DEFAULT,LARGE_DATA",
    )
    p.add_argument("--keep-bags", action="store_true", help="keep the recorded bags (GBs)")
    json_option(p)


def run_bench_record(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..check.bench_record import bench_record, format_bench

    transports = tuple(t.strip().upper() for t in args.transports.split(",") if t.strip())
    result = bench_record(
        Path(args.out), args.duration, args.cameras, args.width, args.height, args.fps, transports, args.keep_bags
    )
    print(format_bench(result))
    write_json(args.json, result)
    return 0


def _sim_record_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="folder for the bags (one per episode)")
    p.add_argument("--episodes", type=int, default=200, help="placements to record")
    p.add_argument("--seed-start", type=int, default=0, help="placements: seeds from here on")
    p.add_argument("--arm-config", default="sim_arm", help="the simulated arm's config")
    p.add_argument(
        "--every-target", action="store_true", help="each placement once per cube (3 episodes per placement)"
    )
    p.add_argument(
        "--through-recorder", action="store_true", help="the bags written by `evo1 record`, as on a real arm"
    )
    p.add_argument(
        "--direct-copy", default="", help="with --through-recorder: also the runner's own bags of the same run, here"
    )


def run_sim_record(args: argparse.Namespace) -> int:
    from ..sim.evaluate import sim_record

    sim_record(
        args.out,
        args.episodes,
        args.seed_start,
        args.arm_config,
        every_target=args.every_target,
        through_recorder=args.through_recorder,
        direct_copy=args.direct_copy,
    )
    return 0


def _metaworld_record_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="dataset folder to write")
    p.add_argument("--tasks", default="MT10", help="MT10, MT50, a difficulty group or names (reach-v3,push-v3)")
    p.add_argument("--episodes", type=int, default=20, help="expert episodes tried per task (failures are dropped)")
    p.add_argument("--seed", type=int, default=0, help="environment seed (the evaluation uses 4042)")
    p.add_argument("--image-size", type=int, default=448, help="stored frame size (448: what the reference sends)")
    p.add_argument("--min-steps", type=int, default=50, help="run kept episodes on past success to this many steps")
    p.add_argument("--lossy", action="store_true", help="LeRobot's lossy video instead of exact pixels")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    json_option(p, "the per-task counts")


def run_metaworld_record(args: argparse.Namespace) -> int:
    from evo1_policy.metaworld.record import record

    summary = record(
        args.out, args.tasks, args.episodes, args.seed, args.image_size, args.min_steps, not args.lossy, args.overwrite
    )
    write_json(args.json, summary, say=False)
    return 0


def _pretrain_vlm_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="YAML (see config/train/pretrain_vlm_sim.yaml)")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. pretrain.steps=2000 output=runs/x")


def run_pretrain_vlm(args: argparse.Namespace) -> int:
    from ..paths import training_config_path
    from ..sim.grounding import PretrainConfig, pretrain_vlm

    config = PretrainConfig.load(training_config_path(args.config) if args.config else None, list(args.overrides))
    report = pretrain_vlm(config)
    shown = ", ".join(f"{k} {v:.1%}" for k, v in report["held_out_accuracy"].items())
    print(f"evo1 pretrain-vlm: held-out accuracy {shown}")
    return 0


COMMANDS = (
    Command("train", "two-stage training from bags and LeRobot datasets", _train_arguments, run_train),
    Command(
        "bag2dataset", "ROS 2 bags -> a LeRobot dataset (v3.0 by default)", _bag2dataset_arguments, run_bag2dataset
    ),
    Command("record", "record demonstrations on any arm: one bag per episode", _record_arguments, run_record),
    Command(
        "sim-record", "record expert demonstrations on the simulated arm as bags", _sim_record_arguments, run_sim_record
    ),
    Command(
        "bench-record",
        "can evo1 record keep up: 3 cameras 640x480 at 30 Hz, dropped messages, CPU",
        _bench_record_arguments,
        run_bench_record,
    ),
    Command(
        "compare-bags",
        "two recordings of the same episodes: the largest difference of their training samples",
        _compare_bags_arguments,
        run_compare_bags,
    ),
    Command(
        "metaworld-record",
        "metaworld's scripted experts -> a LeRobot dataset (docs/metaworld.md)",
        _metaworld_record_arguments,
        run_metaworld_record,
    ),
    Command(
        "pretrain-vlm",
        "stage 0: pretrain the backbone on questions about simulator scenes",
        _pretrain_vlm_arguments,
        run_pretrain_vlm,
    ),
)
