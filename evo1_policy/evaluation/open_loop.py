"""Open-loop evaluation: run the policy along recorded episodes and compare with what was commanded.

Every `every` steps the policy predicts a chunk from the recorded observation; action i of that
chunk is compared with the recorded action i steps later (where the episode still has one).
Metrics are in robot units: per-joint MSE and MAE, MAE by step within the chunk, gripper
open/close agreement, smoothness (mean absolute jerk) of predicted and recorded actions, latency.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..data.episode import DatasetError, Episode


@dataclass
class EpisodeResult:
    source: str
    index: int
    instruction: str
    joint_names: list[str]
    fps: float
    recorded: np.ndarray  # (T, A) recorded actions
    inference_steps: list[int] = field(default_factory=list)
    predictions: list[np.ndarray] = field(default_factory=list)  # each (H, A)
    latencies_ms: list[float] = field(default_factory=list)

    def pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(predicted, recorded, step-in-chunk) for every predicted action that has a recorded one."""
        predicted, recorded, steps = [], [], []
        for t, chunk in zip(self.inference_steps, self.predictions, strict=True):
            n = min(len(chunk), len(self.recorded) - t)
            predicted.append(chunk[:n])
            recorded.append(self.recorded[t : t + n])
            steps.append(np.arange(n))
        return np.concatenate(predicted), np.concatenate(recorded), np.concatenate(steps)


def evaluate_episode(
    policy: Any, episode: Episode, every: int, seed: int | None = 0, progress: Any = None
) -> EpisodeResult:
    if policy.action_dim != episode.actions.shape[1] or policy.state_dim != episode.states.shape[1]:
        raise DatasetError(
            f"{episode.where()}: the checkpoint takes {policy.state_dim} state / {policy.action_dim} action dims, "
            f"the recording has {episode.states.shape[1]} / {episode.actions.shape[1]}"
        )
    result = EpisodeResult(
        episode.source, episode.index, episode.instruction, episode.action_names, episode.fps, episode.actions
    )
    for t in range(0, episode.length, every):
        images = [camera[t] for camera in episode.images]
        chunk = policy.predict_chunk(images, episode.states[t], episode.instruction, seed=seed)
        result.inference_steps.append(t)
        result.predictions.append(chunk)
        result.latencies_ms.append(policy.last_timing["total_ms"])
        if progress is not None:
            progress.update(1)
    return result


def mean_abs_jerk(actions: np.ndarray, dt: float) -> float:
    """Mean |d^3 a / dt^3| over steps and joints (robot units per s^3)."""
    if len(actions) < 4:
        return float("nan")
    return float(np.abs(np.diff(actions, n=3, axis=0)).mean() / dt**3)


def metrics(results: list[EpisodeResult], gripper_dims: list[int] | None = None) -> dict[str, Any]:
    """Per-joint MSE/MAE, MAE by step in chunk, gripper agreement, jerk and latency over `results`."""
    if not results or not any(r.predictions for r in results):
        raise DatasetError("nothing to score: no predictions were made")
    predicted, recorded, steps = (np.concatenate(x) for x in zip(*(r.pairs() for r in results), strict=True))
    error = predicted - recorded
    names = results[0].joint_names or [f"dim{j}" for j in range(error.shape[1])]
    horizon = max(len(p) for r in results for p in r.predictions)
    by_step = [float(np.abs(error[steps == i]).mean()) if (steps == i).any() else float("nan") for i in range(horizon)]
    dt = 1.0 / results[0].fps
    latencies = np.array([x for r in results for x in r.latencies_ms])
    out: dict[str, Any] = {
        "episodes": len(results),
        "inferences": int(sum(len(r.predictions) for r in results)),
        "compared_actions": len(error),
        "coverage": float(len(error) / sum(len(p) for r in results for p in r.predictions)),
        "joint_names": names,
        "mse": dict(zip(names, (error**2).mean(axis=0).tolist(), strict=True)),
        "mae": dict(zip(names, np.abs(error).mean(axis=0).tolist(), strict=True)),
        "mse_mean": float((error**2).mean()),
        "mae_mean": float(np.abs(error).mean()),
        "mae_by_step": by_step,
        "jerk_predicted": float(np.nanmean([mean_abs_jerk(p, dt) for r in results for p in r.predictions])),
        "jerk_recorded": float(np.nanmean([mean_abs_jerk(r.recorded, dt) for r in results])),
        "latency_ms": {
            "mean": float(latencies.mean()),
            "p50": float(np.percentile(latencies, 50)),
            "p95": float(np.percentile(latencies, 95)),
        },
    }
    for dim in gripper_dims or []:
        # Open/closed: above or below the middle of the recorded range of that dim.
        all_recorded = np.concatenate([r.recorded[:, dim] for r in results])
        middle = (all_recorded.min() + all_recorded.max()) / 2
        agree = (predicted[:, dim] > middle) == (recorded[:, dim] > middle)
        out.setdefault("gripper_agreement", {})[names[dim]] = float(agree.mean())
    return out
