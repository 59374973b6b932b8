"""The training configs, torch-free (a YAML plus key=value overrides, loaded by settings.load_yaml):
TrainConfig for `evo1 train` and PretrainSection, the optimiser part of stage 0's config. Every
key and its default is here; config/train/ holds the shipped recipes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..settings import load_yaml


@dataclass
class ModelSection:
    preset: str = "evo1-tiny"
    init_checkpoint: str = ""  # start from these weights (our format or any loadable one)
    internvl_hf: str = ""  # or: a fresh head on this InternVL3 -hf backbone
    instruction_first: bool = False  # fresh models: instruction before images (the preset may already say so)


@dataclass
class DataSection:
    bags: list[str] = field(default_factory=list)  # paths or globs (sqlite3 or mcap bag folders/files)
    lerobot: list[str] = field(default_factory=list)  # LeRobot v2.1 / v3.0 dataset folders
    arm_config: str = "sim_arm"  # for bags: the node's topics, joints and control rate
    action_source: str = "command"  # for bags: "command" (the trajectory topic) or "next-state"
    instructions: dict[str, str] = field(default_factory=dict)  # bag name -> instruction, if not in the bag
    skip_bad_episodes: bool = False  # otherwise a bad episode stops the run
    # Steps an operator took over from a policy (`evo1 record --takeovers`, DAgger-style data):
    # ignore (train on every step alike), only (train on those steps alone), weight (draw them
    # takeover_weight times as often as the others).
    takeovers: str = "ignore"
    takeover_weight: float = 4.0


@dataclass
class NormalizationSection:
    mode: str = "bounds"
    action_space: str = "absolute"
    absolute_dims: list[int] = field(default_factory=list)
    # With model.init_checkpoint (fine-tuning): keep that checkpoint's statistics, which its weights
    # were trained against (a few new episodes span a narrower range, and refitted bounds would
    # move every output); false: fit them to this run's data (another arm, another range).
    from_init_checkpoint: bool = True


@dataclass
class TrainSection:
    stages: list[int] = field(default_factory=lambda: [1, 2])
    stage1_steps: int = 1000
    stage2_steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-4
    vlm_lr_scale: float = 1.0  # stage 2: the VLM learns at lr x this (below 1 keeps more of its pretraining)
    warmup_steps: int = 100
    weight_decay: float = 1e-3
    grad_clip: float = 1.0
    seed: int = 0
    augment: bool = True
    gradient_checkpointing: bool = False  # the VLM's layers: recomputed in backward (memory for time)
    head_checkpointing: bool = False  # the action head's blocks, likewise
    save_every: int = 500
    log_every: int = 10
    device: str = "auto"


TAKEOVER_MODES = ("ignore", "only", "weight")


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    normalization: NormalizationSection = field(default_factory=NormalizationSection)
    train: TrainSection = field(default_factory=TrainSection)
    output: str = "runs/evo1"

    @classmethod
    def load(cls, path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
        config = load_yaml(cls, path, overrides, "training config key")
        if config.data.takeovers not in TAKEOVER_MODES:
            raise ValueError(f"data.takeovers {config.data.takeovers!r} unknown; choose one of {TAKEOVER_MODES}")
        return config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class PretrainSection:
    steps: int = 4000
    batch_size: int = 32
    lr: float = 5e-4
    warmup_steps: int = 200
    weight_decay: float = 1e-3
    grad_clip: float = 1.0
    seed: int = 0
    eval_every: int = 500
    save_every: int = 1000  # a resumable state in output/resume (an interrupted run goes on from it)
    # Sampling weight of each question kind (kinds not named: 1.0).
    kind_weights: dict[str, float] = field(default_factory=dict)
    device: str = "auto"
