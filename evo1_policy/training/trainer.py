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
import os
import time
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
from ..model import Evo1Model
from ..normalize import Normalizer
from ..processor import Observation, Processor
from ..tokenizer import PromptTokenizer
from .config import NormalizationSection, TrainConfig
from .steps import (
    Distributed,
    enable_checkpointing,
    optimize_step,
    parameter_groups,
    rng,
    set_stage_trainable,
    torch_generator,
    warmup_cosine,
)

if TYPE_CHECKING:
    from ..data.rosbag import BagSpec

STATE_FILE = "training_state.pt"


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


def _taken_over(episode: Episode, step: int) -> bool:
    return episode.takeover is not None and bool(episode.takeover[step])


class Windows:
    """Training samples: (episode, step) -> images, state and instruction at the step, and the
    next `horizon` actions (padded with the last one at the episode's end)."""

    def __init__(self, episodes: list[Episode], horizon: int, takeovers: str = "ignore", takeover_weight: float = 4.0):
        self.episodes = episodes
        self.horizon = horizon
        self.index = [(e, t) for e, episode in enumerate(episodes) for t in range(episode.length)]
        self.every_step = list(self.index)  # the normalizer sees each step once, whatever is drawn
        if takeovers != "ignore":
            taken = [(e, t) for e, t in self.index if _taken_over(episodes[e], t)]
            if not taken:
                raise DatasetError(f"data.takeovers: {takeovers}, but no episode has a step an operator took over")
            # only: those steps alone; weight: each drawn takeover_weight times as often (in whole copies)
            self.index = taken if takeovers == "only" else self.index + taken * max(round(takeover_weight) - 1, 0)

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
        states = np.stack([self.episodes[e].states[t] for e, t in self.every_step])
        actions = np.stack([self.episodes[e].action_window(t, self.horizon) for e, t in self.every_step])
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
        self.windows = Windows(
            self.episodes, self.model.config.horizon, config.data.takeovers, config.data.takeover_weight
        )
        normalizer = self._normalizer(self.windows.fit_normalizer(config.normalization))
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
        self.init_normalizer: Normalizer | None = None
        if m.init_checkpoint:
            model, self.init_normalizer, tokenizer, report = load_checkpoint(m.init_checkpoint)
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

    def _normalizer(self, fitted: Normalizer) -> Normalizer:
        """The init checkpoint's statistics when fine-tuning (normalization.from_init_checkpoint),
        provided they name the same state and action dims; else the ones fitted to this data."""
        kept = self.init_normalizer
        if kept is None or not self.config.normalization.from_init_checkpoint:
            return fitted
        if (kept.state_names, kept.action_names) != (fitted.state_names, fitted.action_names):
            raise ValueError(
                f"the init checkpoint's statistics are for states {kept.state_names} and actions "
                f"{kept.action_names}, this data has {fitted.state_names} and {fitted.action_names}: "
                "set normalization.from_init_checkpoint=false to fit new ones"
            )
        self.log("normalization: the init checkpoint's statistics (normalization.from_init_checkpoint)")
        return kept

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
        torch.manual_seed(int(rng(seed, stage, step, 7).integers(2**62)))  # dropout
        indices = rng(seed, stage, step).integers(len(self.windows), size=t.batch_size)
        mine = np.arange(t.batch_size)[self.dist.rank :: self.dist.world]
        observations, actions = [], []
        for i in mine:
            obs, window = self.windows.sample(int(indices[i]), self.augment, rng(seed, stage, step, int(i), 1))
            observations.append(obs)
            actions.append(window)
        states = np.stack([o.state for o in observations])
        inputs = self.processor.inputs(observations).to(self.device)
        target = self.processor.model_actions(np.stack(actions), states).to(self.device)
        noise, times = self.model.draw_noise_and_time(
            (t.batch_size, *target.shape[1:]), torch_generator(seed, stage, step, 3)
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
