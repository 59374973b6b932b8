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
