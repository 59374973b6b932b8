"""What every checkpoint format shares: the file names, the error and load report, reading
safetensors and JSON, loading a mapped state dict into a model (refusing partial or mismatched
loads unless asked), the normaliser from a folder, and sizes read off the weights."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from ..config import Evo1Config
from ..normalize import NORM_STATS_FILE, Normalizer, read_stats_file, stats_keys
from ..tokenizer import TOKENIZER_FILE

CONFIG_FILE = "config.json"


WEIGHTS_FILE = "model.safetensors"


FORMAT_TAG = "evo1_ros/1"


REQUIRED_FILES = (CONFIG_FILE, WEIGHTS_FILE, NORM_STATS_FILE, TOKENIZER_FILE)


REFERENCE_PICKLES = ("mp_rank_00_model_states.pt", "checkpoint.pt")


# Beside an -hf folder's config.json when `evo1 pretrain-vlm` wrote it: the whole preset it was
# pretrained as (prompt order included), so stage 1 cannot start from it with other sizes or order.
PRETRAINED_PRESET_FILE = "evo1_config.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as asked; the message says why."""


@dataclass
class LoadReport:
    source: str
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # known-unused keys (e.g. the LM head)
    # What was detected (evo1 info --checkpoint prints it)
    format: str = "evo1_ros"  # evo1_ros, reference-deepspeed, reference-torch, lerobot
    step: int | None = None  # the training step the checkpoint was saved at, when it says
    dataset_keys: dict[str, list[str]] = field(default_factory=dict)  # norm stats: {arm: [datasets]}

    def summary(self) -> str:
        return (
            f"{self.source}: {len(self.missing)} missing, {len(self.unexpected)} unexpected, "
            f"{len(self.dropped)} dropped keys"
        )


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; any failure (truncated, garbage, a bad header, unreadable) is
    a CheckpointError naming the file, never a library's own exception type."""
    try:
        return load_file(str(path))
    except Exception as error:  # noqa: BLE001 - safetensors raises its own SafetensorError, OSError, ...
        cause = " ".join(str(error).split()) or type(error).__name__
        raise CheckpointError(f"{path} is not a readable safetensors file ({cause})") from None


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} is not valid JSON: {error}") from None


def load_into(
    model: nn.Module, state: dict[str, torch.Tensor], source: str, allow_partial: bool, dropped: list[str] | None = None
) -> LoadReport:
    expected = model.state_dict()
    report = LoadReport(source, dropped=list(dropped or []))
    report.missing = sorted(set(expected) - set(state))
    report.unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if mismatched:
        raise CheckpointError(
            f"{source}: {len(mismatched)} weights do not match the config's shapes, e.g. {mismatched[:3]}"
        )
    if (report.missing or report.unexpected) and not allow_partial:
        raise CheckpointError(
            f"{source}: refusing a partial load ({len(report.missing)} missing, e.g. {report.missing[:3]}; "
            f"{len(report.unexpected)} unexpected, e.g. {report.unexpected[:3]}); pass allow_partial to accept it"
        )
    dtype = next(iter(expected.values())).dtype
    known = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items() if k in expected}
    model.load_state_dict(known, strict=False)
    return report


def normalizer_or_error(
    folder: Path,
    arm: str | None,
    dataset_key: str | None = None,
    mode: str | None = None,
    convention: str | None = None,
    embedded: dict[str, Any] | None = None,
) -> Normalizer:
    """The folder's norm_stats.json (or stats embedded in the weights file)."""
    try:
        if not (folder / NORM_STATS_FILE).is_file() and embedded:
            return Normalizer.from_dict(embedded, arm, mode, dataset_key, convention)
        return Normalizer.load(folder, arm, mode, dataset_key, convention)
    except (FileNotFoundError, ValueError) as error:
        raise CheckpointError(str(error)) from None


def stats_keys_of(folder: Path, embedded: dict[str, Any] | None = None) -> dict[str, list[str]]:
    path = folder / NORM_STATS_FILE
    try:
        data = read_stats_file(path) if path.is_file() else embedded or {}
    except ValueError:
        return {}
    return stats_keys(data) if isinstance(data, dict) else {}


def config_from_shapes(state: dict[str, torch.Tensor], base: Evo1Config) -> Evo1Config:
    """Fill what the weights determine (layer counts, widths, horizon, dims); heads stay from `base`."""
    config = Evo1Config.from_dict(base.to_dict())

    def count(pattern: str) -> int:
        indices = {int(m[1]) for k in state if (m := re.search(pattern, k))}
        return max(indices) + 1 if indices else 0

    config.vision.num_layers = count(r"vision_tower\.encoder\.layer\.(\d+)\.") or config.vision.num_layers
    config.text.num_layers = count(r"language_model\.layers\.(\d+)\.") or config.text.num_layers
    config.head.num_layers = count(r"action_head\.transformer_blocks\.(\d+)\.") or config.head.num_layers
    if "action_head.seq_pool_proj.weight" in state:
        width = state["action_head.seq_pool_proj.weight"].shape[0]
        config.head.width = 0 if width == config.text.hidden_size else width
        config.horizon = state["action_head.seq_pool_proj.weight"].shape[1] // width
        config.max_action_dim = state["action_head.action_encoder.W1.weight"].shape[1]
        config.max_state_dim = state["action_head.state_encoder.fc1.weight"].shape[1]
        config.head.state_hidden = state["action_head.state_encoder.fc1.weight"].shape[0]
        config.head.mlp_hidden = state["action_head.mlp_head.fc1.weight"].shape[0]
    if "action_head.transformer_blocks.0.ff.0.weight" in state:
        config.head.ffn_size = state["action_head.transformer_blocks.0.ff.0.weight"].shape[0]
    config.validate()
    return config


def load_safetensors_dir(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a folder's model.safetensors or its shards (model-0000x-of-0000y.safetensors)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{folder} has no .safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for path in files:
        state.update(read_weights(path))
    return state


def is_dropped_layer(key: str, text_layers: int) -> bool:
    match = re.search(r"language_model\.(?:model\.)?layers\.(\d+)\.", key)
    return bool(match) and int(match[1]) >= text_layers


def strip_linear_wrappers(key: str) -> str:
    """The reference wraps the head's linears in a per-embodiment class (`X.linear.weight`)."""
    return re.sub(r"\.linear\.(weight|bias)$", r".\1", key) if key.startswith("action_head.") else key
