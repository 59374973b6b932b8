"""Checkpoints: our folder format, and loading the formats users already have.

One module per format or era, read in this order: `files` (what all share), `ours` (config.json,
model.safetensors, norm_stats.json, tokenizer.json), `reference` (the reference implementation's
DeepSpeed and torch folders, eras `main` and `flash`), `lerobot` (LeRobot's port), `internvl_hf`
(an InternVL3 `-hf` backbone for a fresh model). All from local paths only; a load that leaves
parameters missing or finds unexpected ones is refused unless asked for; nothing is ever
unpickled beyond what torch.load(weights_only=True) allows. A new era goes in a module of its
own, with a branch in `load_checkpoint` that recognises its files.
"""

from __future__ import annotations

from pathlib import Path

from ..config import Evo1Config
from ..model import Evo1Model
from ..normalize import Normalizer
from ..tokenizer import PromptTokenizer
from .files import (
    CONFIG_FILE,
    FORMAT_TAG,
    PRETRAINED_PRESET_FILE,
    REFERENCE_PICKLES,
    REQUIRED_FILES,
    WEIGHTS_FILE,
    CheckpointError,
    LoadReport,
    load_safetensors_dir,
    read_json,
    read_weights,
)
from .internvl_hf import backbone_from_internvl_config, from_internvl_hf, map_internvl_hf_state_dict
from .lerobot import load_lerobot_checkpoint, map_lerobot_state_dict
from .ours import BUNDLED_TOKENIZER_KEY, load_ours, read_config, save_checkpoint
from .reference import REFERENCE_ERAS, load_reference_checkpoint, map_reference_state_dict, reference_era

__all__ = [
    "BUNDLED_TOKENIZER_KEY",
    "CONFIG_FILE",
    "FORMAT_TAG",
    "PRETRAINED_PRESET_FILE",
    "REFERENCE_ERAS",
    "REQUIRED_FILES",
    "WEIGHTS_FILE",
    "CheckpointError",
    "LoadReport",
    "backbone_from_internvl_config",
    "from_internvl_hf",
    "load_checkpoint",
    "load_lerobot_checkpoint",
    "load_reference_checkpoint",
    "load_safetensors_dir",
    "map_internvl_hf_state_dict",
    "map_lerobot_state_dict",
    "map_reference_state_dict",
    "read_config",
    "read_weights",
    "reference_era",
    "save_checkpoint",
]


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
    raw_config = read_json(folder / CONFIG_FILE)
    if raw_config.get("format") != FORMAT_TAG:
        return load_lerobot_checkpoint(folder, raw_config, allow_partial, tokenizer_dir, arm, base, dataset_key)
    return load_ours(folder, raw_config, allow_partial, tokenizer_dir, arm, dataset_key)
