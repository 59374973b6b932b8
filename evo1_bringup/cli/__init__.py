"""`evo1`: one command-line tool for the suite. `evo1 --help` lists the subcommands.

The subcommands live in rooms by what a user is doing, and `COMMANDS` is the one table that
registers them, in the order --help lists them: on an arm (`arm.py`), data and training
(`data.py`), evaluation (`evaluation.py`), model tools (`models.py`). A handler imports what it
needs when it runs, so `evo1 --help` and the commands that need no model never load torch.
"""

from __future__ import annotations

import argparse
import sys

from . import arm, data, evaluation, models
from .options import Command, Handler, HelpFormatter, SubParser

COMMANDS: tuple[Command, ...] = (*arm.COMMANDS, *data.COMMANDS, *evaluation.COMMANDS, *models.COMMANDS)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("evo1_bringup")
    except PackageNotFoundError:
        return "(not installed)"


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Handler]]:
    parser = argparse.ArgumentParser(
        prog="evo1", description="Evo-1 vision-language-action policy on ROS 2 arms.", formatter_class=HelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=SubParser)
    for command in COMMANDS:
        command.arguments(sub.add_parser(command.name, help=command.help))
    return parser, {command.name: command.run for command in COMMANDS}


def main(argv: list[str] | None = None) -> int:
    parser, handlers = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # name the subcommand's own usage, not only the top-level one
        chosen = parser._subparsers._group_actions[0].choices.get(args.command) if args.command else None
        (chosen or parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return handlers[args.command](args)
    except (ValueError, FileNotFoundError, RuntimeError, OSError) as error:
        print(f"evo1 {args.command}: {error}", file=sys.stderr)
        return 1
