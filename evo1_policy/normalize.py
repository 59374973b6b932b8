"""Normalisation of states and actions, and the action space (absolute or delta-to-state).

Modes (Evo-1 reference): "bounds" min-max to [-1, 1] with clamping (default), "bounds_q99"
the same between the 1st and 99th percentiles, "normal" mean/std. Dims whose range or std is
zero map to 0. Stats are saved as norm_stats.json beside the weights.

In the bounds modes every training target lies in [-1, 1], so model outputs are clamped to
[-1, 1] before denormalising: the policy never extrapolates past the demonstrated range.

Checkpoints from elsewhere keep the arithmetic they were trained and served with (`convention`,
docs/checkpoints.md):
- "reference" (MINT-SJTU/Evo-1): 2 (x - lo) / (hi - lo + 1e-8) - 1, states clamped, model
  outputs not clamped; a dimension whose range is zero maps to -1 (its only value).
- "lerobot": the same with the zero range replaced by 1e-8 and nothing clamped; mean/std
  unnormalises without the epsilon.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import NORMALIZATION_MODES

NORM_STATS_FILE = "norm_stats.json"
CONVENTIONS = ("evo1_ros", "reference", "lerobot")
_EPS = 1e-8
_STAT_KEYS = ("min", "max", "mean", "std", "q01", "q99")


@dataclass
class Stats:
    min: np.ndarray
    max: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    q01: np.ndarray
    q99: np.ndarray

    @classmethod
    def of(cls, data: np.ndarray) -> Stats:
        data = np.asarray(data, dtype=np.float64)
        if data.ndim != 2 or data.shape[0] == 0:
            raise ValueError(f"stats need a non-empty (N, D) array, got shape {data.shape}")
        if not np.isfinite(data).all():
            raise ValueError("stats input contains NaN or inf")
        q01, q99 = np.quantile(data, [0.01, 0.99], axis=0)
        return cls(data.min(0), data.max(0), data.mean(0), data.std(0), q01, q99)

    @property
    def dim(self) -> int:
        return int(self.min.shape[0])

    def to_dict(self) -> dict[str, list[float]]:
        return {k: getattr(self, k).astype(float).tolist() for k in _STAT_KEYS}

    @classmethod
    def from_dict(cls, data: dict[str, Any], what: str) -> Stats:
        missing = [k for k in ("min", "max") if k not in data]
        if missing:
            raise ValueError(f"norm stats for {what!r} lack {missing}")
        arrays = {k: np.asarray(data[k], dtype=np.float64) for k in _STAT_KEYS if k in data}
        lo, hi = arrays["min"], arrays["max"]
        arrays.setdefault("mean", (lo + hi) / 2)
        arrays.setdefault("std", (hi - lo) / 2)
        arrays.setdefault("q01", lo)
        arrays.setdefault("q99", hi)
        shapes = {k: v.shape for k, v in arrays.items()}
        if len(set(shapes.values())) != 1:
            raise ValueError(f"norm stats for {what!r} have mismatched lengths {shapes}")
        for key, values in arrays.items():
            if values.ndim != 1 or not np.isfinite(values).all():
                bad = np.flatnonzero(~np.isfinite(values)).tolist() if values.ndim == 1 else "all"
                raise ValueError(f"norm stats for {what!r}: {key!r} has NaN/inf or a wrong shape (dims {bad})")
        return cls(**arrays)


def _affine(stats: Stats, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(center, half_range) such that normalised = (x - center) / half_range."""
    if mode == "bounds":
        lo, hi = stats.min, stats.max
    elif mode == "bounds_q99":
        lo, hi = stats.q01, stats.q99
    elif mode == "normal":
        return stats.mean, stats.std
    else:
        raise ValueError(f"unknown normalisation mode {mode!r}; choose one of {NORMALIZATION_MODES}")
    return (hi + lo) / 2, (hi - lo) / 2


