"""Joint-space trajectory following as joint_trajectory_controller does it, without dynamics: the
simulated arm's controller and the fuzzer's stand-in arm. Pure numpy (no ROS, no MuJoCo)."""

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


class TrajectoryFollower:
    """Joint-space trajectory tracking as joint_trajectory_controller does it (no dynamics)."""

    def __init__(self, names: list[str], lower: list[float], upper: list[float], start: np.ndarray):
        self.names = list(names)
        self.lower, self.upper = np.asarray(lower, float), np.asarray(upper, float)
        self.position = np.clip(np.asarray(start, float), self.lower, self.upper)
        self.velocity = np.zeros_like(self.position)
        self.segments: list[_Segment] = []
        self.rejected = 0

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
        p_prev, v_prev = self.sample(now)
        for t, positions, velocities in points:
            p = p_prev.copy()
            v = np.zeros_like(p)
            for j in covered:
                p[j] = positions[index[self.names[j]]]
                v[j] = velocities[index[self.names[j]]] if velocities is not None and len(velocities) else 0.0
            p = np.clip(p, self.lower, self.upper)
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
                return np.clip(p, self.lower, self.upper), v
        if self.segments:
            return self.segments[-1].p1.copy(), np.zeros_like(self.position)
        return self.position.copy(), np.zeros_like(self.position)

    def step(self, now: float) -> None:
        self.position, self.velocity = self.sample(now)

    def reset(self, position: np.ndarray) -> None:
        """Drop the active trajectory and put the joints at `position` (a simulator reset)."""
        self.segments = []
        self.position = np.clip(np.asarray(position, float), self.lower, self.upper)
        self.velocity = np.zeros_like(self.position)
