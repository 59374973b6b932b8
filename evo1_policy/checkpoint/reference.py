"""The reference implementation's checkpoints (MINT-SJTU/Evo-1), in its two eras: `main`, which
trained the November 2025 releases, and `evo1-flash` (docs/checkpoints.md). DeepSpeed folders
(mp_rank_00_model_states.pt, entry `module`) or checkpoint.pt (`model_state_dict`), read with
torch.load(weights_only=True) and nothing else; names mapped by rule, fused vision qkv split."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from ..config import Evo1Config, preset
from ..model import Evo1Model
from ..normalize import Normalizer
from ..tokenizer import PromptTokenizer
from .files import (
    CONFIG_FILE,
    REFERENCE_PICKLES,
    CheckpointError,
    LoadReport,
    config_from_shapes,
    is_dropped_layer,
    load_into,
    normalizer_or_error,
    read_json,
    stats_keys_of,
    strip_linear_wrappers,
)
from .internvl_hf import backbone_from_internvl_config

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


def map_reference_state_dict(state: dict[str, torch.Tensor], text_layers: int = 14) -> tuple[dict, list[str]]:
    """Reference (remote-code InternVL) names -> ours; splits the fused vision qkv."""
    out: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith("embedder.model.language_model.lm_head") or is_dropped_layer(key, text_layers):
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
        out[strip_linear_wrappers(key)] = value
    return out, dropped


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


def vlm_sizes(base: Evo1Config, train: dict[str, Any], source: str) -> Evo1Config:
    """The reference builds its VLM from `vlm_name` (a hub name or a local folder) and then loads the
    weights into it; the sizes come from the same place. The hub's InternVL3-1B is the base preset."""
    name = str(train.get("vlm_name", "OpenGVLab/InternVL3-1B"))
    folder = Path(name).expanduser()
    if (folder / CONFIG_FILE).is_file():
        return backbone_from_internvl_config(base, read_json(folder / CONFIG_FILE), str(folder / CONFIG_FILE))
    if name.rstrip("/").split("/")[-1].removesuffix("-hf") == "InternVL3-1B":
        return base
    raise CheckpointError(
        f"{source}: vlm_name {name!r} is neither InternVL3-1B nor a local folder; its sizes are unknown here "
        "(put its config.json in a folder and name that folder in config.json's vlm_name)"
    )


def check_against_config(config: Evo1Config, train: dict[str, Any], source: str) -> None:
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


def head_heads(config: Evo1Config, train: dict[str, Any], default: int, source: str) -> None:
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
    train = read_json(folder / CONFIG_FILE) if (folder / CONFIG_FILE).is_file() else dict(embedded_config or {})
    era = reference_era(train)
    base = _reference_config(vlm_sizes(base or preset("evo1-0.77b"), train, str(path)), era)
    mapped, dropped = map_reference_state_dict(state, base.text.num_layers)
    config = config_from_shapes(mapped, base)
    check_against_config(config, train, str(path))
    head_heads(config, train, 8, str(path))
    model = Evo1Model(config)
    report = load_into(model, mapped, str(path), allow_partial, dropped)
    report.format = "reference-deepspeed" if path.name == REFERENCE_PICKLES[0] else "reference-torch"
    step = blob.get("step", blob.get("global_steps")) if isinstance(blob, dict) else None
    report.step = int(step) if isinstance(step, int) else None
    embedded_stats = blob.get("norm_stats") if isinstance(blob, dict) else None
    report.dataset_keys = stats_keys_of(folder, embedded_stats)
    mode = train.get("normalization_type", "bounds") if era == "flash" else "bounds"  # main's server: min/max only
    normalizer = normalizer_or_error(folder, arm, dataset_key, mode, "reference", embedded_stats)
    normalizer.state_padding = REFERENCE_ERAS[era][3]
    tokenizer = PromptTokenizer.from_dir(tokenizer_dir) if tokenizer_dir else PromptTokenizer.from_dir()
    return model, normalizer, tokenizer, report
