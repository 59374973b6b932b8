"""Joint-space trajectory following as joint_trajectory_controller does it: the simulated arm's
controller and the fuzzer's stand-in arm. Pure numpy (no ROS, no MuJoCo).

The controller's desired state is the cubic through the trajectory's points. By default the arm is
exactly there (a kinematic arm). Like a real one, it can also lag (`lag`: a first-order follower
with that time constant, at most `max_tracking_error` behind) and be pushed (`push`: held
displaced for a while, as a hand or an obstacle would, then released and pulled back with time
constant `recovery`). A lagging or released arm's controller starts each new trajectory from the
measured state, as joint_trajectory_controller does in closed loop."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np


@dataclass
class _Segment:
    t0: float
    t1: float
    p0: np.ndarray
    v0: np.ndarray
    p1: np.ndarray
    v1: np.ndarray


PUSH_SECONDS = 0.5  # how long a simulated push holds the arm off before it lets go


class TrajectoryFollower:
    """Joint-space trajectory tracking as joint_trajectory_controller does it (no dynamics)."""

    def __init__(
        self,
        names: list[str],
        lower: list[float],
        upper: list[float],
        start: np.ndarray,
        lag: float = 0.0,
        max_tracking_error: float = np.inf,
        recovery: float = 0.5,
    ):
        self.names = list(names)
        self.lower, self.upper = np.asarray(lower, float), np.asarray(upper, float)
        self.position = np.clip(np.asarray(start, float), self.lower, self.upper)  # measured
        self.rest = self.position.copy()  # the desired state before any trajectory
        self.velocity = np.zeros_like(self.position)
        self.segments: list[_Segment] = []
        self.rejected = 0
        self.lag, self.max_tracking_error, self.recovery = lag, max_tracking_error, recovery
        self.tracking = np.zeros_like(self.position)  # measured - desired from lag, at the last step
        self.displacement = np.zeros_like(self.position)  # from pushes, at the last step
        self.stepped: float | None = None  # time of the last step
        self.held = np.full_like(self.position, np.nan)  # where a push holds each joint (nan: free)
        self.pushed_until = -np.inf

    @property
    def exact(self) -> bool:
        """Whether the arm is exactly at the desired state (no lag, not displaced)."""
        return self.lag <= 0 and not self.displacement.any() and bool(np.isnan(self.held).all())

    def measured(self, now: float) -> tuple[np.ndarray, np.ndarray]:
        """Where the arm really is at `now`: the desired state plus the offsets of the last step
        (exact for a kinematic arm; between steps, a lagging arm's offset is held)."""
        p, v = self.sample(now)
        if self.exact:
            return p, v
        p = np.clip(p + self.tracking + self.displacement, self.lower, self.upper)
        return (np.where(np.isnan(self.held), p, self.held) if now < self.pushed_until else p), v

    def push(self, offset: np.ndarray, now: float, duration: float = 0.0) -> None:
        """Move the joints by `offset` (a person, a collision) and hold them there for `duration`
        seconds whatever is commanded; then let go: the controller pulls them back."""
        offset = np.asarray(offset, float)
        if duration <= 0:
            self.displacement = self.displacement + offset
            return
        here = self.measured(now)[0]
        self.held = np.where(offset != 0, np.clip(here + offset, self.lower, self.upper), self.held)
        self.pushed_until = now + duration

    def command(self, names: list[str], points: list[tuple[float, np.ndarray, np.ndarray | None]], now: float) -> str:
        """Replace the active trajectory. points: (time_from_start, positions, velocities or None).
        Returns '' or why the trajectory was rejected (as the controller would)."""
        index = {n: i for i, n in enumerate(names)}
        if not points:
            return "empty trajectory"
        unknown = [n for n in names if n not in self.names]
        if unknown:
            return f"unknown joints {unknown}"
        covered = [i for i, n in enumerate(self.names) if n in index]
        times = [t for t, _, _ in points]
        if any(b <= a for a, b in itertools.pairwise(times)) or times[0] < 0:
            return "time_from_start not strictly increasing"
        segments, t_prev = [], now
        # closed loop: a lagging or pushed arm's new trajectory starts where the arm is measured,
        # and the controller stops pulling it toward the old one (a hand still holds it, though)
        p_prev, v_prev = self.sample(now) if self.exact else self.measured(now)
        self.tracking, self.displacement = np.zeros_like(p_prev), np.zeros_like(p_prev)
        for t, positions, velocities in points:
            p = p_prev.copy()
            v = np.zeros_like(p)
            for j in covered:
                p[j] = positions[index[self.names[j]]]
                v[j] = velocities[index[self.names[j]]] if velocities is not None and len(velocities) else 0.0
            # not clipped: joint_trajectory_controller executes the points it is sent (the node keeps
            # them within the limits, or no further past one than the arm already is)
            segments.append(_Segment(t_prev, now + t, p_prev, v_prev, p, v))
            t_prev, p_prev, v_prev = now + t, p, v
        self.segments = segments
        return ""

    def sample(self, now: float) -> tuple[np.ndarray, np.ndarray]:
        for seg in self.segments:
            if now <= seg.t1:
                duration = max(seg.t1 - seg.t0, 1e-9)
                s = min(max((now - seg.t0) / duration, 0.0), 1.0)
                h00, h10 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s
                h01, h11 = -2 * s**3 + 3 * s**2, s**3 - s**2
                p = h00 * seg.p0 + h10 * duration * seg.v0 + h01 * seg.p1 + h11 * duration * seg.v1
                dh00, dh10 = 6 * s**2 - 6 * s, 3 * s**2 - 4 * s + 1
                dh01, dh11 = -6 * s**2 + 6 * s, 3 * s**2 - 2 * s
                v = (dh00 * seg.p0 + dh01 * seg.p1) / duration + dh10 * seg.v0 + dh11 * seg.v1
                # the controller's cubic as it is, like the node's model of it (safety.Commanded):
                # clipping it at the limits put the arm 1e-5..1e-2 rad from where the node had it
                return p, v
        if self.segments:
            return self.segments[-1].p1.copy(), np.zeros_like(self.position)
        return self.rest.copy(), np.zeros_like(self.position)

    def step(self, now: float) -> None:
        desired, velocity = self.sample(now)
        elapsed = 0.0 if self.stepped is None else max(now - self.stepped, 0.0)
        self.stepped = now
        if self.lag > 0:  # first order: the error decays with the time constant, up to the cap
            lagging = self.position - self.displacement
            self.tracking = (lagging - desired) * np.exp(-elapsed / self.lag)
            self.tracking = np.clip(self.tracking, -self.max_tracking_error, self.max_tracking_error)
        if self.displacement.any():
            self.displacement = self.displacement * np.exp(-elapsed / self.recovery)
            self.displacement[np.abs(self.displacement) < 1e-6] = 0.0
        held = ~np.isnan(self.held)
        if held.any() and now >= self.pushed_until:  # let go: from where it was held, pulled back
            self.displacement = np.where(held, self.held - desired - self.tracking, self.displacement)
            self.held = np.full_like(self.held, np.nan)
        previous = self.position
        self.position = np.clip(desired + self.tracking + self.displacement, self.lower, self.upper)
        if now < self.pushed_until:
            self.position = np.where(held, self.held, self.position)
        self.velocity = velocity if self.exact or elapsed <= 0 else (self.position - previous) / elapsed

    def reset(self, position: np.ndarray) -> None:
        """Drop the active trajectory and put the joints at `position` (a simulator reset)."""
        self.segments = []
        self.position = np.clip(np.asarray(position, float), self.lower, self.upper)
        self.rest = self.position.copy()
        self.velocity = np.zeros_like(self.position)
        self.tracking = np.zeros_like(self.position)
        self.displacement = np.zeros_like(self.position)
        self.held = np.full_like(self.position, np.nan)
        self.pushed_until = -np.inf
