"""An audit of what a policy node commanded, judged against the arm (tests and `evo1 fuzz-node`).

Written apart from the node's safety layer (safety.py) on purpose, so that a mistake in one is
not repeated in the other. For every published JointTrajectory, with start time s (its stamp):

- where the arm is at s: on the previous trajectory, its points linearly interpolated from
  that message's own start (at rest after its last point); once that trajectory has ended, also
  the arm's measured position (the last sample at or before s after the end): after a hold the
  node restarts from the measurement, since something else may have moved the arm;
- the first point may be at most max_velocity * time_from_start away from there, and each later
  point at most max_velocity * (its time - the previous point's time) from the one before;
- velocities within max_velocity, the last point at rest, time_from_start increasing from > 0;
- no point further past a joint limit than the point before it (the arm's start included).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from trajectory_msgs.msg import JointTrajectory

from .ros_io import seconds, stamp_seconds

# Slack for arithmetic, not for motion: stamps are float seconds since 1970 (resolution ~0.24 us)
# and travel as integer nanoseconds, which costs about 1e-6 of a unit at 2 units/s. 1e-5 rad is
# far below anything a joint can feel and far below the violations this audit exists to catch.
EPS = 1e-5


@dataclass
class Audit:
    messages: int = 0
    points: int = 0
    worst_ratio: float = 0.0  # largest (distance from the arm) / (max_velocity * time) of a first point
    violations: list[str] = field(default_factory=list)
    unchecked: int = 0  # first messages with no arm state before them

    def summary(self) -> str:
        verdict = "no violation" if not self.violations else f"{len(self.violations)} violations"
        return (
            f"{self.messages} trajectories, {self.points} points: {verdict}; the largest first step was "
            f"{self.worst_ratio:.0%} of the velocity limit relative to the arm"
        )


def message_start(msg: JointTrajectory, received: float) -> float:
    """When a trajectory starts: its stamp, or its arrival when unstamped ("start now")."""
    stamp = stamp_seconds(msg)
    return stamp if stamp else received


def _arrays(msg: JointTrajectory) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    times = np.array([seconds(p.time_from_start) for p in msg.points])
    positions = np.array([list(p.positions) for p in msg.points], dtype=float)
    velocities = np.array([list(p.velocities) for p in msg.points], dtype=float)
    return times, positions, velocities


def _on_trajectory(start: float, origin: np.ndarray, times: np.ndarray, points: np.ndarray, t: float) -> np.ndarray:
    knots = np.concatenate([[start], start + times])
    path = np.vstack([origin, points])
    return np.array([np.interp(t, knots, path[:, j]) for j in range(path.shape[1])])


def _excess(p: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    return np.maximum(np.maximum(p - upper, lower - p), 0.0)


def audit_commands(
    messages: Sequence[tuple[float, JointTrajectory]],
    arm: Sequence[tuple[float, np.ndarray]],
    names: Sequence[str],
    lower: Sequence[float],
    upper: Sequence[float],
    max_velocity: Sequence[float],
) -> Audit:
    """messages: (start time, trajectory) in publishing order; arm: (time, measured positions of
    `names`) in time order, from the arm itself (not from a topic others may write to)."""
    lo, hi, vmax = (np.asarray(v, float)[: len(names)] for v in (lower, upper, max_velocity))
    arm_times = np.array([t for t, _ in arm])
    arm_positions = [np.asarray(p, float)[: len(names)] for _, p in arm]
    audit = Audit()
    previous: tuple[float, np.ndarray, np.ndarray, np.ndarray] | None = None
    for k, (start, msg) in enumerate(messages):
        audit.messages += 1
        where = f"trajectory {k} (start {start:.3f})"
        if list(msg.joint_names) != list(names) or not msg.points:
            audit.violations.append(f"{where}: joints {list(msg.joint_names)} or no points")
            continue
        times, points, velocities = _arrays(msg)
        audit.points += len(times)
        if times[0] <= 0 or np.any(np.diff(times) <= 0):
            audit.violations.append(f"{where}: time_from_start not increasing from > 0: {times[:3]}")
            continue
        if np.any(velocities[-1] != 0):
            audit.violations.append(f"{where}: the last point is not at rest")
        if np.any(np.abs(velocities) > vmax + EPS):
            audit.violations.append(f"{where}: velocity field {np.abs(velocities).max():.4g} beyond the limit")
        candidates: list[tuple[str, np.ndarray]] = []
        if previous is not None:
            candidates.append(("previous trajectory", _on_trajectory(*previous, start)))
        ended = previous is None or start >= previous[0] + previous[2][-1] - EPS
        if ended and len(arm_times):
            after = previous[0] + previous[2][-1] if previous is not None else -np.inf
            i = int(np.searchsorted(arm_times, start + EPS, side="right")) - 1
            if i >= 0 and arm_times[i] > after - EPS:
                candidates.append(("measured", arm_positions[i]))
        if not candidates:
            audit.unchecked += 1
            previous = (start, points[0], times, points)
            continue
        allowed = vmax * times[0] + EPS
        ratios = [float(np.max(np.abs(points[0] - x) / (vmax * times[0]))) for _, x in candidates]
        best = int(np.argmin(ratios))
        audit.worst_ratio = max(audit.worst_ratio, ratios[best])
        origin = candidates[best][1]
        if not np.all(np.abs(points[0] - origin) <= allowed):
            jump = np.abs(points[0] - origin)
            j = int(np.argmax(jump / vmax))
            audit.violations.append(
                f"{where}: first point moves {names[j]} {jump[j]:.4f} from the arm ({candidates[best][0]}) "
                f"in {times[0] * 1e3:.1f} ms: {ratios[best]:.2f}x the velocity limit"
            )
        path = np.vstack([origin, points])
        steps = np.abs(np.diff(path, axis=0))[1:]
        limits = vmax * np.diff(times)[:, None] + EPS
        if np.any(steps > limits):
            audit.violations.append(f"{where}: a step within the message beyond the velocity limit")
        excess = np.array([_excess(p, lo, hi) for p in path])
        if np.any(np.diff(excess, axis=0) > EPS):
            audit.violations.append(f"{where}: a point further past a joint limit than the arm was")
        previous = (start, origin, times, points)
    return audit
