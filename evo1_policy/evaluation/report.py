"""The evaluation report: a terminal table, report.json and one self-contained HTML file (plots and
frames embedded) with everything needed to judge the run: what was run, per-joint errors, what the
model saw, and recorded against predicted actions per episode."""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import cv2
import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np

from .open_loop import EpisodeResult


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


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()


def plot_episode(result: EpisodeResult, compare: EpisodeResult | None = None, labels=("A", "B")) -> bytes:
    """Recorded vs predicted actions, one panel per joint (PNG bytes); a triangle under the
    curves marks each inference point (not a grid-like vertical line)."""
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
            marks = np.asarray(series.inference_steps) / series.fps
            ax.plot(
                marks,
                np.zeros_like(marks),
                transform=ax.get_xaxis_transform(),  # at the bottom of the panel, whatever the scale
                marker="^",
                markersize=5,
                linestyle="none",
                color=color,
                clip_on=False,
                label=f"{label}: inference" if j == 0 else None,
            )
        ax.set_ylabel(result.joint_names[j] if j < len(result.joint_names) else f"dim {j}")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    return _png(fig)


def plot_error_by_step(series: list[tuple[str, dict[str, Any]]]) -> bytes:
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for label, m in series:
        ax.plot(np.arange(len(m["mae_by_step"])), m["mae_by_step"], marker=".", label=label)
    ax.set_xlabel("step within the predicted chunk")
    ax.set_ylabel("MAE (robot units)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _img(data: bytes, kind: str, alt: str, width: str = "100%") -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/{kind};base64,{encoded}" style="max-width:{width}">'


def _frames(frames: list[np.ndarray]) -> str:
    """First, middle and last frame of an episode, as the model's preprocessing received them."""
    if not frames:
        return ""
    picked = [frames[0], frames[len(frames) // 2], frames[-1]]
    tags = []
    for name, frame in zip(("first", "middle", "last"), picked, strict=True):
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR))
        if ok:
            tags.append(_img(jpeg.tobytes(), "jpeg", f"{name} frame", "32%"))
    return "<p>" + " ".join(tags) + "</p>"


def _joint_table(labels: list[str], aggregate: dict[str, dict[str, Any]]) -> str:
    names = aggregate[labels[0]]["joint_names"]
    head = "".join(f"<th>{html.escape(label)} MSE</th><th>{html.escape(label)} MAE</th>" for label in labels)
    rows = []
    for name in names:
        cells = "".join(
            f"<td>{aggregate[lb]['mse'][name]:.5f}</td><td>{aggregate[lb]['mae'][name]:.4f}</td>" for lb in labels
        )
        rows.append(f"<tr><td>{html.escape(name)}</td>{cells}</tr>")
    grip = [lb for lb in labels if aggregate[lb].get("gripper_agreement")]
    for lb in grip:
        for name, value in aggregate[lb]["gripper_agreement"].items():
            what = f"{name} open/closed agreement ({lb})"
            rows.append(f"<tr><td>{html.escape(what)}</td><td colspan=2>{value:.0%}</td></tr>")
    return f"<table><tr><th>joint</th>{head}</tr>{''.join(rows)}</table>"


def _run_record(extra: dict[str, Any]) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        suite = version("evo1_bringup")
    except PackageNotFoundError:
        suite = "not installed"
    record = {
        "date (UTC)": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "suite version": suite,
        **{k: v for k, v in extra.items() if k not in ("bags",)},
        "bags": ", ".join(str(b) for b in extra.get("bags", [])),
    }
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in record.items())
    return f"<table class='record'>{rows}</table>"


def write_report(
    out: Path,
    results: dict[str, list[EpisodeResult]],
    per_bag: dict[str, dict[str, dict[str, Any]]],
    aggregate: dict[str, dict[str, Any]],
    extra: dict[str, Any] | None = None,
    frames: list[list[np.ndarray]] | None = None,
) -> str:
    """results[label][i]: one run per checkpoint label; per_bag[label][bag] and aggregate[label]:
    metrics; frames[i]: what the model saw in episode i (optional). Writes report.json,
    summary.txt and index.html (one file, nothing beside it) into `out`, removes the plot files
    earlier versions left there, and returns the summary table (for the terminal)."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in list(out.glob("episode_*.png")) + list(out.glob("error_vs_step.png")):
        stale.unlink()
    extra = dict(extra or {})
    labels = list(results)
    episodes = {
        label: [{"source": r.source, "index": r.index, "inference_steps": r.inference_steps} for r in runs]
        for label, runs in results.items()
    }
    report = {"checkpoints": labels, "aggregate": aggregate, "per_bag": per_bag, "episodes": episodes, **extra}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    table = summary_table(
        [(f"{label}: {Path(bag).name}", m) for label in labels for bag, m in per_bag[label].items()]
        + [(f"{label}: all {len(per_bag[label])} bag(s)", aggregate[label]) for label in labels]
    )
    (out / "summary.txt").write_text(table + "\n")
    body = [
        "<h1>Evo-1 replay evaluation</h1>",
        "<h2>What was run</h2>",
        _run_record({"checkpoints": ", ".join(labels), **extra}),
        "<h2>Summary</h2>",
        f"<pre>{html.escape(table)}</pre>",
        "<h2>Error per joint, all episodes</h2>",
        _joint_table(labels, aggregate),
        "<h2>Error against the step within the predicted chunk</h2>",
        _img(plot_error_by_step([(label, aggregate[label]) for label in labels]), "png", "error against chunk step"),
    ]
    first = results[labels[0]]
    second = results[labels[1]] if len(labels) > 1 else [None] * len(first)
    for i, (a, b) in enumerate(zip(first, second, strict=True)):
        title = f'Episode {i + 1}: {Path(a.source).name}, "{a.instruction}"'
        body += [
            f"<h2>{html.escape(title)}</h2>",
            _frames(frames[i]) if frames and i < len(frames) else "",
            "<p>Black: recorded actions. Coloured: each predicted chunk from its inference point (triangles).</p>",
            _img(plot_episode(a, b, (*labels, "")), "png", f"episode {i + 1} actions"),
        ]
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:1100px} pre{background:#f4f4f4;padding:1em}"
        " table{border-collapse:collapse} td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}"
    )
    (out / "index.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>Evo-1 replay evaluation</title><style>{style}</style>"
        "</head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    return table
