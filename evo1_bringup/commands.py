"""Subcommands of `evo1` that need ROS 2, registered by cli.py."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from .launch_args import LAUNCH_ARGUMENTS

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
        instruction=args.instruction,
        duration=args.duration,
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


def register(sub: argparse._SubParsersAction, handlers: dict[str, Handler]) -> None:
    p = sub.add_parser("bringup", help="start the policy node (and simulated arm) like arm.launch.py")
    for arg in LAUNCH_ARGUMENTS:
        p.add_argument(f"--{arg.name.replace('_', '-')}", dest=arg.name, default=arg.default, help=arg.description)
    p.add_argument("--instruction", help="publish this instruction at start")
    p.add_argument("--duration", type=float, help="stop after this many seconds and print a summary")
    handlers["bringup"] = cmd_bringup

    p = sub.add_parser("instruct", help="send an instruction to a running policy node")
    p.add_argument("text")
    p.add_argument("--namespace", default="")
    p.add_argument("--topic", default="instruction")
    p.add_argument("--wait", type=float, default=10.0, help="seconds to wait for a policy node to listen")
    handlers["instruct"] = cmd_instruct

    p = sub.add_parser("bench-node", help="the policy node's own overhead and latency, measured over DDS")
    p.add_argument("--arm-config", default="sim_arm")
    p.add_argument("--checkpoint", default="", help="default: the untrained evo1-tiny preset")
    p.add_argument("--cameras", type=int, default=1)
    p.add_argument("--size", default="640x480", help="camera image WIDTHxHEIGHT")
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--json", metavar="FILE")
    handlers["bench-node"] = cmd_bench_node
