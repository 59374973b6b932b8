"""`evo1` evaluation: recorded runs (eval-bag), the simulated arm (sim-eval, and the grounding
checks vqa-eval and sim-probe) and Meta-World with the reference's protocol (metaworld-eval)."""

from __future__ import annotations

import argparse

from ..paths import checkpoint_arg
from ..sim.seeds import EVAL_SEED_START, SPLITS
from .options import Command, action_source, compile_option, json_option, write_json


def _eval_bag_arguments(p: argparse.ArgumentParser) -> None:
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
    compile_option(p)
    action_source(p)


def run_eval_bag(args: argparse.Namespace) -> int:
    if args.live:
        from ..check.eval_live import eval_live

        eval_live(args.bags, args.config, args.out, args.rate, args.namespace, args.timeout)
        return 0
    if not args.checkpoint:
        raise ValueError("--checkpoint is needed (or --live, to score the running node)")
    from ..check.eval_bag import eval_bags

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


def _sim_eval_arguments(p: argparse.ArgumentParser) -> None:
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
    compile_option(p, "the arm config's model.compile")


def run_sim_eval(args: argparse.Namespace) -> int:
    from ..sim.evaluate import sim_eval

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


def _metaworld_eval_arguments(p: argparse.ArgumentParser) -> None:
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


def run_metaworld_eval(args: argparse.Namespace) -> int:
    from evo1_policy.metaworld.evaluate import evaluate
    from evo1_policy.metaworld.protocol import SPLITS as ENV_SPLITS

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
        ENV_SPLITS[args.split] if args.seed is None else args.seed,
        compile=args.compile,
    )
    return 0


def _vqa_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("vlm", help="folder written by evo1 pretrain-vlm (its language head reads the answers)")
    p.add_argument(
        "--checkpoint",
        type=checkpoint_arg,
        help="a policy checkpoint (folder or shipped name): score its backbone instead (after action training)",
    )
    p.add_argument("--scenes", type=int, default=500, help="held-out scenes asked")
    json_option(p)


def run_vqa_eval(args: argparse.Namespace) -> int:
    from ..sim.grounding import vqa_eval

    accuracy = vqa_eval(args.vlm, args.checkpoint, args.scenes)
    print(", ".join(f"{k} {v:.1%}" for k, v in accuracy.items()))
    write_json(args.json, accuracy, say=False)
    return 0


def _sim_probe_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default="sim_touch", help="checkpoint folder or shipped name")
    p.add_argument("--scenes", type=int, default=30, help="placements, each asked once per cube")
    p.add_argument("--seed-start", type=int, default=EVAL_SEED_START, help="placements: seeds from here on")
    json_option(p)


def run_sim_probe(args: argparse.Namespace) -> int:
    from ..sim.grounding import first_chunk_probe, format_probe

    result = first_chunk_probe(args.checkpoint, args.scenes, args.seed_start)
    print(format_probe(result))
    write_json(args.json, result, say=False)
    return 0


COMMANDS = (
    Command(
        "eval-bag",
        "score a checkpoint against recorded bags or LeRobot datasets (open loop)",
        _eval_bag_arguments,
        run_eval_bag,
    ),
    Command(
        "sim-eval",
        "success rate of a checkpoint on the simulated arm (sim + node processes)",
        _sim_eval_arguments,
        run_sim_eval,
    ),
    Command(
        "metaworld-eval",
        "Meta-World success with the reference's protocol (docs/metaworld.md)",
        _metaworld_eval_arguments,
        run_metaworld_eval,
    ),
    Command(
        "vqa-eval",
        "held-out VQA accuracy of a pretrained VLM (or of a policy's backbone)",
        _vqa_eval_arguments,
        run_vqa_eval,
    ),
    Command(
        "sim-probe",
        "first-chunk probe: does the policy head for the cube it is told?",
        _sim_probe_arguments,
        run_sim_probe,
    ),
)