@dataclass
class Normalizer:
    """Converts robot-unit states/actions to the model's space and back."""

    state: Stats
    action: Stats
    mode: str = "bounds"
    action_space: str = "absolute"  # or "delta": actions relative to the current state
    absolute_dims: list[int] = field(default_factory=list)  # e.g. the gripper, kept absolute in delta mode
    state_names: list[str] = field(default_factory=list)
    action_names: list[str] = field(default_factory=list)
    convention: str = "evo1_ros"  # whose arithmetic (module docstring)
    # The model's state dims beyond the robot's: 0, or -1 where the reference `main` server
    # normalised zero-padded states with zero-padded stats.
    state_padding: float = 0.0

    def __post_init__(self) -> None:
        if self.convention not in CONVENTIONS:
            raise ValueError(f"unknown normalisation convention {self.convention!r}; choose one of {CONVENTIONS}")
        if self.mode not in NORMALIZATION_MODES:
            raise ValueError(f"unknown normalisation mode {self.mode!r}; choose one of {NORMALIZATION_MODES}")
        if self.action_space not in ("absolute", "delta"):
            raise ValueError(f"action_space must be 'absolute' or 'delta', got {self.action_space!r}")
        if self.action_space == "delta" and self.action.dim > self.state.dim:
            raise ValueError("delta actions need a state dim for every action dim")
        bad = [d for d in self.absolute_dims if not 0 <= d < self.action.dim]
        if bad:
            raise ValueError(f"absolute_dims {bad} out of range for {self.action.dim} action dims")

    @property
    def state_dim(self) -> int:
        return self.state.dim

    @property
    def action_dim(self) -> int:
        return self.action.dim

    def _delta_dims(self) -> np.ndarray:
        dims = np.ones(self.action_dim, dtype=bool)
        dims[self.absolute_dims] = False
        return dims

    def to_model_actions(self, actions: np.ndarray, state: np.ndarray) -> np.ndarray:
        """Robot-unit absolute actions (..., H, A) and state (..., S) -> the space stats describe."""
        return self._shift_by_state(actions, state, -1.0)

    def from_model_actions(self, actions: np.ndarray, state: np.ndarray) -> np.ndarray:
        return self._shift_by_state(actions, state, +1.0)

    def _shift_by_state(self, actions: np.ndarray, state: np.ndarray, sign: float) -> np.ndarray:
        if self.action_space == "absolute":
            return actions
        out = np.array(actions, dtype=np.float64, copy=True)
        dims = self._delta_dims()
        out[..., dims] += sign * np.asarray(state)[..., None, : self.action_dim][..., dims]
        return out

    def normalize(self, x: np.ndarray, which: str) -> np.ndarray:
        stats = self.state if which == "state" else self.action
        x = np.asarray(x, dtype=np.float64)
        if self.convention != "evo1_ros":
            return self._normalize_foreign(x, stats)
        center, half = _affine(stats, self.mode)
        flat = half < _EPS
        y = (x - center) / np.where(flat, 1.0, half + _EPS)
        y = np.where(flat, 0.0, y)
        return np.clip(y, -1.0, 1.0) if self.mode != "normal" else y

    def denormalize(self, y: np.ndarray, which: str) -> np.ndarray:
        stats = self.state if which == "state" else self.action
        y = np.asarray(y, dtype=np.float64)
        if self.convention != "evo1_ros":
            return self._denormalize_foreign(y, stats)
        center, half = _affine(stats, self.mode)
        flat = half < _EPS
        if self.mode != "normal":
            y = np.clip(y, -1.0, 1.0)
        return y * np.where(flat, 0.0, half + _EPS) + center

    def _low_high_span(self, stats: Stats) -> tuple[np.ndarray, np.ndarray]:
        low, high = (stats.q01, stats.q99) if self.mode == "bounds_q99" else (stats.min, stats.max)
        span = high - low
        if self.convention == "lerobot":
            return low, np.where(span == 0, _EPS, span)
        return low, span + _EPS

    def _normalize_foreign(self, x: np.ndarray, stats: Stats) -> np.ndarray:
        if self.mode == "normal":
            return (x - stats.mean) / (stats.std + _EPS)
        low, span = self._low_high_span(stats)
        y = 2 * (x - low) / span - 1
        return np.clip(y, -1.0, 1.0) if self.convention == "reference" else y

    def _denormalize_foreign(self, y: np.ndarray, stats: Stats) -> np.ndarray:
        if self.mode == "normal":
            return y * (stats.std + (_EPS if self.convention == "reference" else 0.0)) + stats.mean
        low, span = self._low_high_span(stats)
        return (y + 1) / 2 * span + low

    @classmethod
    def from_limits(cls, lower: list[float], upper: list[float], names: list[str] | None = None) -> Normalizer:
        """Bounds stats from joint limits (state = action space): for an untrained policy, whose
        outputs in [-1, 1] then span exactly the arm's range."""
        lo, hi = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
        stats = Stats(lo, hi, (lo + hi) / 2, (hi - lo) / 2, lo, hi)
        return cls(stats, stats, state_names=list(names or []), action_names=list(names or []))

    @classmethod
    def identity(cls, state_dim: int, action_dim: int) -> Normalizer:
        """Stats that leave values in [-1, 1] unchanged: for untrained models and benchmarks."""

        def unit(dim: int) -> Stats:
            zeros, ones = np.zeros(dim), np.ones(dim)
            return Stats(-ones, ones, zeros, ones, -ones, ones)

        return cls(unit(state_dim), unit(action_dim))

    @classmethod
    def fit(
        cls,
        states: np.ndarray,
        actions: np.ndarray,
        mode: str = "bounds",
        action_space: str = "absolute",
        absolute_dims: list[int] | None = None,
        state_names: list[str] | None = None,
        action_names: list[str] | None = None,
    ) -> Normalizer:
        """Stats from data: states (N, S); actions (N, H, A) absolute chunks paired with states."""
        states = np.asarray(states, dtype=np.float64)
        actions = np.asarray(actions, dtype=np.float64)
        probe = cls(
            Stats.of(states),
            Stats.of(actions.reshape(-1, actions.shape[-1])),
            mode,
            action_space,
            list(absolute_dims or []),
        )
        model_actions = probe.to_model_actions(actions, states)
        return cls(
            probe.state,
            Stats.of(model_actions.reshape(-1, actions.shape[-1])),
            mode,
            action_space,
            list(absolute_dims or []),
            list(state_names or []),
            list(action_names or []),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "evo1_ros/1",
            "mode": self.mode,
            "action_space": self.action_space,
            "absolute_dims": self.absolute_dims,
            "state_names": self.state_names,
            "action_names": self.action_names,
            "convention": self.convention,
            "state_padding": self.state_padding,
            "observation.state": self.state.to_dict(),
            "action": self.action.to_dict(),
        }

    def save(self, folder: str | Path) -> None:
        (Path(folder) / NORM_STATS_FILE).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(
        cls,
        data: dict[str, Any],
        arm: str | None = None,
        mode: str | None = None,
        dataset_key: str | None = None,
        convention: str | None = None,
    ) -> Normalizer:
        """Our format, or the reference's `{arm: {...}}` / `{arm: {dataset: {...}}}` layouts
        (`dataset_key` picks a dataset, as the reference server's per-request key does)."""
        if "observation.state" not in data:
            data = _reference_entry(data, arm, dataset_key)
        elif dataset_key:
            raise ValueError(f"dataset_key {dataset_key!r} given, but these norm stats hold a single dataset")
        return cls(
            Stats.from_dict(data["observation.state"], "observation.state"),
            Stats.from_dict(data["action"], "action"),
            mode or data.get("mode", "bounds"),
            data.get("action_space", "absolute"),
            list(data.get("absolute_dims", [])),
            list(data.get("state_names", [])),
            list(data.get("action_names", [])),
            convention or data.get("convention", "evo1_ros"),
            float(data.get("state_padding", 0.0)),
        )

    @classmethod
    def load(
        cls,
        folder: str | Path,
        arm: str | None = None,
        mode: str | None = None,
        dataset_key: str | None = None,
        convention: str | None = None,
    ) -> Normalizer:
        path = Path(folder) / NORM_STATS_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: a checkpoint needs its normalisation stats")
        data = read_stats_file(path)
        try:
            return cls.from_dict(data, arm, mode, dataset_key, convention)
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise ValueError(f"{path}: {error}") from None


