"""`evo1` data and training: demonstrations (sim-record, metaworld-record), bags to datasets
(bag2dataset), stage 0 (pretrain-vlm) and the two-stage trainer (train)."""

from __future__ import annotations

import argparse

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


def _sim_record_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="folder for the bags (one per episode)")
    p.add_argument("--episodes", type=int, default=200, help="placements to record")
    p.add_argument("--seed-start", type=int, default=0, help="placements: seeds from here on")
    p.add_argument("--arm-config", default="sim_arm", help="the simulated arm's config")
    p.add_argument(
        "--every-target", action="store_true", help="each placement once per cube (3 episodes per placement)"
    )


def run_sim_record(args: argparse.Namespace) -> int:
    from ..sim.evaluate import sim_record

    sim_record(args.out, args.episodes, args.seed_start, args.arm_config, every_target=args.every_target)
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
    Command(
        "sim-record", "record expert demonstrations on the simulated arm as bags", _sim_record_arguments, run_sim_record
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
