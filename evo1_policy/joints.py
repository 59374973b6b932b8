"""Joint-state mapping shared by the live node and the bag readers: positions by name, in the
configured order; extra joints ignored; missing joints and NaN/inf are errors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class JointStateError(ValueError):
    """A joint state the policy cannot use; `cause` is stable (for counting), str() has details."""

    def __init__(self, cause: str, detail: str):
        super().__init__(detail)
        self.cause = cause


def joint_positions(names: Sequence[str], positions: Sequence[float], wanted: Sequence[str]) -> np.ndarray:
    if len(positions) != len(names):
        detail = f"joint_states has {len(names)} names but {len(positions)} positions"
        raise JointStateError("malformed joint_states", detail)
    index = {n: i for i, n in enumerate(names)}
    if len(index) != len(names):
        repeated = sorted({n for n in names if list(names).count(n) > 1})
        raise JointStateError("joint_states repeats joint names", f"joint_states names {repeated} more than once")
    missing = [n for n in wanted if n not in index]
    if missing:
        raise JointStateError("joint_states lacks joints", f"joint_states lacks joints {missing}")
    out = np.array([positions[index[n]] for n in wanted], dtype=np.float64)
    if not np.isfinite(out).all():
        bad = [n for n, p in zip(wanted, out, strict=True) if not np.isfinite(p)]
        raise JointStateError("joint_states has NaN/inf positions", f"joint_states has NaN/inf positions for {bad}")
    return out


def joint_velocities(names: Sequence[str], velocities: Sequence[float], wanted: Sequence[str]) -> np.ndarray | None:
    """The measured velocities of `wanted` (by name), or None when the reading does not say them
    (the field is optional in sensor_msgs/JointState: empty, the wrong length, or not finite)."""
    if len(velocities) != len(names):
        return None
    index = {n: i for i, n in enumerate(names)}
    if any(n not in index for n in wanted):
        return None
    out = np.array([velocities[index[n]] for n in wanted], dtype=np.float64)
    return out if np.isfinite(out).all() else None
