"""An audit of what a policy node commanded, judged against the arm (tests and `evo1 fuzz-node`).

Written apart from the node's safety layer (safety.py) on purpose, so that a mistake in one is
not repeated in the other, and it believes only the arm: never the node's own earlier messages.
The arm (the simulator, the fuzzer's stand-in) logs where it really is, (time, positions), at its
own rate and at the instant each command takes effect. For every published JointTrajectory, with
start time s (its stamp; its arrival when unstamped):

- where the arm is at s: the arm's own sample at s (it logs one there when the command takes
  effect), else the line between its samples around s, else its last sample before s;
- the first point may be at most max_velocity * time_from_start away from there, and each later
  point at most max_velocity * (its time - the previous point's time) from the one before;
- velocities within max_velocity, the last point at rest, time_from_start increasing from > 0;
- no point further past a joint limit than the point before it (the arm's start included).

A gripper commanded on its own topic (std_msgs/Float64, taking effect on arrival) is judged the
same way: within its limits, and at most its max_velocity * one control period from where the
arm's gripper is when the command arrives.
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


class ArmLog:
    """The arm's own record, (time, positions of every action dim), in time order."""

    def __init__(self, samples: Sequence[tuple[float, np.ndarray]]):
        ordered = sorted(((float(t), np.asarray(p, float)) for t, p in samples), key=lambda sample: sample[0])
        self.times = np.array([t for t, _ in ordered])
        self.positions = [p for _, p in ordered]

    def at(self, t: float) -> np.ndarray | None:
        """Where the arm was at t, from its own samples; None before its first."""
        i = int(np.searchsorted(self.times, t + EPS, side="right")) - 1
        if i < 0:
            return None
        if abs(self.times[i] - t) <= EPS:
            while i > 0 and abs(self.times[i - 1] - t) <= EPS:
                i -= 1  # the first sample logged at t: where the arm was before a command there moved it
            return self.positions[i]
        if i + 1 >= len(self.times):
            return self.positions[i]
        fraction = (t - self.times[i]) / (self.times[i + 1] - self.times[i])
        return self.positions[i] + fraction * (self.positions[i + 1] - self.positions[i])


def audit_commands(
    messages: Sequence[tuple[float, JointTrajectory]],
    arm: Sequence[tuple[float, np.ndarray]],
    names: Sequence[str],
    lower: Sequence[float],
    upper: Sequence[float],
    max_velocity: Sequence[float],
) -> Audit:
    """messages: (start time, trajectory) in publishing order; arm: (time, measured positions; the
    first len(names) dims are `names`) from the arm itself (not from a topic others may write to)."""
    lo, hi, vmax = (np.asarray(v, float)[: len(names)] for v in (lower, upper, max_velocity))
    log = ArmLog(arm)
    audit = Audit()
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
        measured = log.at(start)
        if measured is None:
            audit.unchecked += 1
            continue
        origin = measured[: len(names)]
        jump = np.abs(points[0] - origin)
        ratio = float(np.max(jump / (vmax * times[0])))
        audit.worst_ratio = max(audit.worst_ratio, ratio)
        if not np.all(jump <= vmax * times[0] + EPS):
            j = int(np.argmax(jump / vmax))
            audit.violations.append(
                f"{where}: first point moves {names[j]} {jump[j]:.4f} from where the arm is "
                f"in {times[0] * 1e3:.1f} ms: {ratio:.2f}x the velocity limit"
            )
        path = np.vstack([origin, points])
        steps = np.abs(np.diff(path, axis=0))[1:]
        limits = vmax * np.diff(times)[:, None] + EPS
        if np.any(steps > limits):
            audit.violations.append(f"{where}: a step within the message beyond the velocity limit")
        excess = np.array([_excess(p, lo, hi) for p in path])
        if np.any(np.diff(excess, axis=0) > EPS):
            audit.violations.append(f"{where}: a point further past a joint limit than the arm was")
    return audit


def audit_gripper(
    commands: Sequence[tuple[float, float]],
    arm: Sequence[tuple[float, np.ndarray]],
    dim: int,
    lower: float,
    upper: float,
    max_velocity: float,
    period: float,
) -> Audit:
    """commands: (arrival time, value) of a gripper's own command topic; arm: the arm's own log,
    whose dim `dim` is the gripper; period: the node's control period (one command per update)."""
    log = ArmLog(arm)
    audit = Audit()
    for k, (arrival, value) in enumerate(commands):
        audit.messages += 1
        audit.points += 1
        where = f"gripper command {k} (at {arrival:.3f})"
        if not lower - EPS <= value <= upper + EPS:
            audit.violations.append(f"{where}: {value:.4f} beyond the gripper's limits [{lower}, {upper}]")
        measured = log.at(arrival)
        if measured is None:
            audit.unchecked += 1
            continue
        ratio = abs(value - measured[dim]) / (max_velocity * period)
        audit.worst_ratio = max(audit.worst_ratio, ratio)
        if ratio > 1 + EPS / (max_velocity * period):
            audit.violations.append(
                f"{where}: moves the gripper {abs(value - measured[dim]):.4f} from where it is in one "
                f"{period * 1e3:.0f} ms update: {ratio:.2f}x its velocity limit"
            )
    return audit
