"""`evo1`: one command-line tool for the suite. `evo1 --help` lists the subcommands."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from evo1_policy.config import COMPILE_MODES

from .paths import checkpoint_arg

Handler = Callable[[argparse.Namespace], int]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows every option's default (none where there is nothing to show)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, argparse.SUPPRESS) or action.help is None:
            return action.help or ""
        return super()._get_help_string(action) or ""


def _model_source(parser: argparse.ArgumentParser) -> None:
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


def cmd_info(args: argparse.Namespace) -> int:
    from evo1_policy.bench import format_info, info

    result = info(args.config, args.checkpoint, args.dataset_key)
    print(json.dumps(result, indent=2) if args.json else format_info(result))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from evo1_policy.bench import bench, format_bench

    result = bench(
        args.config or (None if args.checkpoint else "evo1-tiny"),
        args.checkpoint,
        device=args.device,
        dtype=args.dtype,
        steps=args.steps,
        views=args.views,
        repeats=args.repeats,
        warmup=args.warmup,
        uncached_repeats=args.uncached_repeats,
        dataset_key=args.dataset_key,
        compile=args.compile,
        guided=args.guided,
        threads=args.threads,
    )
    print(format_bench(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def _numbers(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def cmd_bench_train(args: argparse.Namespace) -> int:
    from evo1_policy.bench_train import bench_train, format_bench_train

    switch = {"off": (False,), "on": (True,), "both": (False, True)}[args.checkpointing]
    result = bench_train(
        args.config,
        args.device,
        _numbers(args.batch),
        _numbers(args.stages),
        switch,
        args.steps,
        args.warmup,
        args.views,
    )
    print(format_bench_train(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    import torch

    from evo1_policy.checkpoint import load_checkpoint, save_checkpoint
    from evo1_policy.config import preset

    model, normalizer, tokenizer, report = load_checkpoint(
        args.source, args.allow_partial, args.tokenizer, args.arm, preset(args.base_preset), args.dataset_key
    )
    print(report.summary())
    dtype = torch.bfloat16 if args.bf16 else None
    metadata = {"converted_from": str(args.source)}
    save_checkpoint(args.destination, model, normalizer, tokenizer, metadata, dtype, not args.bundled_tokenizer)
    files = "config.json, model.safetensors, norm_stats.json" + ("" if args.bundled_tokenizer else ", tokenizer.json")
    print(f"wrote {args.destination} ({files})")
    return 0


def cmd_metaworld_record(args: argparse.Namespace) -> int:
    from evo1_policy.metaworld.record import record

    summary = record(
        args.out, args.tasks, args.episodes, args.seed, args.image_size, args.min_steps, not args.lossy, args.overwrite
    )
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


def cmd_metaworld_eval(args: argparse.Namespace) -> int:
    from evo1_policy.metaworld.evaluate import evaluate
    from evo1_policy.metaworld.protocol import SPLITS

    evaluate(
        args.checkpoint,
        args.out,
        args.tasks,
        args.episodes,
        args.device,
        args.dtype,
        args.steps,
        args.execute_steps,
        args.bounds,
        args.dataset_key,
        SPLITS[args.split] if args.seed is None else args.seed,
        compile=args.compile,
    )
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("evo1_bringup")
    except PackageNotFoundError:
        return "(not installed)"


class _SubParser(argparse.ArgumentParser):
    """Subcommands show their defaults in --help."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Handler]]:
    parser = argparse.ArgumentParser(
        prog="evo1", description="Evo-1 vision-language-action policy on ROS 2 arms.", formatter_class=HelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_SubParser)
    handlers: dict[str, Handler] = {}

    p = sub.add_parser("info", help="parameter counts per module")
    _model_source(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    handlers["info"] = cmd_info

    p = sub.add_parser("bench", help="milliseconds per chunk, chunks/s and peak memory")
    _model_source(p)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--dtype", default=None, help="float32 or bfloat16 (default: fp32 on CPU, bf16 on CUDA)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the config's)")
    p.add_argument("--views", type=int, default=1, help="camera views per observation (1-3)")
    p.add_argument("--repeats", type=int, default=20, help="timed chunks")
    p.add_argument("--warmup", type=int, default=3, help="untimed chunks first")
    p.add_argument(
        "--uncached-repeats",
        type=int,
        default=None,
        help="repeats without the prefix cache (default: --repeats; 0 skips)",
    )
    p.add_argument(
        "--compile",
        default="off",
        help="paths to time side by side in one run: off, graphs, compile, comma-separated (off,graphs); "
        "each is compared with the first",
    )
    p.add_argument("--guided", action="store_true", help="also time RTC-guided chunks (the node's default merge)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default, one per core)")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    handlers["bench"] = cmd_bench

    p = sub.add_parser("bench-train", help="training samples/s and peak memory per stage, batch and checkpointing")
    p.add_argument("--preset", "--config", dest="config", default="evo1-0.77b", metavar="PRESET", help="model preset")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--batch", default="8,16,32", help="batch sizes, comma-separated")
    p.add_argument("--stages", default="1,2", help="1 (VLM frozen), 2 (everything), comma-separated")
    p.add_argument(
        "--checkpointing", default="both", choices=["off", "on", "both"], help="activation checkpointing (VLM and head)"
    )
    p.add_argument("--steps", type=int, default=5, help="timed training steps per row")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--views", type=int, default=1, help="camera views per sample")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    handlers["bench-train"] = cmd_bench_train

    p = sub.add_parser("convert", help="any supported checkpoint (reference, LeRobot, ours) -> our safetensors folder")
    p.add_argument("source", type=checkpoint_arg, help="checkpoint folder or shipped name")
    p.add_argument("destination", help="folder to write")
    p.add_argument("--tokenizer", help="tokenizer folder (default: the checkpoint's, else the bundled Qwen2 one)")
    p.add_argument("--arm", help="entry of a multi-arm norm_stats.json")
    p.add_argument("--dataset-key", help="dataset entry of a multi-dataset norm_stats.json (kept as the only one)")
    p.add_argument("--allow-partial", action="store_true", help="accept missing/unexpected weights (reported)")
    p.add_argument("--bf16", action="store_true", help="store the weights in bfloat16 (half the size)")
    p.add_argument(
        "--bundled-tokenizer",
        action="store_true",
        help="leave tokenizer.json out (11 MB); loading then uses the bundled Qwen2 one, checked by hash",
    )
    p.add_argument(
        "--base-preset",
        default="evo1-0.77b",
        help="sizes the weights cannot tell (attention heads) for foreign formats",
    )
    handlers["convert"] = cmd_convert

    p = sub.add_parser("metaworld-eval", help="Meta-World success with the reference's protocol (docs/metaworld.md)")
    p.add_argument("--checkpoint", type=checkpoint_arg, help="checkpoint folder: reference, LeRobot or ours")
    p.add_argument("--tasks", default="MT10", help="MT50, MT10, a difficulty group or names (reach-v3,push-v3)")
    p.add_argument("--episodes", type=int, default=10, help="episodes per task (the reference: 10)")
    p.add_argument("--out", default="runs/metaworld_eval", help="folder for results.json, table.txt, plots")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--dtype", default=None, help="float32 or bfloat16 (default: fp32 on CPU, bf16 on CUDA)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the checkpoint's)")
    p.add_argument("--execute-steps", type=int, default=15, help="actions run from each chunk (the reference: 15)")
    p.add_argument("--bounds", action="store_true", help="also score the scripted experts and random actions")
    p.add_argument("--dataset-key", help="norm-stats entry of a checkpoint trained on several datasets")
    p.add_argument(
        "--split",
        default="validation",
        choices=["validation", "report"],
        help="environment seed range: validation (2042) to choose checkpoints and recipes, report (4042, the "
        "reference's) for a shipped model's figures, once",
    )
    p.add_argument("--seed", type=int, default=None, help="environment seed (default: the split's)")
    compile_option(p)
    handlers["metaworld-eval"] = cmd_metaworld_eval

    p = sub.add_parser("metaworld-record", help="metaworld's scripted experts -> a LeRobot dataset (docs/metaworld.md)")
    p.add_argument("--out", required=True, help="dataset folder to write")
    p.add_argument("--tasks", default="MT10", help="MT10, MT50, a difficulty group or names (reach-v3,push-v3)")
    p.add_argument("--episodes", type=int, default=20, help="expert episodes tried per task (failures are dropped)")
    p.add_argument("--seed", type=int, default=0, help="environment seed (the evaluation uses 4042)")
    p.add_argument("--image-size", type=int, default=448, help="stored frame size (448: what the reference sends)")
    p.add_argument("--min-steps", type=int, default=50, help="run kept episodes on past success to this many steps")
    p.add_argument("--lossy", action="store_true", help="LeRobot's lossy video instead of exact pixels")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    p.add_argument("--json", metavar="FILE", help="also write the per-task counts as JSON")
    handlers["metaworld-record"] = cmd_metaworld_record

    from evo1_bringup import commands

    commands.register(sub, handlers)
    return parser, handlers


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


if __name__ == "__main__":
    sys.exit(main())
