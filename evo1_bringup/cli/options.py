"""What the `evo1` subcommands share: the command record, the help formatter and the options
several rooms take (a model source, --compile, --action-source, --json)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evo1_policy.config import COMPILE_MODES

from ..paths import checkpoint_arg

Handler = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Command:
    """One `evo1` subcommand: its name, the one-line help, its options and what it runs."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Handler


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows every option's default (none where there is nothing to show)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, argparse.SUPPRESS) or action.help is None:
            return action.help or ""
        return super()._get_help_string(action) or ""


class SubParser(argparse.ArgumentParser):
    """Subcommands show their defaults in --help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def model_source(parser: argparse.ArgumentParser) -> None:
    """--preset or --checkpoint (one of them), and --dataset-key."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--preset",
        "--config",
        dest="config",
        metavar="PRESET",
        help="model preset (evo1-0.77b, evo1-tiny, evo1-sim, evo1-metaworld)",
    )
    source.add_argument("--checkpoint", type=checkpoint_arg, help="checkpoint folder or shipped name (sim_touch)")
    parser.add_argument(
        "--dataset-key", help="norm-stats entry of a checkpoint trained on several datasets (the error lists them)"
    )


def compile_option(parser: argparse.ArgumentParser, default_meaning: str = "") -> None:
    """--compile: how chunks run (evo1_policy/static.py); the node's model.compile."""
    choices = list(COMPILE_MODES) + ([""] if default_meaning else [])
    parser.add_argument(
        "--compile",
        default="" if default_meaning else "off",
        choices=choices,
        metavar="MODE",
        help="off (eager), graphs (CUDA graphs over static shapes, CUDA only), compile (torch.compile)"
        + (f"; empty: {default_meaning}" if default_meaning else ""),
    )


def action_source(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--action-source",
        default="command",
        choices=["command", "next-state"],
        help="the actions of a bag: the commands on the arm config's command topic (record.command_topic, "
        "else the trajectory topic), or the next joint state (demonstrations recorded without commands)",
    )


def json_option(parser: argparse.ArgumentParser, what: str = "the figures") -> None:
    parser.add_argument("--json", metavar="FILE", help=f"also write {what} as JSON")


def write_json(path: str | None, result: Any, say: bool = True) -> None:
    """The --json file, when one was asked for."""
    if not path:
        return
    Path(path).write_text(json.dumps(result, indent=2) + "\n")
    if say:
        print(f"wrote {path}")


def numbers(text: str) -> tuple[int, ...]:
    """'8,16,32' -> (8, 16, 32)."""
    return tuple(int(v) for v in text.split(",") if v.strip())
