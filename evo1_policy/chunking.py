"""Executing action chunks at the control rate: what to command, when to ask for the next chunk,
how to merge a new chunk into the plan. Pure logic on a grid of control ticks (no ROS, no clock,
no torch): the policy node runs it against the arm's clock, the Meta-World evaluator
synchronously.

Tick k is the k-th control update. A chunk predicted from an observation taken at tick k_obs
plans ticks k_obs + 1 ... k_obs + horizon (action i for tick k_obs + 1 + i). Ticks that passed
while the model was running are skipped when the chunk arrives. The plan keeps the whole chunk
(the tail is a buffer if the next one is late); the next chunk is requested so that it arrives
once `execute_steps` of the current one have run.

Merging: "latest_only" takes the new chunk as it is. "blend" splices: the executed path starts
where the old plan is and the offset to the new chunk is worked off only with the slack between
each step's own motion and the largest step inside the chunks (per joint), so a splice never
makes a step larger than the chunks' own; a nearly static chunk falls back to a linear decay over
`blend_steps`. "rtc" additionally asks the model to steer the new chunk toward the committed old
actions (guided denoising, Black et al. 2025), then splices the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from evo1_policy.guidance import ChunkGuidance


@dataclass
class Request:
    """What the inference worker needs to produce the next chunk."""

    tick: int  # observation tick: the chunk's action 0 is for tick + 1
    guidance: ChunkGuidance | None


class ControlClock:
    """The control tick from the clock, not a count of callbacks: a late update skips the steps
    that passed, and says how late it is for its tick (seconds; negative: early)."""

    def __init__(self, dt: float) -> None:
        self.dt = dt
        self.epoch: float | None = None  # monotonic time of tick 0
        self.tick = 0

    def restart(self) -> None:
        """The grid starts again at the next update, at the tick it had reached."""
        self.epoch = None

    def advance(self, started: float) -> tuple[int, float]:
        if self.epoch is None:
            self.epoch = started - self.tick * self.dt
        phase = (started - self.epoch) / self.dt
        self.tick = max(round(phase), self.tick)
        return self.tick, (phase - self.tick) * self.dt


class ChunkExecutor:
    @classmethod
    def for_control(cls, control: Any) -> ChunkExecutor:
        """From an arm config's control section (execute_steps, merge, blend_steps, ...)."""
        return cls(
            control.execute_steps,
            control.merge,
            control.blend_steps,
            control.request_margin_steps,
            control.rtc_decay_steps,
            control.rtc_max_guidance,
        )

    def __init__(
        self,
        execute_steps: int,
        merge: str = "rtc",
        blend_steps: int = 8,
        request_margin_steps: int = 2,
        rtc_decay_steps: int = 10,
        rtc_max_guidance: float = 10.0,
    ):
        self.execute_steps = execute_steps
        self.merge_mode = merge
        self.blend_steps = blend_steps
        self.margin = request_margin_steps
        self.rtc_decay_steps = rtc_decay_steps
        self.rtc_max_guidance = rtc_max_guidance
        self.reset()

    def reset(self) -> None:
        self.plan: np.ndarray | None = None  # (N, A) actions for ticks plan_start ... plan_start + N - 1
        self.plan_start = 0
        self.chunk_start = 0  # tick of the current chunk's first action
        self.chunks_merged = 0
        self.steps_skipped = 0

    # ------------------------------------------------------------ queries
    def planned(self, tick: int) -> int:
        """How many planned actions lie after `tick`."""
        if self.plan is None:
            return 0
        return max(0, self.plan_start + len(self.plan) - (tick + 1))

    def upcoming(self, tick: int, max_points: int) -> np.ndarray:
        """Planned actions for ticks tick + 1, tick + 2, ... (at most max_points)."""
        if self.plan is None:
            return np.zeros((0, 0))
        first = tick + 1 - self.plan_start
        return self.plan[max(first, 0) : max(first, 0) + max_points]

    def _executed(self, tick: int) -> int | None:
        """Actions of the current chunk run by `tick`; None when nothing is planned after it."""
        if self.plan is None or self.planned(tick) == 0:
            return None
        return tick + 1 - self.chunk_start

    def prefix_done(self, tick: int) -> bool:
        """Synchronous execution (a simulator that waits for the model, as benchmark clients do):
        True when nothing is planned after `tick` or `execute_steps` of the current chunk have run
        by then. Observe at `tick`, merge with observation_tick = now_tick = tick."""
        executed = self._executed(tick)
        return executed is None or executed >= self.execute_steps

    def delay_steps(self, latency_s: float, dt: float) -> int:
        return max(1, math.ceil(latency_s / dt))

    def needs_chunk(self, tick: int, latency_s: float, dt: float) -> bool:
        """True when a chunk requested now would arrive about when the current one's
        execute_steps are done (or when nothing is planned)."""
        executed = self._executed(tick)
        return executed is None or executed + self.delay_steps(latency_s, dt) + self.margin >= self.execute_steps

    def request(self, tick: int, latency_s: float, dt: float) -> Request:
        guidance = None
        if self.merge_mode == "rtc" and self.plan is not None:
            committed = self.upcoming(tick, 10**9)
            if len(committed):
                delay = self.delay_steps(latency_s, dt)
                weights = np.zeros(len(committed))
                weights[:delay] = 1.0  # these execute before the new chunk can arrive
                ramp = np.arange(1, self.rtc_decay_steps + 1)
                fade = 1.0 - ramp / (self.rtc_decay_steps + 1)
                tail = weights[delay : delay + self.rtc_decay_steps]
                tail[:] = fade[: len(tail)]
                guidance = ChunkGuidance(committed, weights, self.rtc_max_guidance)
        return Request(tick, guidance)

    # ------------------------------------------------------------ updates
    def merge(self, chunk: np.ndarray, observation_tick: int, now_tick: int) -> int:
        """Add a chunk predicted at observation_tick, arriving at now_tick. Returns the number of
        its actions skipped because their ticks already passed."""
        chunk = np.asarray(chunk, dtype=np.float64)
        first_future = now_tick + 1
        skip = max(0, first_future - (observation_tick + 1))
        new = chunk[skip:]
        self.steps_skipped += skip
        if len(new) == 0:
            return skip
        if self.plan is not None and self.merge_mode in ("blend", "rtc"):
            anchor = self.upcoming(now_tick - 1, 1)  # the action commanded for now_tick
            if len(anchor):
                new = self._splice(anchor[0], chunk[max(skip - 1, 0)] if skip else None, new, self.plan)
        self.plan = new
        self.plan_start = first_future
        self.chunk_start = observation_tick + 1
        self.chunks_merged += 1
        return skip

    def _splice(self, anchor: np.ndarray, new_now: np.ndarray | None, new: np.ndarray, old: np.ndarray) -> np.ndarray:
        """The new actions shifted by a residual that starts at (anchor - new chunk's action for
        now) and shrinks by at most the per-step slack, so |step| <= the chunks' largest step."""
        if new_now is None:  # the chunk starts at the next tick: extrapolate its action for now
            new_now = new[0] - (new[1] - new[0]) if len(new) > 1 else new[0]
        path = np.vstack([new_now[None, :], new])
        steps = np.abs(np.diff(path, axis=0))
        largest = np.maximum(steps.max(axis=0), np.abs(np.diff(old, axis=0)).max(axis=0) if len(old) > 1 else 0.0)
        static = largest < 1e-6
        floor = np.abs(anchor - new_now) / (self.blend_steps + 1) if self.blend_steps else np.abs(anchor - new_now)
        residual = anchor - new_now
        out = np.empty_like(new)
        for i, step in enumerate(steps):
            allowance = np.where(static, floor, np.maximum(largest - step, 0.0))
            residual = residual - np.clip(residual, -allowance, allowance)
            out[i] = new[i] + residual
        return out
