"""LeRobot's `evo1` port: its model.safetensors (`model.embedder.model.*`,
`model.action_head.*`), its config.json and the normaliser stats its processor saves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..config import Evo1Config, preset
from ..model import Evo1Model
from ..normalize import Normalizer
from ..tokenizer import TOKENIZER_FILE, PromptTokenizer
from .files import (
    WEIGHTS_FILE,
    CheckpointError,
    LoadReport,
    config_from_shapes,
    is_dropped_layer,
    load_into,
    normalizer_or_error,
    read_json,
    read_weights,
    stats_keys_of,
    strip_linear_wrappers,
)
from .reference import check_against_config, head_heads, vlm_sizes


def map_lerobot_state_dict(state: dict[str, torch.Tensor], text_layers: int = 14) -> tuple[dict, list[str]]:
    """LeRobot port names (`model.embedder.model.*`, `model.action_head.*`) -> ours."""
    out: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key, value in state.items():
        key = key.removeprefix("model.")
        if "lm_head" in key or is_dropped_layer(key, text_layers):
            dropped.append(key)
            continue
        out[strip_linear_wrappers(key)] = value
    return out, dropped


LEROBOT_NORMALIZATION = {"MIN_MAX": "bounds", "MEAN_STD": "normal", "QUANTILES": "bounds_q99"}


LEROBOT_PREPROCESSOR = "policy_preprocessor.json"


def _lerobot_config(base: Evo1Config, raw: dict[str, Any]) -> Evo1Config:
    """The conventions of LeRobot's `evo1` port (docs/checkpoints.md)."""
    config = Evo1Config.from_dict(base.to_dict())
    config.era = "lerobot"
    config.head.time_index_scale = 999
    # LeRobot's config names the step count either way; without it, the base preset's (Evo-1's 32)
    steps = raw.get("num_inference_timesteps", raw.get("num_inference_steps", base.num_inference_steps))
    config.num_inference_steps = int(steps)
    config.pad_to_max_length = False  # padded to the batch's longest prompt ...
    config.head_attends_padding = False  # ... and the head masks padding and missing views
    config.missing_view_fill = "black"
    config.fixed_view_slots = True
    config.image_resize = "bicubic"
    config.image_normalize_dtype = "bfloat16" if raw.get("vlm_dtype", "bfloat16") == "bfloat16" else "float32"
    config.max_views = int(raw.get("max_views", config.max_views))
    config.head.dropout = 0.0
    return config


def _lerobot_stats(folder: Path) -> dict[str, Any] | None:
    """The normaliser's stats that LeRobot saves beside its processor config, as norm_stats.json
    would hold them ({"observation.state": {...}, "action": {...}}); None when absent."""
    spec = folder / LEROBOT_PREPROCESSOR
    if not spec.is_file():
        return None
    steps = read_json(spec).get("steps", [])
    files = [s.get("state_file") for s in steps if s.get("registry_name") == "normalizer_processor"]
    if not files or not files[0] or not (folder / files[0]).is_file():
        return None
    flat = read_weights(folder / files[0])
    stats: dict[str, dict[str, list[float]]] = {}
    for key, tensor in flat.items():
        feature, stat = key.rsplit(".", 1)
        if feature in ("observation.state", "action"):
            stats.setdefault(feature, {})[stat] = tensor.double().flatten().tolist()
    return stats if {"observation.state", "action"} <= set(stats) else None


def load_lerobot_checkpoint(
    folder: Path,
    raw_config: dict[str, Any],
    allow_partial: bool,
    tokenizer_dir: str | Path | None,
    arm: str | None,
    base: Evo1Config | None = None,
    dataset_key: str | None = None,
) -> tuple[Evo1Model, Normalizer, PromptTokenizer, LoadReport]:
    state = read_weights(folder / WEIGHTS_FILE)
    if not any(k.startswith("model.action_head.") for k in state):
        raise CheckpointError(
            f"{folder}: config.json is not an evo1_ros config and the weights have no 'model.action_head.*' "
            "keys (LeRobot evo1 layout): unknown checkpoint format"
        )
    vlm = {"vlm_name": raw_config.get("vlm_model_name", "OpenGVLab/InternVL3-1B")}
    base = _lerobot_config(vlm_sizes(base or preset("evo1-0.77b"), vlm, str(folder)), raw_config)
    text_layers = int(raw_config.get("vlm_num_layers") or base.text.num_layers)
    mapped, dropped = map_lerobot_state_dict(state, text_layers)
    config = config_from_shapes(mapped, base)
    check_against_config(config, {"embed_dim": raw_config.get("embed_dim")}, str(folder))
    head_heads(config, raw_config, 8, str(folder))
    model = Evo1Model(config)
    report = load_into(model, mapped, str(folder / WEIGHTS_FILE), allow_partial, dropped)
    report.format = "lerobot"
    mapping = raw_config.get("normalization_mapping", {})
    mode = LEROBOT_NORMALIZATION.get(str(mapping.get("STATE", "MIN_MAX")))
    if mode is None:
        raise CheckpointError(f"{folder}: LeRobot normalisation {mapping.get('STATE')!r} is not supported")
    stats = _lerobot_stats(folder)
    normalizer = normalizer_or_error(folder, arm, dataset_key, mode, "lerobot", stats)
    report.dataset_keys = stats_keys_of(folder)  # {} for the processor's stats: one dataset
    tokenizer_source = tokenizer_dir or (folder if (folder / TOKENIZER_FILE).is_file() else None)
    return model, normalizer, PromptTokenizer.from_dir(tokenizer_source), report
