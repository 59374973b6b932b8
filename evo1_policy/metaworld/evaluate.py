"""`evo1 metaworld-eval`: a checkpoint on Meta-World with the reference's protocol
(protocol.py), through the same `Evo1Policy.predict_chunk` and chunk executor the ROS node runs.

Prints per-task and per-group success like the paper's table, and writes results.json, a bar plot
(success.png), and for the first episode of each task a frame strip (strips/<task>.png) and a
video (videos/<task>.mp4) of what the policy saw at each chunk. With `bounds`, metaworld's
scripted experts and uniform random actions play the same episodes (fresh environments built the
same way draw the same placements).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..data.video import write_mp4
from .protocol import EPISODES, EXECUTE_STEPS, GROUPS, MAX_STEPS, SEED, Task, group_average, select_tasks
from .rollout import (
    ChunkFn,
    EpisodeResult,
    expert_controller,
    mt50_envs,
    random_controller,
    reference_executor,
    run_episode,
)

# The paper's Meta-World table (success %, per difficulty group and average).
PAPER_ROWS: dict[str, dict[str, float]] = {
    "Evo-1 (paper)": {"easy": 89.2, "medium": 76.8, "hard": 77.2, "very_hard": 79.2, "average": 80.6},
    "SmolVLA (paper)": {"easy": 87.1, "medium": 51.8, "hard": 70.0, "very_hard": 64.0, "average": 68.2},
    "pi0 (paper)": {"easy": 71.8, "medium": 48.2, "hard": 41.7, "very_hard": 30.0, "average": 47.9},
}
STRIP_FRAMES = 8
VIDEO_FPS = 80 / EXECUTE_STEPS  # one frame per chunk, played at the simulator's speed (80 steps/s)


def policy_controller(policy: Any, steps: int | None, seed: int) -> tuple[ChunkFn, list[float]]:
    """The policy as a chunk source: one 448 px view, obs[:8], the task's prompt. Each chunk's
    noise is seeded (seed, seed + 1, ...) so a run repeats. Also returns the per-chunk times."""
    timings: list[float] = []
    counter = itertools.count(seed)

    def act(frame: np.ndarray, state: np.ndarray, prompt: str, _obs: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        chunk = policy.predict_chunk([frame], state.astype(np.float64), prompt, steps=steps, seed=next(counter))
        timings.append(time.perf_counter() - start)
        return chunk

    return act, timings


def _score(results: list[EpisodeResult], tasks: list[Task]) -> dict[str, Any]:
    by_task: dict[str, list[EpisodeResult]] = {t.env_name: [] for t in tasks}
    for r in results:
        by_task[r.task].append(r)
    per_task = {name: float(np.mean([r.success for r in rs])) if rs else 0.0 for name, rs in by_task.items()}
    per_group: dict[str, float] = {}
    for group in GROUPS:
        rs = [r for t in tasks if t.group == group for r in by_task[t.env_name]]
        if rs:
            per_group[group] = float(np.mean([r.success for r in rs]))
    return {
        "per_task": per_task,
        "per_group": per_group,
        "task_average": float(np.mean(list(per_task.values()))) if per_task else 0.0,
        "group_average": group_average(per_group),
        "episodes": [
            {"task": r.task, "episode": r.episode, "success": r.success, "steps": r.steps, "chunks": r.chunks}
            for r in results
        ],
    }


def run_controller(
    name: str,
    make: Callable[[Task], ChunkFn],
    tasks: list[Task],
    episodes: int,
    execute_steps: int,
    seed: int,
    render: bool,
    strips: int = 0,
    log: Any = print,
) -> list[EpisodeResult]:
    """Every (task, episode) with fresh environments, in the reference's order."""
    results: list[EpisodeResult] = []
    with mt50_envs(seed) as envs:
        for task in tasks:
            controller = make(task)
            wins = 0
            for episode in range(episodes):
                result = run_episode(
                    envs[task.index],
                    task,
                    episode,
                    controller,
                    reference_executor(execute_steps),
                    seed,
                    keep_frames=episode < strips,
                    render=render,
                )
                results.append(result)
                wins += result.success
            log(f"[{name}] {task.env_name:<28} {task.prompt:<58} {wins}/{episodes}")
    return results


def format_table(scores: dict[str, dict[str, Any]], tasks: list[Task]) -> str:
    names = list(scores)
    header = f"{'task':<28} {'group':<10} " + " ".join(f"{n[:12]:>12}" for n in names)
    lines = [header, "-" * len(header)]
    for t in tasks:
        cells = " ".join(f"{100 * scores[n]['per_task'][t.env_name]:>11.0f}%" for n in names)
        lines.append(f"{t.env_name:<28} {t.group:<10} {cells}")
    lines.append("-" * len(header))
    for group in GROUPS:
        if group in scores[names[0]]["per_group"]:
            cells = " ".join(f"{100 * scores[n]['per_group'][group]:>11.1f}%" for n in names)
            lines.append(f"{'group: ' + group:<39} {cells}")
    for key, label in (("task_average", "average over tasks"), ("group_average", "average over groups")):
        cells = " ".join(f"{100 * scores[n][key]:>11.1f}%" for n in names)
        lines.append(f"{label:<39} {cells}")
    lines.append("")
    lines.append(
        "paper (MT50, success %):  "
        + "   ".join(f"{row}: " + " / ".join(f"{v:.1f}" for v in values.values()) for row, values in PAPER_ROWS.items())
        + "   (easy / medium / hard / very hard / average)"
    )
    return "\n".join(lines)


