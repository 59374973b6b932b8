"""The safety layer between the model and the arm: chunk checks and command clamps. No ROS."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Limits:
    lower: np.ndarray
    upper: np.ndarray
    max_step: np.ndarray  # most change per control step: max_velocity * dt

    @classmethod
    def of(cls, lower: list[float], upper: list[float], max_velocity: list[float], dt: float) -> Limits:
        return cls(np.asarray(lower, float), np.asarray(upper, float), np.asarray(max_velocity, float) * dt)


def check_chunk(chunk: np.ndarray, limits: Limits, tolerance: float) -> str | None:
    """Why a chunk must be dropped (None if it may be executed after clamping)."""
    if chunk.ndim != 2 or chunk.shape[1] != len(limits.lower):
        return f"chunk shape {chunk.shape} does not match {len(limits.lower)} action dims"
    if not np.isfinite(chunk).all():
        return "model output contains NaN or inf"
    below = chunk < limits.lower - tolerance
    above = chunk > limits.upper + tolerance
    if below.any() or above.any():
        dims = sorted(set(np.nonzero(below | above)[1].tolist()))
        return f"model output beyond joint limits (+{tolerance}) in dims {dims}"
    return None


def safe_path(targets: np.ndarray, start: np.ndarray, limits: Limits) -> np.ndarray:
    """Points to command: each target clipped to the limits, then moved at most max_step from the
    previous point (the first from `start`, the position commanded for now)."""
    out = np.empty_like(targets, dtype=np.float64)
    previous = np.clip(np.asarray(start, dtype=np.float64), limits.lower, limits.upper)
    for i, target in enumerate(np.clip(targets, limits.lower, limits.upper)):
        previous = np.clip(target, previous - limits.max_step, previous + limits.max_step)
        out[i] = previous
    return out


def finite_difference_velocities(points: np.ndarray, start: np.ndarray, dt: float) -> np.ndarray:
    """Central differences (one-sided at the start), zero at the last point: the trajectory
    ends at rest, as joint_trajectory_controller requires."""
    path = np.vstack([start[None, :], points])
    velocities = np.zeros_like(points)
    if len(points) > 1:
        velocities[:-1] = (path[2:] - path[:-2]) / (2 * dt)
    return velocities
