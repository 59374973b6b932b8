"""Subcommands of `evo1` that need ROS 2, registered by cli.py."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from . import cli
from .launch_args import LAUNCH_ARGUMENTS
from .paths import checkpoint_arg, checkpoint_path

Handler = Callable[[argparse.Namespace], int]


def cmd_bringup(args: argparse.Namespace) -> int:
    from .bringup import bringup

    summary = bringup(
        args.arm_config,
        args.checkpoint,
        args.device,
        args.dry_run,
        args.namespace,
        args.sim,
        args.episodes,
        instruction=args.instruction,
        duration=args.duration,
        videos=args.videos,
        compile=args.compile,
        enclave=args.enclave,
    )
    print("[evo1] summary: " + json.dumps(summary))
    return 0 if summary["chunks"] > 0 or not args.duration else 1


def cmd_instruct(args: argparse.Namespace) -> int:
    from .bringup import instruct

    return instruct(args.text, args.namespace, args.topic, args.wait)


def cmd_bench_node(args: argparse.Namespace) -> int:
    from .bench_node import bench_node, format_bench_node

    height, width = (int(v) for v in args.size.split("x")[::-1])
    result = bench_node(args.arm_config, args.checkpoint, args.cameras, (height, width), args.duration)
    print(format_bench_node(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json}")
    return 0


def cmd_fuzz_node(args: argparse.Namespace) -> int:
    from .fuzz_node import format_fuzz, fuzz_node

    result = fuzz_node(args.arm_config, args.checkpoint, args.duration, args.seed)
    print(format_fuzz(result))
    if args.json:
        with open(args.json, "w") as handle:
            handle.write(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0 if not result["problems"] else 1


def cmd_train(args: argparse.Namespace) -> int:
    from evo1_policy.data.rosbag import BagSpec
    from evo1_policy.train import TrainConfig, Trainer

    from .arm_config import ArmConfig
    from .paths import config_path

    path, overrides = args.config, list(args.overrides)
    if path and "=" in path and not path.endswith((".yaml", ".yml")):  # no file, only overrides
        path, overrides = None, [path, *overrides]
    config = TrainConfig.load(path, overrides)
    if config.model.init_checkpoint:  # a shipped policy by name, as everywhere else
        config.model.init_checkpoint = str(checkpoint_path(config.model.init_checkpoint))
    spec = None
    if config.data.bags:  # the arm config's topics: ROS knowledge stays on this side
        spec = BagSpec.from_arm_config(
            ArmConfig.from_yaml(config_path(config.data.arm_config)), action_source=config.data.action_source
        )
    final = Trainer(config, bag_spec=spec).run(resume=args.resume)
    print(f"evo1 train: done; deploy with: evo1 bringup --checkpoint {final}")
    return 0


def cmd_bag2dataset(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from evo1_policy.data.lerobot import check_output, write_lerobot
    from evo1_policy.data.rosbag import BagSpec, read_bag

    from .arm_config import ArmConfig
    from .paths import config_path

    check_output(args.out, args.overwrite)  # before reading every bag
    spec = BagSpec.from_arm_config(ArmConfig.from_yaml(config_path(args.arm_config)), action_source=args.action_source)
    episodes = [
        read_bag(bag, spec, args.instruction, i)
        for i, bag in enumerate(tqdm(args.bags, desc="bag2dataset: reading bags", unit="bag", dynamic_ncols=True))
    ]
    print(f"evo1 bag2dataset: writing {args.format} to {args.out} (encoding video)", flush=True)
    root = write_lerobot(args.out, episodes, args.format, args.lossless, args.robot_type, args.overwrite)
    print(f"evo1 bag2dataset: {len(episodes)} episodes, {sum(e.length for e in episodes)} frames -> {root}")
    return 0


def cmd_eval_bag(args: argparse.Namespace) -> int:
    if args.live:
        from .eval_live import eval_live

        eval_live(args.bags, args.config, args.out, args.rate, args.namespace, args.timeout)
        return 0
    if not args.checkpoint:
        raise ValueError("--checkpoint is needed (or --live, to score the running node)")
    from .eval_bag import eval_bags

    eval_bags(
        args.bags,
        args.checkpoint,
        args.config,
        args.out,
        args.every,
        args.compare,
        args.device,
        args.seed,
        args.dataset_key,
        args.action_source,
        args.compile,
    )
    return 0


def cmd_sim_eval(args: argparse.Namespace) -> int:
    from .sim_eval import sim_eval
    from .sim_seeds import SPLITS

    for wrong in [False, True] if args.wrong_instruction == "both" else [args.wrong_instruction == "only"]:
        out = f"{args.out}/wrong_instruction" if wrong else args.out
        sim_eval(
            args.checkpoint,
            args.episodes,
            out,
            SPLITS[args.split] if args.seed_start is None else args.seed_start,
            wrong,
            args.videos,
            args.arm_config,
            args.device,
            compile=args.compile,
        )
    return 0


def cmd_sim_record(args: argparse.Namespace) -> int:
    from .sim_eval import sim_record

    sim_record(args.out, args.episodes, args.seed_start, args.arm_config, every_target=args.every_target)
    return 0


def cmd_pretrain_vlm(args: argparse.Namespace) -> int:
    from .sim_grounding import PretrainConfig, pretrain_vlm

    report = pretrain_vlm(PretrainConfig.load(args.config, list(args.overrides)))
    shown = ", ".join(f"{k} {v:.1%}" for k, v in report["held_out_accuracy"].items())
    print(f"evo1 pretrain-vlm: held-out accuracy {shown}")
    return 0


def cmd_vqa_eval(args: argparse.Namespace) -> int:
    from .sim_grounding import vqa_eval

    accuracy = vqa_eval(args.vlm, args.checkpoint, args.scenes)
    print(", ".join(f"{k} {v:.1%}" for k, v in accuracy.items()))
    if args.json:
        with open(args.json, "w") as handle:
            handle.write(json.dumps(accuracy, indent=2) + "\n")
    return 0


def cmd_sim_probe(args: argparse.Namespace) -> int:
    from .sim_grounding import first_chunk_probe, format_probe

    result = first_chunk_probe(args.checkpoint, args.scenes, args.seed_start)
    print(format_probe(result))
    if args.json:
        with open(args.json, "w") as handle:
            handle.write(json.dumps(result, indent=2) + "\n")
    return 0


def _action_source(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--action-source",
        default="command",
        choices=["command", "next-state"],
        help="the actions of a bag: the commands on the arm config's trajectory topic, or the next joint "
        "state (demonstrations recorded without a command topic)",
    )


def register(sub: argparse._SubParsersAction, handlers: dict[str, Handler]) -> None:
    p = sub.add_parser("bringup", help="start the policy node (and simulated arm) like arm.launch.py")
    for arg in LAUNCH_ARGUMENTS:
        p.add_argument(f"--{arg.name.replace('_', '-')}", dest=arg.name, default=arg.default, help=arg.description)
    p.add_argument("--instruction", help="publish this instruction at start")
    p.add_argument("--duration", type=float, help="stop after this many seconds and print a summary")
    p.add_argument("--videos", metavar="DIR", help="with --episodes: save mp4s and frame strips of the first 3")
    handlers["bringup"] = cmd_bringup

    p = sub.add_parser("instruct", help="send an instruction to a running policy node")
    p.add_argument("text", help="what the robot should do, e.g. 'touch the red cube'")
    p.add_argument("--namespace", default="", help="the policy node's namespace")
    p.add_argument("--topic", default="instruction", help="the instruction topic (relative to the namespace)")
    p.add_argument("--wait", type=float, default=10.0, help="seconds to wait for a policy node to listen")
    handlers["instruct"] = cmd_instruct

    p = sub.add_parser("bench-node", help="the policy node's own overhead and latency, measured over DDS")
    p.add_argument("--arm-config", default="sim_arm", help="a file in config/ or a path")
    p.add_argument("--checkpoint", default="", help="default: the untrained evo1-tiny preset")
    p.add_argument("--cameras", type=int, default=1, help="camera streams published to the node")
    p.add_argument("--size", default="640x480", help="camera image WIDTHxHEIGHT")
    p.add_argument("--duration", type=float, default=20.0, help="seconds measured")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    handlers["bench-node"] = cmd_bench_node

    p = sub.add_parser(
        "fuzz-node",
        help="bad inputs and process freezes against a policy node on your arm config; audits every command",
    )
    p.add_argument("--arm-config", default="sim_arm", help="a file in config/ or a path (default: sim_arm)")
    p.add_argument("--checkpoint", default="", help="default: the untrained evo1-tiny preset (it moves a lot)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of fuzzing after the node commands")
    p.add_argument("--seed", type=int, default=0, help="seed of the bad inputs drawn")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    handlers["fuzz-node"] = cmd_fuzz_node

    p = sub.add_parser("train", help="two-stage training from bags and LeRobot datasets")
    p.add_argument("config", nargs="?", help="training YAML (see config/train_sim.yaml)")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. train.stage1_steps=200 output=runs/x")
    p.add_argument("--resume", help="a checkpoint folder with training_state.pt")
    handlers["train"] = cmd_train

    p = sub.add_parser("bag2dataset", help="ROS 2 bags -> a LeRobot dataset (v3.0 by default)")
    p.add_argument("bags", nargs="+", help="bag folders or files (sqlite3 or mcap), one episode each")
    p.add_argument("--out", required=True, help="dataset folder to write")
    p.add_argument("--arm-config", default="sim_arm", help="topics, joints and control rate of the bags")
    p.add_argument("--instruction", help="for bags without an instruction topic")
    p.add_argument("--format", default="v3.0", choices=["v3.0", "v2.1"], help="LeRobot dataset format version")
    p.add_argument("--lossless", action="store_true", help="lossless RGB video (exact pixels, larger files)")
    p.add_argument("--robot-type", default="", help="info.json's robot_type (e.g. so100)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    _action_source(p)
    handlers["bag2dataset"] = cmd_bag2dataset

    p = sub.add_parser("eval-bag", help="score a checkpoint against recorded bags or LeRobot datasets (open loop)")
    p.add_argument(
        "bags", nargs="+", help="bags (sqlite3 or mcap) and LeRobot dataset folders; unreadable ones are skipped"
    )
    p.add_argument("--checkpoint", type=checkpoint_arg, help="checkpoint to run open loop (folder or shipped name)")
    p.add_argument(
        "--arm-config",
        "--config",
        dest="config",
        default="sim_arm",
        help="arm config naming the bag's topics and joints",
    )
    p.add_argument("--live", action="store_true", help="replay to a running policy node and score what it does")
    p.add_argument("--rate", type=float, default=1.0, help="--live: replay speed (1 = recorded timing)")
    p.add_argument("--namespace", default="", help="--live: the node's namespace")
    p.add_argument("--timeout", type=float, default=60.0, help="--live: seconds to wait for the node")
    p.add_argument("--out", default="eval_report", help="report folder (index.html, report.json, summary.txt)")
    p.add_argument("--every", type=int, help="predict every K steps (default: control.execute_steps)")
    p.add_argument("--compare", type=checkpoint_arg, help="a second checkpoint, side by side")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler's noise (the same chunks every run)")
    p.add_argument("--dataset-key", help="norm-stats entry (default: the arm config's model.dataset_key)")
    cli.compile_option(p)
    _action_source(p)
    handlers["eval-bag"] = cmd_eval_bag

    from .sim_seeds import EVAL_SEED_START, SPLITS

    p = sub.add_parser("sim-eval", help="success rate of a checkpoint on the simulated arm (sim + node processes)")
    p.add_argument("--checkpoint", default="", help="default: the one the arm config names (the shipped policy)")
    p.add_argument("--episodes", type=int, default=50, help="placements to run")
    p.add_argument(
        "--split",
        default="validation",
        choices=["validation", "report"],
        help=f"placements: validation (seeds from {SPLITS['validation']}) to choose checkpoints and recipes, "
        f"report (from {SPLITS['report']}) for a shipped model's figures, once",
    )
    p.add_argument("--seed-start", type=int, default=None, help="placements: seeds from here on (default: the split's)")
    p.add_argument(
        "--wrong-instruction",
        default="no",
        choices=["no", "only", "both"],
        help="only/both: also run each episode told to touch another cube (does the policy listen?)",
    )
    p.add_argument("--videos", type=int, default=3, help="save mp4 and a frame strip of the first N episodes")
    p.add_argument("--out", default="sim_eval", help="folder for sim_eval.json, logs and videos")
    p.add_argument("--arm-config", default="sim_arm", help="the simulated arm's config")
    p.add_argument("--device", default="auto", help="the policy's torch device")
    cli.compile_option(p, "the arm config's model.compile")
    handlers["sim-eval"] = cmd_sim_eval

    p = sub.add_parser("sim-record", help="record expert demonstrations on the simulated arm as bags")
    p.add_argument("--out", required=True, help="folder for the bags (one per episode)")
    p.add_argument("--episodes", type=int, default=200, help="placements to record")
    p.add_argument("--seed-start", type=int, default=0, help="placements: seeds from here on")
    p.add_argument("--arm-config", default="sim_arm", help="the simulated arm's config")
    p.add_argument(
        "--every-target", action="store_true", help="each placement once per cube (3 episodes per placement)"
    )
    handlers["sim-record"] = cmd_sim_record

    p = sub.add_parser("pretrain-vlm", help="stage 0: pretrain the backbone on questions about simulator scenes")
    p.add_argument("config", nargs="?", help="YAML (see config/pretrain_vlm_sim.yaml)")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. pretrain.steps=2000 output=runs/x")
    handlers["pretrain-vlm"] = cmd_pretrain_vlm

    p = sub.add_parser("vqa-eval", help="held-out VQA accuracy of a pretrained VLM (or of a policy's backbone)")
    p.add_argument("vlm", help="folder written by evo1 pretrain-vlm (its language head reads the answers)")
    p.add_argument(
        "--checkpoint",
        type=checkpoint_arg,
        help="a policy checkpoint (folder or shipped name): score its backbone instead (after action training)",
    )
    p.add_argument("--scenes", type=int, default=500, help="held-out scenes asked")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    handlers["vqa-eval"] = cmd_vqa_eval

    p = sub.add_parser("sim-probe", help="first-chunk probe: does the policy head for the cube it is told?")
    p.add_argument("--checkpoint", default="sim_touch", help="checkpoint folder or shipped name")
    p.add_argument("--scenes", type=int, default=30, help="placements, each asked once per cube")
    p.add_argument("--seed-start", type=int, default=EVAL_SEED_START, help="placements: seeds from here on")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    handlers["sim-probe"] = cmd_sim_probe
