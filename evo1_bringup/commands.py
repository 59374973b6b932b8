"""Subcommands of `evo1` that need ROS 2 (bring-up, instruct, ...), registered by cli.py."""

from __future__ import annotations

import argparse
from collections.abc import Callable

Handler = Callable[[argparse.Namespace], int]


def register(sub: argparse._SubParsersAction, handlers: dict[str, Handler]) -> None:
    del sub, handlers