def read_stats_file(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None


def stats_keys(data: dict[str, Any]) -> dict[str, list[str]]:
    """What a norm_stats.json holds: {arm: [dataset keys]} ([] for one dataset per arm); {} for ours."""
    if "observation.state" in data:
        return {}
    return {
        arm: sorted(k for k, v in entry.items() if isinstance(v, dict) and "observation.state" in v)
        for arm, entry in data.items()
        if isinstance(entry, dict)
    }


def _reference_entry(data: dict[str, Any], arm: str | None, dataset_key: str | None = None) -> dict[str, Any]:
    if not data:
        raise ValueError("norm stats are empty")
    if arm is None:
        if len(data) != 1:
            raise ValueError(f"norm stats hold several arms {sorted(data)}: say which one")
        arm = next(iter(data))
    if arm not in data:
        raise ValueError(f"norm stats have no arm {arm!r}; they hold {sorted(data)}")
    entry = data[arm]
    if "observation.state" in entry:
        if dataset_key:
            raise ValueError(f"dataset_key {dataset_key!r} given, but arm {arm!r} has a single dataset")
        return entry
    keys = stats_keys({arm: entry})[arm]
    if dataset_key is None:
        if len(keys) != 1:
            raise ValueError(
                f"norm stats for arm {arm!r} hold {len(keys)} datasets: pick one with dataset_key ({keys})"
            )
        dataset_key = keys[0]
    if dataset_key not in keys:
        raise ValueError(f"norm stats for arm {arm!r} have no dataset {dataset_key!r}; dataset_key is one of {keys}")
    return entry[dataset_key]
