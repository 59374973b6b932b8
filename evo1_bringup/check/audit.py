"""An audit of what a policy node commanded, judged against the arm (tests and `evo1 fuzz-node`).

Written apart from the node's safety layer (safety.py) on purpose, so that a mistake in one is
not repeated in the other, and it believes only the arm: never the node's own earlier messages.
The arm (the simulator, the fuzzer's stand-in) logs where it really is, (time, positions), at its
own rate and at the instant each command takes effect. For every published JointTrajectory, with
start time s (its stamp; its arrival when unstamped):

- where the arm is at s: the sample the arm logged at s when the command took effect (the arm
  logs one for every command it takes). A command it never took (refused, or never received)
  cannot move it: only the steps between its points are judged, and it is counted as unchecked;
- the first point may be at most max_velocity * time_from_start away from there, and each later
  point at most max_velocity * (its time - the previous point's time) from the one before;
- velocities within max_velocity, the last point at rest, time_from_start increasing from > 0;
- no point further past a joint limit than the point before it (the arm's start included).

An arm that trails its controller (a real one does) is judged within the tracking error the caller
states; a first point that took effect before any node could know the arm was pushed is counted,
not judged.

A gripper commanded on its own topic (std_msgs/Float64, taking effect on arrival) must stay within
its limits; its step from where the arm's gripper is when a command arrives is measured, in units
of its max_velocity * one control period, and reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from trajectory_msgs.msg import JointTrajectory

from ..ros_io import seconds, stamp_seconds

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
    unknowable: int = 0  # first points not judged: they took effect before the node could know of a push

    def summary(self) -> str:
        verdict = "no violation" if not self.violations else f"{len(self.violations)} violations"
        never_taken = f" ({self.unchecked} never taken by the arm)" if self.unchecked else ""
        return (
            f"{self.messages} trajectories{never_taken}, {self.points} points: {verdict}; the largest first "
            f"step was {self.worst_ratio:.0%} of the velocity limit relative to the arm"
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
        """Where the arm was when something took effect at t: its sample logged nearest t, within
        EPS (the first, if several at that time: before that command moved it); None when it
        logged none there, i.e. it never took a command at t (it refused or never received it).
        Nearest, not the first within EPS: a periodic sample a few microseconds earlier is the arm
        at another moment (at 2 rad/s, 10 us is 2e-5 rad), and judging a command from it made the
        1e-5..2e-4 rad "mismatch" of the loaded closed-loop tests (about 1 message in 1,200)."""
        first = int(np.searchsorted(self.times, t - EPS, side="left"))
        last = int(np.searchsorted(self.times, t + EPS, side="right"))
        if first == last:
            return None
        return self.positions[first + int(np.argmin(np.abs(self.times[first:last] - t)))]


def _judge_first_point(
    audit: Audit,
    where: str,
    point: np.ndarray,
    origin: np.ndarray,
    seconds: float,
    vmax: np.ndarray,
    tolerance: float,
    names: Sequence[str],
    start: float,
    unknowable: Sequence[tuple[float, float]],
) -> None:
    """The first point at most max_velocity x its time (plus the stated tolerance) from the arm."""
    jump = np.abs(point - origin)
    ratio = float(np.max(jump / (vmax * seconds)))
    audit.worst_ratio = max(audit.worst_ratio, ratio)
    if np.all(jump <= vmax * seconds + tolerance + EPS):
        return
    j = int(np.argmax(jump - vmax * seconds - tolerance))  # the joint furthest beyond its allowance
    pushed = [start - t0 for t0, _ in unknowable if t0 <= start]
    context = f" ({min(pushed):.3f} s after a push)" if pushed and min(pushed) < 2.0 else ""
    audit.violations.append(
        f"{where}: first point moves {names[j]} {jump[j]:.4f} from where the arm is "
        f"in {seconds * 1e3:.1f} ms: {ratio:.2f}x the velocity limit{context}"
    )


def audit_commands(
    messages: Sequence[tuple[float, JointTrajectory]],
    arm: Sequence[tuple[float, np.ndarray]],
    names: Sequence[str],
    lower: Sequence[float],
    upper: Sequence[float],
    max_velocity: Sequence[float],
    tolerance: float = 0.0,
    unknowable: Sequence[tuple[float, float]] = (),
    arrivals: Sequence[float] = (),
) -> Audit:
    """messages: (start time, trajectory) in publishing order; arm: (time, measured positions; the
    first len(names) dims are `names`) from the arm itself (not from a topic others may write to).
    tolerance: how far (units of the joints) the arm may be from where the node can know it is,
    stated by the caller (0: none; arithmetic slack aside). unknowable: (from, to) spans after the
    arm was pushed (displaced by someone else) in which no node could know where it is yet: a first
    point taking effect in one, or of a message arriving in one (arrivals: the arm's time of each
    message's arrival, when it logs them), is counted, not judged; the steps after it are judged as
    always."""
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
        if measured is None:  # the arm never took it: the steps between points are still judged
            audit.unchecked += 1
            if np.any(np.abs(np.diff(points, axis=0)) > vmax * np.diff(times)[:, None] + EPS):
                audit.violations.append(f"{where}: a step within the message beyond the velocity limit")
            continue
        origin = measured[: len(names)]
        moments = (start, arrivals[k]) if k < len(arrivals) else (start,)
        if any(t0 <= t <= t1 for t0, t1 in unknowable for t in moments):
            audit.unknowable += 1
            origin = points[0]  # the steps after the first are still the node's to keep
        _judge_first_point(audit, where, points[0], origin, times[0], vmax, tolerance, names, start, unknowable)
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
    whose dim `dim` is the gripper, with a sample at each command's arrival; period: the node's
    control period. A command past the gripper's limits is a violation. How far each command is
    from where the gripper is when it arrives, in units of max_velocity * period, is measured
    (worst_ratio) but not judged: a Float64 position carries no timing (the gripper's own
    controller sets the speed), and commands that reach the arm late arrive together."""
    log = ArmLog(arm)
    audit = Audit()
    for k, (arrival, value) in enumerate(commands):
        audit.messages += 1
        audit.points += 1
        if not lower - EPS <= value <= upper + EPS:
            audit.violations.append(
                f"gripper command {k} (at {arrival:.3f}): {value:.4f} beyond the gripper's limits [{lower}, {upper}]"
            )
        measured = log.at(arrival)
        if measured is None:
            audit.unchecked += 1
            continue
        audit.worst_ratio = max(audit.worst_ratio, abs(value - measured[dim]) / (max_velocity * period))
    return audit
