"""The safety layer between the model and the arm: chunk checks, joint-state plausibility, and
the path every command takes from where the arm is. No ROS. The rules are stated for arm owners
in docs/safety.md; this module is their one home.

Where the arm is, at the time a new message takes effect (its stamp `s`):
- while the last published trajectory runs, the arm follows it: `Commanded.position_at(s)`, on
  the controller's cubic through the published positions and velocities;
- after a hold has ended, or before anything was commanded, the arm is at rest wherever a
  plausible joint state measured after that moment says (something else may have moved it).
Every message starts from there and moves each joint at most `max_velocity * elapsed time` per
point, so no command asks the arm for more than its velocity limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Limits:
    lower: np.ndarray
    upper: np.ndarray
    max_velocity: np.ndarray  # per joint, units/s
    dt: float  # control period

    @classmethod
    def of(cls, lower: list[float], upper: list[float], max_velocity: list[float], dt: float) -> Limits:
        return cls(np.asarray(lower, float), np.asarray(upper, float), np.asarray(max_velocity, float), dt)

    @property
    def max_step(self) -> np.ndarray:
        """Most change per control period."""
        return self.max_velocity * self.dt


def check_chunk(chunk: np.ndarray, limits: Limits, tolerance: float) -> tuple[str, str] | None:
    """(cause, detail) when a chunk must be dropped; None if it may be executed after clamping."""
    if chunk.ndim != 2 or chunk.shape[1] != len(limits.lower):
        return "wrong shape", f"chunk shape {chunk.shape} does not match {len(limits.lower)} action dims"
    if not np.isfinite(chunk).all():
        return "NaN or inf", "model output contains NaN or inf"
    below = chunk < limits.lower - tolerance
    above = chunk > limits.upper + tolerance
    if below.any() or above.any():
        dims = sorted(set(np.nonzero(below | above)[1].tolist()))
        return "beyond joint limits", f"model output beyond joint limits (+{tolerance}) in dims {dims}"
    return None


def out_of_range(positions: np.ndarray, names: list[str], limits: Limits, tolerance: float) -> str | None:
    """Why a measured joint state is implausible: beyond a limit by more than `tolerance`."""
    beyond = (positions < limits.lower - tolerance) | (positions > limits.upper + tolerance)
    if not beyond.any():
        return None
    worst = [
        f"{names[i]} = {positions[i]:.4g} (limits [{limits.lower[i]:.4g}, {limits.upper[i]:.4g}])"
        for i in np.flatnonzero(beyond)[:3]
    ]
    return f"joint_states beyond the joint limits by more than {tolerance}: {', '.join(worst)}"


class OutlierFilter:
    """A reading that jumps from the last accepted one by more than `jump + max_velocity * elapsed`
    is held back: the next reading confirms it (the arm really is there: a reset, a push) or it is
    dropped as a glitch. So a single outlier between sane readings never becomes "the arm's
    position"."""

    def __init__(self, max_velocity: np.ndarray, jump: float):
        self.max_velocity = np.asarray(max_velocity, float)
        self.jump = jump
        self.last: tuple[np.ndarray, float] | None = None  # accepted positions, receipt time (s)
        self.candidate: np.ndarray | None = None

    def accept(self, positions: np.ndarray, received: float) -> tuple[bool, np.ndarray | None]:
        """(whether to believe this reading, a held-back reading now dropped as a glitch)."""
        if self.last is None:
            self.last = (positions, received)
            return True, None
        previous, when = self.last
        allowed = self.jump + self.max_velocity * max(received - when, 0.0)
        pending, self.candidate = self.candidate, None
        confirmed = pending is not None and np.all(np.abs(positions - pending) <= allowed)
        if confirmed or np.all(np.abs(positions - previous) <= allowed):
            self.last = (positions, received)
            return True, None if confirmed else pending
        self.candidate = positions
        return False, pending


def safe_path(targets: np.ndarray, start: np.ndarray, times: np.ndarray, limits: Limits) -> np.ndarray:
    """Points to command at `times` (seconds after the message's start): each target clipped to
    the limits, then moved at most max_velocity * (time since the previous point) from the
    previous point, the first from `start`, where the arm is at the start. A start beyond a limit
    (within the joint-state tolerance) is not clipped: that would be a jump; the path moves back
    inside at the velocity limit."""
    out = np.empty((len(targets), len(limits.lower)), dtype=np.float64)
    previous = np.asarray(start, dtype=np.float64)
    elapsed = np.diff(np.concatenate([[0.0], times]))
    for i, target in enumerate(np.clip(targets, limits.lower, limits.upper)):
        step = limits.max_velocity * elapsed[i]
        previous = np.clip(target, previous - step, previous + step)
        out[i] = previous
    return out


def receipt_times(times: np.ndarray, jitter: float) -> np.ndarray:
    """The times safe_path limits a message against when the controller starts it on arrival: each
    `jitter` earlier (never below zero), so the first point keeps that much time in hand for a
    delivery delay longer than the last message's; the later intervals only shrink."""
    return np.maximum(np.asarray(times, float) - jitter, 0.0)


# The status reason while the node holds an arm found off its trajectory (a stable phrase).
OFF_TRAJECTORY = "holding: the arm is off its trajectory (pushed, blocked or lagging)"


def off_trajectory(measured: np.ndarray, expected: np.ndarray, names: list[str], tolerance: float) -> str:
    """'' or, when the measured arm joints are further than `tolerance` from where the running
    trajectory has them at the measurement's time, which joint and how far (pushed, blocked, or
    lagging its controller by more than the arm config allows)."""
    error = np.abs(np.asarray(measured, float) - np.asarray(expected, float))
    worst = int(np.argmax(error))
    if error[worst] <= tolerance:
        return ""
    return f"{names[worst]} {error[worst]:.3f} off its trajectory (> safety.tracking_tolerance {tolerance})"


