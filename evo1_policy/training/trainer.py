"""Two-stage Evo-1 training: `evo1 train CONFIG.yaml [key=value ...]`.

Stage 1 freezes the VLM and trains the action head with the integration module; stage 2 trains
everything, starting from stage 1's weights with a fresh optimizer and schedule. AdamW (no
weight decay on biases and norms), linear warm-up then cosine to zero, gradient clipping, bf16
autocast on CUDA. Every random draw is a function of (seed, stage, step), so a resumed run
repeats the uninterrupted one exactly, and N processes under torchrun (DDP) see the same global
batch as one process.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import yaml
from torch import nn

from ..checkpoint import from_internvl_hf, load_checkpoint, save_checkpoint
from ..config import preset
from ..data.augment import Augmentation
from ..data.episode import DatasetError, Episode, check_consistent
from ..devices import resolve_device
from ..model import Evo1Model, ModelInputs
from ..normalize import Normalizer
from ..processor import Observation, Processor
from ..settings import load_yaml
from ..tokenizer import PromptTokenizer

if TYPE_CHECKING:
    from ..data.rosbag import BagSpec

STATE_FILE = "training_state.pt"


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


@dataclass
class NormalizationSection:
    mode: str = "bounds"
    action_space: str = "absolute"
    absolute_dims: list[int] = field(default_factory=list)


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


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    normalization: NormalizationSection = field(default_factory=NormalizationSection)
    train: TrainSection = field(default_factory=TrainSection)
    output: str = "runs/evo1"

    @classmethod
    def load(cls, path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
        return load_yaml(cls, path, overrides, "training config key")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------------ data


def load_episodes(
    config: TrainConfig, horizon: int, image_size: int, log: Any = print, bag_spec: BagSpec | None = None
) -> list[Episode]:
    """Every episode of the configured bags and datasets, validated; bad ones stop the run unless
    skip_bad_episodes, and then they are counted in the log. Bags are read with `bag_spec` (the
    topics and joints of data.arm_config, which `evo1 train` resolves: this package knows no ROS)."""
    from ..data.lerobot import read_lerobot
    from ..data.rosbag import read_bag

    episodes: list[Episode] = []
    skipped: list[str] = []
    bag_paths = [p for pattern in config.data.bags for p in (sorted(glob.glob(pattern)) or [pattern])]
    spec = None
    if bag_paths:
        if bag_spec is None:
            raise ValueError(
                "data.bags needs the topics and joints of an arm config: `evo1 train` reads data.arm_config; "
                "a caller of Trainer passes bag_spec=BagSpec.from_arm_config(...)"
            )
        spec = dataclasses.replace(bag_spec, image_size=image_size)

    def accept(make: Any) -> None:
        try:
            items = make()
            for episode in items if isinstance(items, list) else [items]:
                episode.validate(horizon)
                episodes.append(episode)
        except DatasetError as error:
            if not config.data.skip_bad_episodes:
                raise
            skipped.append(str(error))
            log(f"skipped: {error}")

    for i, path in enumerate(bag_paths):
        instruction = config.data.instructions.get(Path(path).name)
        accept(lambda p=path, i=i, text=instruction: read_bag(p, spec, text, i))
    for root in config.data.lerobot:
        accept(lambda r=root: read_lerobot(r, image_size))
    if not episodes:
        raise DatasetError(
            "no usable episodes: configure data.bags or data.lerobot"
            + (f" ({len(skipped)} skipped)" if skipped else "")
        )
    check_consistent(episodes)
    log(f"data: {len(episodes)} episodes, {sum(e.length for e in episodes)} steps, {len(skipped)} skipped")
    return episodes


class Windows:
    """Training samples: (episode, step) -> images, state and instruction at the step, and the
    next `horizon` actions (padded with the last one at the episode's end)."""

    def __init__(self, episodes: list[Episode], horizon: int):
        self.episodes = episodes
        self.horizon = horizon
        self.index = [(e, t) for e, episode in enumerate(episodes) for t in range(episode.length)]

    def __len__(self) -> int:
        return len(self.index)

    def sample(self, i: int, augment: Augmentation | None, rng: np.random.Generator) -> tuple[Observation, np.ndarray]:
        e, t = self.index[i]
        episode = self.episodes[e]
        images = [camera[t] for camera in episode.images]
        if augment is not None:
            images = [augment(image, rng) for image in images]
        return Observation(images, episode.states[t], episode.instruction), episode.action_window(t, self.horizon)

    def fit_normalizer(self, section: NormalizationSection) -> Normalizer:
        states = np.stack([self.episodes[e].states[t] for e, t in self.index])
        actions = np.stack([self.episodes[e].action_window(t, self.horizon) for e, t in self.index])
        first = self.episodes[0]
        return Normalizer.fit(
            states,
            actions,
            section.mode,
            section.action_space,
            section.absolute_dims,
            first.state_names,
            first.action_names,
        )


# ------------------------------------------------------------------------------------------ training


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng([abs(int(k)) for k in keys])


def _torch_generator(*keys: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(_rng(*keys).integers(2**62)))


def parameter_groups(
    model: nn.Module, weight_decay: float, lr: float, scaled: nn.Module | None = None, scale: float = 1.0
) -> list[dict[str, Any]]:
    """Weight decay on matrices only: not on biases, norms, scales or tables of one dimension. The
    parameters of `scaled` (the VLM in stage 2) learn at lr x scale. With scale 1 the groups are the
    two of earlier versions, in the same order, so their training states still resume."""
    scaled_ids = {id(p) for p in scaled.parameters()} if scaled is not None and scale != 1.0 else set()
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for _, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((p.ndim >= 2, id(p) in scaled_ids), []).append(p)
    return [
        {"params": params, "weight_decay": weight_decay if decay else 0.0, "lr": lr * (scale if in_scaled else 1.0)}
        for (decay, in_scaled), params in sorted(groups.items(), key=lambda item: (not item[0][0], item[0][1]))
    ]


def warmup_cosine(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: torch.device) -> Distributed:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), world)


