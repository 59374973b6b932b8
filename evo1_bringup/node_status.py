"""The policy node's parameters as ROS declares them, and the rate figures of its status."""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from .inference_worker import MAX_DETAIL

MAX_REJECT_CAUSES = 32  # distinct causes kept in the status; further new kinds count as "other"
LOG_EVERY = 5.0  # seconds between two log lines of one reject cause


@dataclass(frozen=True)
class NodeSnapshot:
    """What the node has done so far, read under its lock: for progress lines and summaries."""

    reason: str  # why it is not commanding ("" when it is)
    chunks: int
    trajectories: int
    last_latency: float | None  # seconds of the last chunk, None before the first
    rejected: dict[str, int]  # rejected inputs and outputs by cause
    last_error: str
    inference_path: str


@dataclass
class Counters:
    """Rejected inputs by stable cause, bounded: the last detail of each cause is kept beside it."""

    causes: collections.Counter = field(default_factory=collections.Counter)
    details: dict[str, str] = field(default_factory=dict)
    last_logged: dict[str, float] = field(default_factory=dict)

    def count(self, cause: str, detail: str, now: float) -> tuple[str, bool]:
        """(the cause it was counted under, whether to log it: each cause at most every 5 s)."""
        if cause not in self.causes and len(self.causes) >= MAX_REJECT_CAUSES:
            cause = "other"
        self.causes[cause] += 1
        self.details[cause] = detail[:MAX_DETAIL]
        log = now - self.last_logged.get(cause, -math.inf) >= LOG_EVERY
        if log:
            self.last_logged[cause] = now
        return cause, log

    def fill(self, msg: Any) -> None:
        """A PolicyStatus's reject_causes, reject_counts and reject_details."""
        msg.reject_causes = list(self.causes)
        msg.reject_counts = [int(v) for v in self.causes.values()]
        msg.reject_details = [self.details[c] for c in self.causes]


def declare_parameters(node: Any, schema: Iterable[tuple[str, Any, dict[str, Any]]]) -> None:
    """Every parameter of the schema (arm_config.parameter_schema) with its description, its
    choices and its range, read-only unless the schema says it may change at run time."""
    for name, default, meta in schema:
        descriptor = ParameterDescriptor(description=meta["description"], read_only=not meta["dynamic"])
        if meta["choices"]:
            descriptor.additional_constraints = f"one of: {', '.join(meta['choices'])}"
        low, high = meta["range"]
        bounded = low is not None or high is not None
        if isinstance(default, float) and bounded:
            low, high = -1e300 if low is None else low, 1e300 if high is None else high
            descriptor.floating_point_range = [FloatingPointRange(from_value=float(low), to_value=float(high))]
        elif isinstance(default, int) and not isinstance(default, bool) and bounded:
            low, high = -(2**62) if low is None else low, 2**62 if high is None else high
            descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high))]
        node.declare_parameter(name, default, descriptor)


def fill_rates(
    msg: Any,
    latencies: Iterable[float],
    chunk_times: Iterable[float],
    tick_times: Iterable[float],
    tick_durations: Iterable[float],
    observation_to_command: Iterable[float],
) -> None:
    """A PolicyStatus's inference latency (last, p95) and rate, control rate and p99 period,
    update time and observation-to-command delay (p50, p95), from the node's recent samples
    (monotonic seconds)."""
    latencies = list(latencies)
    msg.inference_latency = latencies[-1] if latencies else 0.0
    msg.inference_latency_p95 = float(np.percentile(latencies, 95)) if latencies else 0.0
    times = list(chunk_times)
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    msg.inference_rate = (len(times) - 1) / span if span > 0 else 0.0
    ticks = np.diff(list(tick_times)[-200:])
    if len(ticks):
        msg.control_rate = float(1.0 / ticks.mean())
        msg.control_period_p99 = float(np.percentile(ticks, 99))
    durations = list(tick_durations)[-200:]
    if durations:
        msg.update_time_p50, msg.update_time_p95 = (float(v) for v in np.percentile(durations, [50, 95]))
    delays = list(observation_to_command)[-50:]
    if delays:
        msg.observation_to_command_p50, msg.observation_to_command_p95 = (
            float(v) for v in np.percentile(delays, [50, 95])
        )


def fill_lifecycle(msg: Any, active: bool, configured: bool) -> None:
    """A PolicyStatus's lifecycle_state and lifecycle_label."""
    if active:
        msg.lifecycle_state, msg.lifecycle_label = msg.STATE_ACTIVE, "active"
    elif configured:
        msg.lifecycle_state, msg.lifecycle_label = msg.STATE_INACTIVE, "inactive"
    else:
        msg.lifecycle_state, msg.lifecycle_label = msg.STATE_UNCONFIGURED, "unconfigured"