def finite_difference_velocities(points: np.ndarray, start: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Central differences over the published points (the first from `start` at time 0), zero at
    the last point: the trajectory ends at rest, as joint_trajectory_controller requires. Kept
    free of overshoot (Fritsch-Carlson): zero where the path turns or pauses, and at most three
    times the gentler neighbouring slope, so the controller's cubic between two points stays
    between them. Plain central differences at a point held at a joint limit carried the cubic
    past the limit (~0.01 rad at 2 rad/s and 20 Hz), where the arm cannot follow."""
    path = np.vstack([np.asarray(start, float)[None, :], points])
    knots = np.concatenate([[0.0], times])
    velocities = np.zeros_like(points)
    if len(points) > 1:
        slopes = np.diff(path, axis=0) / np.diff(knots)[:, None]  # slope i: knot i to knot i + 1
        before, after = slopes[:-1], slopes[1:]  # around points 0 .. n-2 (knots 1 .. n-1)
        central = (path[2:] - path[:-2]) / (knots[2:] - knots[:-2])[:, None]
        gentler = np.minimum(np.abs(before), np.abs(after))
        same_way = np.sign(before) * np.sign(after) > 0
        velocities[:-1] = np.where(same_way, np.clip(central, -3 * gentler, 3 * gentler), 0.0)
    return velocities


@dataclass
class Commanded:
    """A published trajectory as the arm executes it: from `start` (moving at `start_velocity`) at
    `start_time` (the message's stamp, seconds) through `points` at start_time + `times`, with the
    published velocity fields; at rest after the last point. Between points the arm is where
    joint_trajectory_controller puts it: on the cubic through (position, velocity) at both ends of
    the segment, not on the straight line between them (a message starting between two points
    starts from the cubic's position)."""

    start_time: float
    start: np.ndarray
    times: np.ndarray
    points: np.ndarray
    start_velocity: np.ndarray | None = None  # None: at rest
    velocities: np.ndarray | None = None  # None: the finite differences trajectory_message publishes

    def __post_init__(self) -> None:
        if self.start_velocity is None:
            self.start_velocity = np.zeros_like(self.start)
        if self.velocities is None:
            self.velocities = finite_difference_velocities(self.points, self.start, self.times)

    @property
    def end_time(self) -> float:
        return self.start_time + float(self.times[-1])

    def _segment(self, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float, float]:
        knots = np.concatenate([[0.0], self.times])
        path = np.vstack([self.start[None, :], self.points])
        speeds = np.vstack([self.start_velocity[None, :], self.velocities])
        s = min(max(t - self.start_time, 0.0), float(knots[-1]))
        i = min(int(np.searchsorted(knots, s, side="right")) - 1, len(knots) - 2)
        duration = float(knots[i + 1] - knots[i])
        return path[i], speeds[i], path[i + 1], speeds[i + 1], duration, (s - knots[i]) / duration

    def position_at(self, t: float) -> np.ndarray:
        p0, v0, p1, v1, duration, w = self._segment(t)
        h00, h10, h01, h11 = 2 * w**3 - 3 * w**2 + 1, w**3 - 2 * w**2 + w, -2 * w**3 + 3 * w**2, w**3 - w**2
        return h00 * p0 + h10 * duration * v0 + h01 * p1 + h11 * duration * v1

    def velocity_at(self, t: float) -> np.ndarray:
        if t >= self.end_time or t < self.start_time:
            return np.zeros_like(self.start)
        p0, v0, p1, v1, duration, w = self._segment(t)
        d00, d10, d01, d11 = 6 * w**2 - 6 * w, 3 * w**2 - 4 * w + 1, -6 * w**2 + 6 * w, 3 * w**2 - 2 * w
        return (d00 * p0 + d01 * p1) / duration + d10 * v0 + d11 * v1


def hold_point(commanded: Commanded, now: float, limits: Limits) -> np.ndarray:
    """Where to stop, one control period after `now`: the arm's position on the running trajectory
    plus half its current velocity times dt. With the point at rest, the controller's cubic from
    (position, velocity) to it is a constant deceleration: no snap back, no overshoot, within the
    velocity limit. Not further past a limit than the arm already is."""
    position = commanded.position_at(now)
    target = position + commanded.velocity_at(now) * limits.dt / 2
    return np.clip(target, np.minimum(limits.lower, position), np.maximum(limits.upper, position))


def input_problem(
    now: float,
    instruction: Any,
    camera_names: list[str],
    camera_msgs: list[Any],
    joints: Any,
    joint_fault: str,
    inference_started: float | None,
    safety: Any,
) -> str:
    """Why the node must not command now: '' when every input is fresh and plausible and an
    instruction is known. Inputs carry their monotonic arrival (`.received`); `safety` is the arm
    config's safety section. A stable phrase per cause: the ages are in the status's own fields."""
    if instruction is None:
        return "no instruction"
    for name, msg in zip(camera_names, camera_msgs, strict=True):
        if msg is None:
            return f"no image from camera '{name}'"
        if now - msg.received > safety.camera_timeout:
            return f"camera '{name}' stale (> {safety.camera_timeout} s)"
    if joint_fault:
        return joint_fault
    if joints is None:
        return "no joint states"
    if now - joints.received > safety.joint_state_timeout:
        return f"joint states stale (> {safety.joint_state_timeout} s)"
    if inference_started is not None and now - inference_started > safety.inference_timeout:
        return f"inference slower than {safety.inference_timeout} s"
    return ""
