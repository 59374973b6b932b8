"""An InternVL3 `-hf` folder (transformers' native layout) as the backbone of a fresh Evo-1, and
the VLM sizes an InternVL config.json states."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from ..config import Evo1Config, preset
from ..model import Evo1Model
from ..tokenizer import TOKENIZER_FILE, PromptTokenizer
from .files import (
    CONFIG_FILE,
    PRETRAINED_PRESET_FILE,
    CheckpointError,
    LoadReport,
    is_dropped_layer,
    load_into,
    load_safetensors_dir,
    read_json,
)
from .ours import config_from_json


def map_internvl_hf_state_dict(state: dict[str, torch.Tensor], text_layers: int) -> tuple[dict, list[str]]:
    """An InternVL3 `-hf` checkpoint (native names, old or new layout) -> our backbone keys."""
    out: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key, value in state.items():
        if "lm_head" in key or is_dropped_layer(key, text_layers):
            dropped.append(key)
            continue
        key = key.removeprefix("model.")
        key = re.sub(r"^language_model\.model\.", "language_model.", key)
        out[f"embedder.model.{key}"] = value
    return out, dropped


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, (list, tuple)) else value


def backbone_from_internvl_config(config: Evo1Config, hf: dict[str, Any], source: str) -> Evo1Config:
    """The VLM sizes an InternVL3 config.json states (native `-hf` layout with text_config, or the
    remote-code one with llm_config), on a copy of `config`. The language model stays truncated."""
    vision, text = hf.get("vision_config"), hf.get("text_config") or hf.get("llm_config")
    if not isinstance(vision, dict) or not isinstance(text, dict):
        raise CheckpointError(f"{source}: not an InternVL config (no vision_config and text_config/llm_config)")
    out = Evo1Config.from_dict(config.to_dict())
    v, t = out.vision, out.text
    try:
        v.hidden_size = int(vision["hidden_size"])
        v.num_layers = int(vision["num_hidden_layers"])
        v.num_heads = int(vision["num_attention_heads"])
        v.intermediate_size = int(vision["intermediate_size"])
        v.patch_size = int(_first(vision["patch_size"]))
        v.image_size = int(_first(vision["image_size"]))
        t.hidden_size = int(text["hidden_size"])
        t.num_layers = min(t.num_layers, int(text["num_hidden_layers"]))
        t.num_heads = int(text["num_attention_heads"])
        t.num_kv_heads = int(text.get("num_key_value_heads", t.num_heads))
        t.intermediate_size = int(text["intermediate_size"])
        t.vocab_size = int(text.get("vocab_size", t.vocab_size))
        t.rope_theta = float(text.get("rope_theta", t.rope_theta))
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{source}: InternVL config lacks or garbles {error}") from None
    out.downsample_ratio = float(hf.get("downsample_ratio", out.downsample_ratio))
    out.validate()
    return out


def from_internvl_hf(
    folder: str | Path, config: Evo1Config | None = None, allow_partial: bool = False
) -> tuple[Evo1Model, PromptTokenizer, LoadReport]:
    """A fresh Evo-1 whose backbone is an InternVL3 `-hf` folder (truncated); the head is new."""
    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file():
        raise CheckpointError(f"{folder} is not an InternVL3 -hf folder: {CONFIG_FILE} is missing")
    hf = read_json(folder / CONFIG_FILE)
    config = config or preset("evo1-0.77b")
    text = hf.get("text_config", {})
    vision = hf.get("vision_config", {})
    for ours, theirs in (
        (config.text.hidden_size, text.get("hidden_size")),
        (config.vision.hidden_size, vision.get("hidden_size")),
    ):
        if theirs is not None and ours != theirs:
            raise CheckpointError(f"{folder}: hidden size {theirs} does not match the config's {ours}")
    pretrained_as = folder / PRETRAINED_PRESET_FILE
    if pretrained_as.is_file():
        pretrained = config_from_json(read_json(pretrained_as), pretrained_as)
        ours = (config.vision, config.text.num_layers, config.text.hidden_size, config.instruction_first)
        theirs = (
            pretrained.vision,
            pretrained.text.num_layers,
            pretrained.text.hidden_size,
            pretrained.instruction_first,
        )
        if ours != theirs:
            raise CheckpointError(
                f"{folder} was pretrained as {pretrained.preset} (instruction_first={pretrained.instruction_first}); "
                f"preset {config.preset} differs in its backbone sizes or prompt order"
            )
    model = Evo1Model(config)
    mapped, dropped = map_internvl_hf_state_dict(load_safetensors_dir(folder), config.text.num_layers)
    backbone_keys = {k for k in model.state_dict() if k.startswith("embedder.")}
    report = LoadReport(str(folder), dropped=dropped)
    report.missing = sorted(backbone_keys - set(mapped))
    report.unexpected = sorted(set(mapped) - backbone_keys)
    if (report.missing or report.unexpected) and not allow_partial:
        raise CheckpointError(
            f"{folder}: backbone load incomplete ({len(report.missing)} missing, e.g. {report.missing[:3]}; "
            f"{len(report.unexpected)} unexpected, e.g. {report.unexpected[:3]})"
        )
    load_into(model, {k: v for k, v in mapped.items() if k in backbone_keys}, str(folder), allow_partial=True)
    tokenizer_source = folder if (folder / TOKENIZER_FILE).is_file() else None
    return model, PromptTokenizer.from_dir(tokenizer_source), report
