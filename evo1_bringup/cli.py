"""The `evo1` umbrella command."""

import sys


def main(argv: list[str] | None = None) -> int:
    del argv
    print("evo1: not yet", file=sys.stderr)
    return 1