def set_stage_trainable(model: Evo1Model, stage: int) -> None:
    """Stage 1: the action head (with the integration module) learns, the VLM is frozen. Stage 2:
    everything learns."""
    for p in model.embedder.parameters():
        p.requires_grad_(stage == 2)
    for p in model.action_head.parameters():
        p.requires_grad_(True)


def enable_checkpointing(model: Evo1Model, vlm: bool, head: bool) -> None:
    """Activation checkpointing: recompute the VLM's layers (transformers' own) and/or the head's
    blocks in the backward pass instead of keeping their activations (memory for time)."""
    backbone = model.embedder.model
    if vlm:
        enable = getattr(backbone, "activation_checkpointing_enable", None) or backbone.gradient_checkpointing_enable
        enable()
    elif backbone.is_gradient_checkpointing:
        backbone.gradient_checkpointing_disable()
    model.action_head.checkpoint_blocks = head


def optimize_step(
    module: nn.Module,
    model: Evo1Model,
    inputs: ModelInputs,
    target: torch.Tensor,
    draws: tuple[torch.Tensor, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    grad_clip: float,
) -> torch.Tensor:
    """One optimiser step on the flow-matching loss (bf16 autocast on CUDA); the loss, detached."""
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if target.device.type == "cuda" else nullcontext()
    with autocast:
        loss = module(inputs, target, draws)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], grad_clip)
    optimizer.step()
    return loss.detach()


