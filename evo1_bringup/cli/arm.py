"""`evo1` on an arm: bring the policy node up (bringup), tell it what to do (instruct), and check
it on your arm config over DDS (bench-node, fuzz-node), and for an hour on the MuJoCo arm (soak)."""

from __future__ import annotations

import argparse
import json

from ..launch_args import LAUNCH_ARGUMENTS
from .options import Command, json_option, write_json


def _bringup_arguments(p: argparse.ArgumentParser) -> None:
    for arg in LAUNCH_ARGUMENTS:
        p.add_argument(f"--{arg.name.replace('_', '-')}", dest=arg.name, default=arg.default, help=arg.description)
    p.add_argument("--instruction", help="publish this instruction at start")
    p.add_argument("--duration", type=float, help="stop after this many seconds and print a summary")
    p.add_argument("--videos", metavar="DIR", help="with --episodes: save mp4s and frame strips of the first 3")


def run_bringup(args: argparse.Namespace) -> int:
    from ..bringup import bringup

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


def _instruct_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("text", help="what the robot should do, e.g. 'touch the red cube'")
    p.add_argument("--namespace", default="", help="the policy node's namespace")
    p.add_argument("--topic", default="instruction", help="the instruction topic (relative to the namespace)")
    p.add_argument("--wait", type=float, default=10.0, help="seconds to wait for a policy node to listen")


def run_instruct(args: argparse.Namespace) -> int:
    from ..bringup import instruct

    return instruct(args.text, args.namespace, args.topic, args.wait)


def _bench_node_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arm-config", default="sim_arm", help="a file in config/ or a path")
    p.add_argument("--checkpoint", default="", help="default: the untrained evo1-tiny preset")
    p.add_argument("--cameras", type=int, default=1, help="camera streams published to the node")
    p.add_argument("--size", default="640x480", help="camera image WIDTHxHEIGHT")
    p.add_argument("--duration", type=float, default=20.0, help="seconds measured")
    json_option(p)


def run_bench_node(args: argparse.Namespace) -> int:
    from ..check.bench_node import bench_node, format_bench_node

    height, width = (int(v) for v in args.size.split("x")[::-1])
    result = bench_node(args.arm_config, args.checkpoint, args.cameras, (height, width), args.duration)
    print(format_bench_node(result))
    write_json(args.json, result)
    return 0


def _fuzz_node_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arm-config", default="sim_arm", help="a file in config/ or a path (default: sim_arm)")
    p.add_argument("--checkpoint", default="", help="default: the untrained evo1-tiny preset (it moves a lot)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of fuzzing after the node commands")
    p.add_argument("--seed", type=int, default=0, help="seed of the bad inputs drawn")
    p.add_argument(
        "--controller",
        choices=("", "stamp", "receipt"),
        default="",
        help="when the stand-in arm starts a trajectory: at its stamp, or on receipt (default: the arm config's)",
    )
    p.add_argument(
        "--lag", type=float, default=0.0, help="the arm trails its controller with this time constant (s; 0: exact)"
    )
    p.add_argument("--pushes", action="store_true", help="shove the arm now and then, as a person or a collision")
    json_option(p)


def run_fuzz_node(args: argparse.Namespace) -> int:
    from ..check.fuzz import format_fuzz, fuzz_node

    result = fuzz_node(
        args.arm_config, args.checkpoint, args.duration, args.seed, args.controller, args.lag, args.pushes
    )
    print(format_fuzz(result))
    write_json(args.json, result)
    return 0 if not result["problems"] else 1


def _soak_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default="sim_touch", help="a folder or a shipped policy's name")
    p.add_argument("--duration", type=float, default=3600.0, help="seconds of episodes back to back")
    p.add_argument("--window", type=float, default=300.0, help="seconds per row of figures")
    p.add_argument("--out", default="runs/soak", help="folder for soak.json and the processes' logs")


def run_soak(args: argparse.Namespace) -> int:
    from ..check.soak import soak

    result = soak(args.checkpoint, args.duration, args.window, args.out)
    return 0 if result["node_alive_at_end"] else 1


COMMANDS = (
    Command("bringup", "start the policy node (and simulated arm) like arm.launch.py", _bringup_arguments, run_bringup),
    Command("instruct", "send an instruction to a running policy node", _instruct_arguments, run_instruct),
    Command(
        "bench-node",
        "the policy node's own overhead and latency, measured over DDS",
        _bench_node_arguments,
        run_bench_node,
    ),
    Command(
        "fuzz-node",
        "bad inputs and process freezes against a policy node on your arm config; audits every command",
        _fuzz_node_arguments,
        run_fuzz_node,
    ),
    Command(
        "soak",
        "the shipped policy on the MuJoCo arm for an hour: memory, latency and control period per window",
        _soak_arguments,
        run_soak,
    ),
)