def _plot(scores: dict[str, dict[str, Any]], tasks: list[Task], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(scores)
    x = np.arange(len(tasks))
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(tasks) + 2), 4))
    for i, name in enumerate(names):
        values = [100 * scores[name]["per_task"][t.env_name] for t in tasks]
        ax.bar(x + (i - (len(names) - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(x, [t.env_name.removesuffix("-v3") for t in tasks], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("success %")
    ax.set_ylim(0, 105)
    ax.set_title("Meta-World success per task (10 episodes each, reference protocol)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _strip(result: EpisodeResult, path: Path, size: int = 160) -> None:
    """Up to STRIP_FRAMES of the frames the policy saw, evenly spaced, side by side."""
    frames = result.frames
    if not frames:
        return
    picks = np.unique(np.linspace(0, len(frames) - 1, min(STRIP_FRAMES, len(frames))).round().astype(int))
    tiles = [cv2.resize(frames[i], (size, size), interpolation=cv2.INTER_AREA) for i in picks]
    strip = np.concatenate(tiles, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))


def _run_policy(
    checkpoint: str,
    chosen: list,
    episodes: int,
    execute_steps: int,
    seed: int,
    log: Any,
    policy_options: dict[str, Any],
) -> tuple[list[EpisodeResult], dict[str, Any], str]:
    """The checkpoint's episodes, how the time split between policy and simulator, and its path."""
    from ..policy import Evo1Policy

    steps = policy_options.pop("steps")
    policy = Evo1Policy.from_checkpoint(checkpoint, **policy_options)
    controller, chunk_times = policy_controller(policy, steps, seed)
    start = time.monotonic()
    results = run_controller("policy", lambda _t: controller, chosen, episodes, execute_steps, seed, True, 1, log)
    wall = time.monotonic() - start
    in_policy = float(np.sum(chunk_times))
    timing = {
        "wall_s": wall,
        "chunks": len(chunk_times),
        "chunk_ms_median": 1e3 * float(np.median(chunk_times)) if chunk_times else 0.0,
        "policy_s": in_policy,
        "simulator_s": wall - in_policy,  # building the envs, rendering, stepping
        "env_steps": int(sum(r.steps for r in results)),
    }
    log(
        f"[policy] {wall:.0f} s: {len(chunk_times)} chunks, {timing['chunk_ms_median']:.0f} ms each (median), "
        f"{timing['policy_s']:.0f} s in the policy, {timing['simulator_s']:.0f} s in the simulator"
    )
    return results, timing, policy.inference_path


def _run_bounds(chosen: list, episodes: int, seed: int, log: Any) -> dict[str, list[EpisodeResult]]:
    """The scripted experts and random actions on the same placements (both act every step)."""
    return {
        "expert": run_controller(
            "expert", lambda t: expert_controller(t.env_name), chosen, episodes, 1, seed, False, 0, log
        ),
        "random": run_controller(
            "random", lambda t: random_controller(seed + t.index), chosen, episodes, 1, seed, False, 0, log
        ),
    }


def _write_outputs(
    out: Path, summary: dict[str, Any], table: str, chosen: list, policy_results: list[EpisodeResult]
) -> None:
    """results.json, table.txt, the bar plot, and a strip and an mp4 per task the policy ran."""
    _plot(summary["scores"], chosen, out / "success.png")
    for result in policy_results:
        if result.frames:
            _strip(result, out / "strips" / f"{result.task}.png")
            write_mp4(out / "videos" / f"{result.task}.mp4", result.frames, VIDEO_FPS, lossless=False)
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "table.txt").write_text(table + "\n")


def evaluate(
    checkpoint: str | None,
    out: str | Path,
    tasks: str = "MT10",
    episodes: int = EPISODES,
    device: str = "cpu",
    dtype: str | None = None,
    steps: int | None = None,
    execute_steps: int = EXECUTE_STEPS,
    bounds: bool = False,
    dataset_key: str | None = None,
    seed: int = SEED,
    log: Any = print,
    compile: str = "off",
) -> dict[str, Any]:
    """Score a checkpoint (and, with `bounds`, the experts and random actions) on `tasks`."""
    chosen = select_tasks(tasks)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timing: dict[str, Any] = {}
    inference_path = ""
    all_results: dict[str, list[EpisodeResult]] = {}
    if checkpoint:
        options = {"device": device, "dtype": dtype, "dataset_key": dataset_key, "compile": compile, "steps": steps}
        all_results["policy"], timing, inference_path = _run_policy(
            checkpoint, chosen, episodes, execute_steps, seed, log, options
        )
    if bounds:
        all_results.update(_run_bounds(chosen, episodes, seed, log))
    if not all_results:
        raise ValueError("nothing to evaluate: give --checkpoint, --bounds, or both")
    scores = {name: _score(results, chosen) for name, results in all_results.items()}
    table = format_table(scores, chosen)
    log(table)
    summary = {
        "checkpoint": str(checkpoint) if checkpoint else None,
        "tasks": [t.env_name for t in chosen],
        "protocol": {
            "episodes_per_task": episodes,
            "execute_steps": execute_steps,
            "max_steps": MAX_STEPS,
            "seed": seed,
            "denoising_steps": steps,
            "device": device,
            "inference_path": inference_path,
        },
        "scores": scores,
        "timing": timing,
        "paper": PAPER_ROWS,
    }
    _write_outputs(out, summary, table, chosen, all_results.get("policy", []))
    log(f"wrote {out}/results.json, table.txt, success.png, strips/ and videos/")
    return summary