class Trainer:
    def __init__(self, config: TrainConfig, log: Any = print, bag_spec: BagSpec | None = None):
        self.config = config
        self.log = log
        self.device = self._device()
        self.dist = Distributed.from_env(self.device)
        if self.dist.world > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        if not self.dist.main:
            self.log = lambda *a, **k: None
        self.model, tokenizer = self._model()
        self.episodes = load_episodes(
            config, self.model.config.horizon, self.model.config.vision.image_size, self.log, bag_spec
        )
        self.windows = Windows(self.episodes, self.model.config.horizon)
        normalizer = self.windows.fit_normalizer(config.normalization)
        self.processor = Processor(self.model.config, tokenizer, normalizer)
        self.augment = Augmentation() if config.train.augment else None
        self.output = Path(config.output)
        self.losses: list[tuple[int, int, float]] = []  # (stage, step, loss)
        self._tensorboard: Any = None  # None: not tried yet; False: not installed

    def _device(self) -> torch.device:
        return resolve_device(self.config.train.device)

    def _model(self) -> tuple[Evo1Model, PromptTokenizer]:
        m = self.config.model
        torch.manual_seed(self.config.train.seed)
        if m.init_checkpoint:
            model, _, tokenizer, report = load_checkpoint(m.init_checkpoint)
            self.log(report.summary())
        elif m.internvl_hf:
            model, tokenizer, report = from_internvl_hf(m.internvl_hf, preset(m.preset))
            self.log(report.summary())
        else:
            config = preset(m.preset)
            config.instruction_first = m.instruction_first or config.instruction_first
            model, tokenizer = Evo1Model(config), PromptTokenizer.from_dir()
        enable_checkpointing(model, self.config.train.gradient_checkpointing, self.config.train.head_checkpointing)
        return model.to(self.device), tokenizer

    # -------------------------------------------------------------------------------- one stage
    def run(self, resume: str | None = None) -> Path:
        self.output.mkdir(parents=True, exist_ok=True)
        if self.dist.main:
            (self.output / "train_config.yaml").write_text(yaml.safe_dump(self.config.to_dict(), sort_keys=False))
        state = None
        if resume:
            state = self._load_resume(Path(resume))
        stages = [int(s) for s in self.config.train.stages]
        for stage in stages:
            if state is not None and stage < state["stage"]:
                continue
            start = state["step"] if state is not None and stage == state["stage"] else 0
            self._stage(stage, start, state if start else None)
            state = None
        final = self.output / "final"
        if self.dist.main:
            self._save(final, stage=stages[-1], step=-1, optimizer=None, scheduler=None)
            self.log(f"final checkpoint: {final}")
        return final

    def _stage(self, stage: int, start: int, state: dict[str, Any] | None) -> None:
        t = self.config.train
        steps = t.stage1_steps if stage == 1 else t.stage2_steps
        trainable_vlm = stage == 2
        set_stage_trainable(self.model, stage)
        module: nn.Module = self.model
        if self.dist.world > 1:
            module = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        groups = parameter_groups(self.model, t.weight_decay, t.lr, self.model.embedder, t.vlm_lr_scale)
        optimizer = torch.optim.AdamW(groups, lr=t.lr, betas=(0.9, 0.95))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(t.warmup_steps, steps))
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        what = "everything" if trainable_vlm else "VLM frozen, action head"
        self.log(f"stage {stage}: {what} trained, steps {start}..{steps}")
        progress = _progress(range(start, steps), f"stage {stage}", self.dist.main)
        started, samples = time.perf_counter(), 0
        for step in progress:
            loss = self._step(module, optimizer, stage, step)
            scheduler.step()
            samples += t.batch_size
            self.losses.append((stage, step, loss))
            rate = samples / (time.perf_counter() - started)
            if self.dist.main:
                progress.set_postfix(
                    loss=f"{loss:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}", samples_s=f"{rate:.1f}"
                )
                if step % t.log_every == 0 or step == steps - 1:
                    self._metrics(
                        {
                            "stage": stage,
                            "step": step,
                            "loss": loss,
                            "lr": scheduler.get_last_lr()[0],
                            "samples_per_s": rate,
                        }
                    )
                if (step + 1) % t.save_every == 0 and step + 1 < steps:
                    self._save(
                        self.output / f"stage{stage}" / f"step_{step + 1}", stage, step + 1, optimizer, scheduler
                    )
        if self.dist.main:
            self._save(self.output / f"stage{stage}" / "final", stage, steps, optimizer, scheduler)
            self.log(f"stage {stage} done: {samples / max(time.perf_counter() - started, 1e-9):.1f} samples/s")

    def _step(self, module: nn.Module, optimizer: torch.optim.Optimizer, stage: int, step: int) -> float:
        t = self.config.train
        seed = t.seed
        module.train()
        torch.manual_seed(int(_rng(seed, stage, step, 7).integers(2**62)))  # dropout
        indices = _rng(seed, stage, step).integers(len(self.windows), size=t.batch_size)
        mine = np.arange(t.batch_size)[self.dist.rank :: self.dist.world]
        observations, actions = [], []
        for i in mine:
            obs, window = self.windows.sample(int(indices[i]), self.augment, _rng(seed, stage, step, int(i), 1))
            observations.append(obs)
            actions.append(window)
        states = np.stack([o.state for o in observations])
        inputs = self.processor.inputs(observations).to(self.device)
        target = self.processor.model_actions(np.stack(actions), states).to(self.device)
        noise, times = self.model.draw_noise_and_time(
            (t.batch_size, *target.shape[1:]), _torch_generator(seed, stage, step, 3)
        )
        draws = (noise[mine].to(self.device), times[mine].to(self.device))
        value = optimize_step(module, self.model, inputs, target, draws, optimizer, t.grad_clip)
        if self.dist.world > 1:
            import torch.distributed as dist

            dist.all_reduce(value)
            value /= self.dist.world
        return float(value)

    # -------------------------------------------------------------------------------- io
    def _metrics(self, row: dict[str, Any]) -> None:
        with open(self.output / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tensorboard is None:
            self._tensorboard = _tensorboard_writer(self.output)
            if not self._tensorboard:
                self.log("TensorBoard logging is off: tensorboard is not installed (pip install tensorboard); "
                         f"{self.output / 'metrics.jsonl'} has every figure")  # fmt: skip
        if self._tensorboard:
            global_step = row["step"] + (self.config.train.stage1_steps if row["stage"] == 2 else 0)
            for key in ("loss", "lr", "samples_per_s"):
                self._tensorboard.add_scalar(f"train/{key}", row[key], global_step)

    def _save(self, folder: Path, stage: int, step: int, optimizer: Any, scheduler: Any) -> None:
        save_checkpoint(
            folder,
            self.model,
            self.processor.normalizer,
            self.processor.tokenizer,
            {"stage": str(stage), "step": str(step)},
        )
        if optimizer is not None:
            torch.save(
                {
                    "stage": stage,
                    "step": step,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                },
                folder / STATE_FILE,
            )

    def _load_resume(self, folder: Path) -> dict[str, Any]:
        if not (folder / STATE_FILE).is_file():
            raise FileNotFoundError(f"{folder} has no {STATE_FILE}: not a resumable training checkpoint")
        model, normalizer, _, _ = load_checkpoint(folder)
        self.model.load_state_dict(model.state_dict())
        self.processor.normalizer = normalizer  # the run's own stats, not refitted ones
        state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
        self.log(f"resuming stage {state['stage']} at step {state['step']} from {folder}")
        return state


def _tensorboard_writer(folder: Path) -> Any:
    """A SummaryWriter when tensorboard is installed, else False (metrics.jsonl has everything)."""
    try:
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(folder / "tensorboard"))
    except ImportError:
        return False


def _progress(iterable: Any, description: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(iterable, desc=description, disable=not enabled, dynamic_ncols=True, unit="step")
