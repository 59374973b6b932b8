"""The one loader of the suite's nested-dataclass configs: Evo1Config (config.json of a checkpoint),
TrainConfig and PretrainConfig (YAML plus key=value overrides) and ArmConfig (a ROS parameter file
and the node's parameters). Same rules everywhere:

- keys are dataclass fields, nested with dots (`train.lr`, `safety.max_jump`) or as mappings;
  an unknown key is an error naming it;
- a value takes the type of the field's default: int, float, bool, str, list (of the first
  element's type) or tuple; a value that cannot is an error naming the key and the type;
- `strict` (ROS parameters) refuses what ROS would refuse: a bool written as anything but a bool,
  a list of the wrong kind, a float for an int; otherwise YAML's looser spellings are accepted
  ("1e-3" as a float, "true" as a bool).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml


def _field(config: Any, dotted: str, what: str) -> tuple[Any, str]:
    """(the dataclass that holds the field, the field's name) of a dotted key."""
    *path, leaf = dotted.split(".")
    target = config
    for part in path:
        target = getattr(target, part, None) if dataclasses.is_dataclass(target) else None
        if target is None or not dataclasses.is_dataclass(target):
            raise ValueError(f"unknown {what} {dotted!r}")
    if leaf not in {f.name for f in dataclasses.fields(target)}:
        raise ValueError(f"unknown {what} {dotted!r}")
    return target, leaf


def set_dotted(config: Any, dotted: str, value: Any, what: str, strict: bool = False) -> None:
    """config.<dotted> = value, in the type of the field's default; a mapping given for a nested
    dataclass sets its keys one by one."""
    target, leaf = _field(config, dotted, what)
    current = getattr(target, leaf)
    if dataclasses.is_dataclass(current):
        if not isinstance(value, Mapping):
            raise ValueError(f"{what} {dotted!r} is a section: give it keys, not {value!r}")
        for key, item in value.items():
            set_dotted(config, f"{dotted}.{key}", item, what, strict)
        return
    setattr(target, leaf, coerce(value, current, f"{what} {dotted}", strict))


def build(kind: type, data: Mapping[str, Any], what: str, strict: bool = False) -> Any:
    """A `kind` with its defaults, then every key of `data` (nested mappings or dotted) set on it."""
    config = kind()
    for key, value in data.items():
        set_dotted(config, str(key), value, what, strict)
    return config


def load_yaml(kind: type, path: str | Path | None, overrides: list[str] | None, what: str) -> Any:
    """A `kind` from a YAML file (or defaults) and key=value overrides (values read as YAML)."""
    data = yaml.safe_load(Path(path).read_text()) if path else {}
    config = build(kind, data or {}, what)
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        key, value = item.split("=", 1)
        set_dotted(config, key, yaml.safe_load(value), what)
    return config


def coerce(value: Any, default: Any, name: str, strict: bool = False) -> Any:
    """`value` in the type of `default`."""
    try:
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            if strict or not isinstance(value, (str, int)):
                raise TypeError
            return str(value).strip().lower() in ("true", "1", "yes", "on")
        if isinstance(default, (list, tuple)):
            if not isinstance(value, (list, tuple)):
                raise TypeError
            kind = type(default[0]) if default else None
            if kind is bool and not all(isinstance(v, bool) for v in value):
                raise TypeError
            items = [kind(v) for v in value] if kind not in (None, bool) else list(value)
            return tuple(items) if isinstance(default, tuple) else items
        if isinstance(default, float):
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if isinstance(default, int):
            if isinstance(value, bool) or (strict and isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(float(value)) if not strict else int(value)
        if isinstance(default, str):
            return "" if value is None else str(value)  # `key=` (YAML's null) clears a text field
        if isinstance(default, Mapping):
            if not isinstance(value, Mapping):
                raise TypeError
            return dict(value)
        return value
    except (TypeError, ValueError):
        raise ValueError(f"{name}: {value!r} is not a {type(default).__name__}") from None
