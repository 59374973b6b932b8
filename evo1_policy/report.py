"""The evaluation report: a terminal table, report.json, PNG plots and an HTML page that shows them."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np

from .evaluate import EpisodeResult


def summary_table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    """One line per (label, metrics): mean MSE/MAE, worst joint, gripper agreement, latency."""
    header = f"{'run':<44} {'MSE':>10} {'MAE':>9} {'worst joint (MAE)':>24} {'gripper':>8} {'ms p50':>8}"
    lines = [header, "-" * len(header)]
    for label, m in rows:
        worst = max(m["mae"], key=m["mae"].get)
        worst_text = "{} ({:.4f})".format(worst, m["mae"][worst])
        gripper = m.get("gripper_agreement")
        grip = f"{np.mean(list(gripper.values())):.0%}" if gripper else "-"
        lines.append(
            f"{label[-44:]:<44} {m['mse_mean']:>10.5f} {m['mae_mean']:>9.4f} "
            f"{worst_text:>24} {grip:>8} {m['latency_ms']['p50']:>8.1f}"
        )
    return "\n".join(lines)


def plot_episode(result: EpisodeResult, path: Path, compare: EpisodeResult | None = None, labels=("A", "B")) -> Path:
    """Recorded vs predicted actions, one panel per joint; inference points marked."""
    joints = result.recorded.shape[1]
    fig, axes = plt.subplots(joints, 1, figsize=(10, 2.0 * joints), sharex=True, squeeze=False)
    t = np.arange(len(result.recorded)) / result.fps
    for j, ax in enumerate(axes[:, 0]):
        ax.plot(t, result.recorded[:, j], color="black", linewidth=1.5, label="recorded")
        for series, color, label in ((result, "tab:blue", labels[0]), (compare, "tab:orange", labels[1])):
            if series is None:
                continue
            for k, (step, chunk) in enumerate(zip(series.inference_steps, series.predictions, strict=True)):
                n = min(len(chunk), len(series.recorded) - step)
                ax.plot(
                    t[step : step + n],
                    chunk[:n, j],
                    color=color,
                    alpha=0.8,
                    linewidth=1,
                    label=label if k == 0 else None,
                )
                ax.axvline(step / series.fps, color=color, alpha=0.15, linewidth=0.8)
        ax.set_ylabel(result.joint_names[j] if j < len(result.joint_names) else f"dim {j}")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper right", fontsize=8)
    axes[0, 0].set_title(
        f'{Path(result.source).name}, episode {result.index}: "{result.instruction}"  (lines: inference points)'
    )
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_error_by_step(series: list[tuple[str, dict[str, Any]]], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for label, m in series:
        ax.plot(np.arange(len(m["mae_by_step"])), m["mae_by_step"], marker=".", label=label)
    ax.set_xlabel("step within the predicted chunk")
    ax.set_ylabel("MAE (robot units)")
    ax.set_title("error vs horizon step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def write_report(
    out: Path,
    results: dict[str, list[EpisodeResult]],
    per_bag: dict[str, dict[str, dict[str, Any]]],
    aggregate: dict[str, dict[str, Any]],
    extra: dict[str, Any] | None = None,
) -> str:
    """results[label][i]: one run per checkpoint label; per_bag[label][bag] and aggregate[label]: metrics.
    Writes the files into `out` and returns the summary table (for the terminal)."""
    out.mkdir(parents=True, exist_ok=True)
    labels = list(results)
    images: list[Path] = [
        plot_error_by_step([(label, aggregate[label]) for label in labels], out / "error_vs_step.png")
    ]
    first = results[labels[0]]
    second = results[labels[1]] if len(labels) > 1 else [None] * len(first)
    for i, (a, b) in enumerate(zip(first, second, strict=True)):
        images.append(plot_episode(a, out / f"episode_{i:03d}.png", b, (*labels, "")))
    episodes = {
        label: [{"source": r.source, "index": r.index, "inference_steps": r.inference_steps} for r in runs]
        for label, runs in results.items()
    }
    report = {"checkpoints": labels, "aggregate": aggregate, "per_bag": per_bag, "episodes": episodes, **(extra or {})}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    table = summary_table(
        [(f"{label}: {Path(bag).name}", m) for label in labels for bag, m in per_bag[label].items()]
        + [(f"{label}: all {len(per_bag[label])} bag(s)", aggregate[label]) for label in labels]
    )
    (out / "summary.txt").write_text(table + "\n")
    body = [
        "<h1>Evo-1 replay evaluation</h1>",
        f"<p>checkpoints: {', '.join(html.escape(label) for label in labels)}</p>",
        f"<pre>{html.escape(table)}</pre>",
    ]
    body += [f'<h2>{html.escape(p.stem)}</h2><img src="{p.name}" style="max-width:100%">' for p in images]
    (out / "index.html").write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>Evo-1 replay evaluation</title>"
        "<style>body{font-family:sans-serif;margin:2em} pre{background:#f4f4f4;padding:1em}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )
    return table
