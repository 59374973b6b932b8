"""`evo1` model tools: what a model is (info), how fast it runs (bench, bench-train), and
converting any supported checkpoint to ours (convert). No ROS needed."""

from __future__ import annotations

import argparse
import json

from ..paths import checkpoint_arg
from .options import Command, json_option, model_source, numbers, write_json


def _info_arguments(p: argparse.ArgumentParser) -> None:
    model_source(p)
    p.add_argument("--json", action="store_true", help="print JSON")


def run_info(args: argparse.Namespace) -> int:
    from evo1_policy.evaluation.bench import format_info, info

    result = info(args.config, args.checkpoint, args.dataset_key)
    print(json.dumps(result, indent=2) if args.json else format_info(result))
    return 0


def _bench_arguments(p: argparse.ArgumentParser) -> None:
    model_source(p)
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
    json_option(p)


def run_bench(args: argparse.Namespace) -> int:
    from evo1_policy.evaluation.bench import bench, format_bench

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
    write_json(args.json, result)
    return 0


def _bench_train_arguments(p: argparse.ArgumentParser) -> None:
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
    json_option(p)


def run_bench_train(args: argparse.Namespace) -> int:
    from evo1_policy.evaluation.bench_train import bench_train, format_bench_train

    switch = {"off": (False,), "on": (True,), "both": (False, True)}[args.checkpointing]
    result = bench_train(
        args.config, args.device, numbers(args.batch), numbers(args.stages), switch, args.steps, args.warmup, args.views
    )
    print(format_bench_train(result))
    write_json(args.json, result)
    return 0


def _convert_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", type=checkpoint_arg, help="checkpoint folder or shipped name")
    p.add_argument("destination", help="folder to write")
    p.add_argument("--tokenizer", help="tokenizer folder (default: the checkpoint's, else the bundled Qwen2 one)")
    p.add_argument("--arm", help="entry of a multi-arm norm_stats.json")
    p.add_argument("--dataset-key", help="dataset entry of a multi-dataset norm_stats.json (kept as the only one)")
    p.add_argument("--allow-partial", action="store_true", help="accept missing/unexpected weights (reported)")
    p.add_argument("--bf16", action="store_true", help="store the weights in bfloat16 (half the size)")
    p.add_argument("--recipe", default="", help="the script that rebuilds this model, kept in its metadata")
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


def run_convert(args: argparse.Namespace) -> int:
    import torch

    from evo1_policy.checkpoint import load_checkpoint, save_checkpoint
    from evo1_policy.config import preset

    model, normalizer, tokenizer, report = load_checkpoint(
        args.source, args.allow_partial, args.tokenizer, args.arm, preset(args.base_preset), args.dataset_key
    )
    print(report.summary())
    dtype = torch.bfloat16 if args.bf16 else None
    metadata = {"converted_from": str(args.source), **({"recipe": args.recipe} if args.recipe else {})}
    save_checkpoint(args.destination, model, normalizer, tokenizer, metadata, dtype, not args.bundled_tokenizer)
    files = "config.json, model.safetensors, norm_stats.json" + ("" if args.bundled_tokenizer else ", tokenizer.json")
    print(f"wrote {args.destination} ({files})")
    return 0


COMMANDS = (
    Command("info", "parameter counts per module", _info_arguments, run_info),
    Command("bench", "milliseconds per chunk, chunks/s and peak memory", _bench_arguments, run_bench),
    Command(
        "bench-train",
        "training samples/s and peak memory per stage, batch and checkpointing",
        _bench_train_arguments,
        run_bench_train,
    ),
    Command(
        "convert",
        "any supported checkpoint (reference, LeRobot, ours) -> our safetensors folder",
        _convert_arguments,
        run_convert,
    ),
)
