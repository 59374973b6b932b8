"""`evo1 compare-bags A B`: do two recordings of the same episodes decode to the same training
samples? Each folder's bags are read as bag2dataset reads them (the arm config's topics, the
control grid) and paired in the order they were recorded; per pair: lengths, the offset of
the first sample, and the largest difference of states, actions and frames, at the same step
and allowing one step of timing jitter (each sample against the nearest of the other run's
previous, same and next step). Written for `evo1 record` against `evo1 sim-record`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from evo1_policy.data.episode import Episode
from evo1_policy.data.rosbag import BagSpec, read_bag


def bags_in(folder: Path) -> list[Path]:
    """The bag folders directly under `folder` (those with a metadata.yaml)."""
    return sorted(p for p in folder.iterdir() if (p / "metadata.yaml").is_file())


def read_in_order(folder: Path, spec: BagSpec) -> list[Episode]:
    episodes = [read_bag(bag, spec, None, i) for i, bag in enumerate(bags_in(folder))]
    return sorted(episodes, key=lambda e: e.start_time)


def _nearest(a: np.ndarray, b: np.ndarray, reduce: Any) -> tuple[float, float]:
    """Largest per-sample difference of a against b at the same step, and against the nearest of
    b's steps i-1, i, i+1 (one step of timing jitter). reduce: (x, y) -> per-sample difference."""
    n = min(len(a), len(b))
    same = reduce(a[:n], b[:n])
    candidates = [same]
    for shift in (-1, 1):
        lo, hi = max(0, -shift), min(n, len(b) - shift)
        shifted = np.full(n, np.inf)
        shifted[lo:hi] = reduce(a[lo:hi], b[lo + shift : hi + shift])
        candidates.append(shifted)
    return float(same.max()), float(np.min(candidates, axis=0).max())


def compare_pair(a: Episode, b: Episode) -> dict[str, Any]:
    joint_diff = lambda x, y: np.abs(x - y).max(axis=1)  # noqa: E731 - a reduce for _nearest
    pixel_diff = lambda x, y: np.abs(x.astype(np.int16) - y.astype(np.int16)).mean(axis=(1, 2, 3))  # noqa: E731
    states, states_jitter = _nearest(a.states, b.states, joint_diff)
    actions, actions_jitter = _nearest(a.actions, b.actions, joint_diff)
    frames = [_nearest(fa, fb, pixel_diff) for fa, fb in zip(a.images, b.images, strict=True)]
    return {
        "a": a.source,
        "b": b.source,
        "instruction_same": a.instruction == b.instruction,
        "lengths": [a.length, b.length],
        "state_max_diff": states,
        "state_max_diff_within_one_step": states_jitter,
        "action_max_diff": actions,
        "action_max_diff_within_one_step": actions_jitter,
        "frame_max_mean_abs_diff": max(f[0] for f in frames),
        "frame_max_mean_abs_diff_within_one_step": max(f[1] for f in frames),
    }


def compare_folders(folder_a: Path, folder_b: Path, spec: BagSpec) -> dict[str, Any]:
    a, b = read_in_order(folder_a, spec), read_in_order(folder_b, spec)
    if len(a) != len(b):
        raise ValueError(f"{folder_a} has {len(a)} bags and {folder_b} {len(b)}: record the same episodes in both")
    pairs = [compare_pair(x, y) for x, y in zip(a, b, strict=True)]
    keys = [k for k in pairs[0] if k.endswith(("diff", "within_one_step"))] if pairs else []
    return {
        "episodes": len(pairs),
        "step_seconds": 1.0 / spec.rate_hz,
        "instructions_same": all(p["instruction_same"] for p in pairs),
        "largest_length_difference": max((abs(p["lengths"][0] - p["lengths"][1]) for p in pairs), default=0),
        "largest": {k: max(p[k] for p in pairs) for k in keys},
        "pairs": pairs,
    }


def format_comparison(result: dict[str, Any]) -> str:
    big = result["largest"]
    return "\n".join(
        [
            f"[compare-bags] {result['episodes']} episode pairs; instructions the same: {result['instructions_same']}; "
            f"lengths differ by at most {result['largest_length_difference']} steps",
            f"[compare-bags] largest state difference {big['state_max_diff']:.4f} at the same step, "
            f"{big['state_max_diff_within_one_step']:.4f} within one step ({result['step_seconds'] * 1e3:.0f} ms)",
            f"[compare-bags] largest action difference {big['action_max_diff']:.4f} at the same step, "
            f"{big['action_max_diff_within_one_step']:.4f} within one step",
            f"[compare-bags] largest mean frame difference {big['frame_max_mean_abs_diff']:.2f} / 255 at the same "
            f"step, {big['frame_max_mean_abs_diff_within_one_step']:.2f} within one step",
        ]
    )
