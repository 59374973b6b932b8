"""ROS time fields as seconds, duck-typed (no ROS import): the node, the bag reader and the audits
read stamps and durations the same way."""

from __future__ import annotations

from typing import Any


def seconds(time: Any) -> float:
    """A builtin_interfaces Time or Duration in seconds."""
    return time.sec + time.nanosec * 1e-9


def stamp_seconds(msg: Any) -> float:
    """A message's header stamp in seconds (0 when it has no header)."""
    header = getattr(msg, "header", None)
    return seconds(header.stamp) if header is not None else 0.0
