"""Stage 0: vision-language pretraining of the backbone, as InternVL was pretrained before Evo-1.

Evo-1 starts from a VLM that already grounds words in pictures, and its two-stage recipe exists to
keep that grounding. No pretrained InternVL can be had offline, so this module pretrains the
preset's own backbone (the same InternVL code as evo1-0.77b) the way a VLM is pretrained: a
language-model head over the whole Qwen2 vocabulary answers questions about images.

- Prompt: the policy's own layout (the views, then "\\n" + question); the answer's tokens follow.
- Loss: cross-entropy at the positions that predict the answer's tokens, and logits are computed
  there only (a 151k-word head over every image token would cost more than the backbone).
- Saved as an InternVL `-hf` folder (config.json, model.safetensors with `lm_head.weight`), the
  format a released InternVL3 comes in, so `model.internvl_hf` starts Evo-1's stage 1 from it.

The questions come from elsewhere (evo1_bringup.sim.vqa renders them from the simulator); this
module knows images, questions and answers, nothing of robots.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ..backbone import Backbone, internvl_config
from ..checkpoint import (
    CONFIG_FILE,
    PRETRAINED_PRESET_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    load_safetensors_dir,
    map_internvl_hf_state_dict,
)
from ..config import PAD_ID, Evo1Config
from ..data.vqa import VQAItem, VQASet  # noqa: F401 - also this module's names for them
from ..devices import resolve_device
from ..images import normalize_image
from ..tokenizer import PromptTokenizer
from .config import PretrainSection

LM_HEAD_KEY = "lm_head.weight"


@dataclass
class VQABatch:
    pixel_values: torch.Tensor  # (B, V, 3, S, S)
    view_mask: torch.Tensor  # (B, V) bool
    input_ids: torch.Tensor  # (B, L): prompt + answer, right-padded
    text_mask: torch.Tensor  # (B, L) bool
    rows: torch.Tensor  # (K,) batch row (question) of each answer token
    positions: torch.Tensor  # (K,) the position whose output predicts it (the token before it)
    targets: torch.Tensor  # (K,) the answer token ids

    def to(self, device: torch.device) -> VQABatch:
        return VQABatch(**{k: v.to(device) for k, v in self.__dict__.items()})


class VisionLanguageModel(nn.Module):
    """The backbone plus a language-model head: InternVL as a chat model."""

    def __init__(self, config: Evo1Config):
        super().__init__()
        self.config = config
        self.backbone = Backbone(config)
        self.lm_head = nn.Linear(config.text.hidden_size, config.text.vocab_size, bias=False)

    def answer_logits(self, batch: VQABatch) -> torch.Tensor:
        """(K, vocab) logits at the answer-predicting positions only."""
        hidden, _ = self.backbone(batch.pixel_values, batch.view_mask, batch.input_ids, batch.text_mask)
        return self.lm_head(hidden[batch.rows, batch.positions])

    def loss(self, batch: VQABatch) -> torch.Tensor:
        return F.cross_entropy(self.answer_logits(batch).float(), batch.targets)


def make_batch(data: VQASet, indices: Sequence[int], tokenizer: PromptTokenizer, config: Evo1Config) -> VQABatch:
    views = data.images.shape[1]
    size = config.vision.image_size
    rows, pixels = [], np.zeros((len(indices), views, 3, size, size), dtype=np.float32)
    for b, i in enumerate(indices):
        item = data.items[i]
        prompt = tokenizer.prompt_ids(item.question, views, config.tokens_per_view, config.instruction_first)
        rows.append((prompt, tokenizer.answer_ids(item.answer)))
        for v in range(views):
            pixels[b, v] = normalize_image(data.images[item.scene, v], size)
    length = max(len(p) + len(a) for p, a in rows)
    ids = torch.full((len(rows), length), PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.bool)
    row_of, position, target = [], [], []
    for b, (prompt, answer) in enumerate(rows):
        sequence = prompt + answer
        ids[b, : len(sequence)] = torch.tensor(sequence)
        mask[b, : len(sequence)] = True
        for j, token in enumerate(answer):
            row_of.append(b)
            position.append(len(prompt) - 1 + j)
            target.append(token)
    return VQABatch(
        pixel_values=torch.from_numpy(pixels),
        view_mask=torch.ones((len(rows), views), dtype=torch.bool),
        input_ids=ids,
        text_mask=mask,
        rows=torch.tensor(row_of),
        positions=torch.tensor(position),
        targets=torch.tensor(target),
    )


@torch.no_grad()
def evaluate(
    model: VisionLanguageModel, data: VQASet, tokenizer: PromptTokenizer, batch_size: int = 64
) -> dict[str, float]:
    """Exact-match accuracy per question kind (and "all"): an answer counts when every one of its
    tokens is the head's top choice given the ones before it, which is what greedy decoding says."""
    was_training = model.training
    model.eval()
    device = model.lm_head.weight.device
    correct: dict[str, int] = {}
    total: dict[str, int] = {}
    for start in range(0, len(data.items), batch_size):
        indices = list(range(start, min(start + batch_size, len(data.items))))
        batch = make_batch(data, indices, tokenizer, model.config).to(device)
        hits = model.answer_logits(batch).argmax(-1) == batch.targets
        wrong_rows = set(batch.rows[~hits].tolist())
        for b, i in enumerate(indices):
            kind = data.items[i].kind
            total[kind] = total.get(kind, 0) + 1
            correct[kind] = correct.get(kind, 0) + (b not in wrong_rows)
    model.train(was_training)
    accuracy = {kind: correct[kind] / total[kind] for kind in sorted(total)}
    accuracy["all"] = sum(correct.values()) / max(1, sum(total.values()))
    return accuracy


def _sampler(data: VQASet, weights: dict[str, float], rng: np.random.Generator) -> Callable[[int], list[int]]:
    by_kind: dict[str, list[int]] = {}
    for i, item in enumerate(data.items):
        by_kind.setdefault(item.kind, []).append(i)
    kinds = sorted(by_kind)
    p = np.array([weights.get(k, 1.0) for k in kinds], dtype=np.float64)
    if (p < 0).any() or p.sum() <= 0:
        raise ValueError(f"kind_weights must be >= 0 with a positive sum, got {weights}")
    p /= p.sum()

    def draw(n: int) -> list[int]:
        chosen = rng.choice(len(kinds), size=n, p=p)
        return [by_kind[kinds[k]][int(rng.integers(len(by_kind[kinds[k]])))] for k in chosen]

    return draw


def _optimize(
    model: VisionLanguageModel, batch: VQABatch, optimizer: Any, scheduler: Any, grad_clip: float, step: int
) -> float:
    """One optimizer step on the answer tokens' cross-entropy; the loss (an error if it diverged)."""
    model.train()
    loss = model.loss(batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()
    value = loss.item()
    if not math.isfinite(value):
        raise RuntimeError(f"pretraining diverged at step {step} (loss {value})")
    return value


RESUME_DIR = "resume"  # under the run's output: the newest resumable state


class _Run:
    """Everything a stage-0 run needs to go on after an interruption exactly as if it had not
    stopped: the weights, the optimizer and schedule, the question sampler's and torch's random
    states (dropout), the step and the evaluation history. Written every save_every steps; loaded
    only into a run of the same settings."""

    def __init__(self, model: Any, optimizer: Any, scheduler: Any, rng: np.random.Generator, section: Any):
        self.model, self.optimizer, self.scheduler, self.rng = model, optimizer, scheduler, rng
        self.settings = json.loads(json.dumps(asdict(section)))
        self.step, self.seconds, self.history = 0, 0.0, []

    def save(self, folder: Path) -> None:
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        weights = {k: v.detach().contiguous().cpu() for k, v in self.model.state_dict().items()}
        save_file(weights, str(partial / WEIGHTS_FILE))
        torch.save(
            {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
             "torch_rng": torch.get_rng_state()},
            partial / "optimizer.pt",
        )  # fmt: skip
        state = {"step": self.step, "seconds": self.seconds, "history": self.history,
                 "sampler_rng": self.rng.bit_generator.state, "settings": self.settings}  # fmt: skip
        (partial / "state.json").write_text(json.dumps(state))
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)  # whole or not at all

    def load(self, folder: Path) -> bool:
        """False when there is nothing to resume; an error naming the folder when it is another run's."""
        if not (folder / "state.json").is_file():
            return False
        state = json.loads((folder / "state.json").read_text())
        if state["settings"] != self.settings:
            raise ValueError(
                f"{folder} is the resumable state of a run with other settings: delete it or change output"
            )
        self.model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
        saved = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng"])
        self.rng.bit_generator.state = state["sampler_rng"]
        self.step, self.seconds, self.history = state["step"], state["seconds"], state["history"]
        return True


def pretrain(
    config: Evo1Config,
    train: VQASet,
    test: VQASet,
    section: PretrainSection,
    output: str | Path,
    log: Callable[[str], None] = print,
    report_extras: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train a fresh VisionLanguageModel of `config` on `train`; evaluate on `test` every
    eval_every steps; save the -hf folder to output/final. Returns the final report."""
    from .steps import parameter_groups, warmup_cosine

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    device = resolve_device(section.device)
    torch.manual_seed(section.seed)
    tokenizer = PromptTokenizer.from_dir()
    model = VisionLanguageModel(config).to(device)
    optimizer = torch.optim.AdamW(
        parameter_groups(model, section.weight_decay, section.lr), lr=section.lr, betas=(0.9, 0.95)
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(section.warmup_steps, section.steps))
    rng = np.random.default_rng(section.seed)
    draw = _sampler(train, section.kind_weights, rng)
    log(f"pretraining {config.preset}: {len(train.images)} scenes, {len(train.items)} questions; "
        f"held out {len(test.images)} scenes, {len(test.items)} questions; on {device}")  # fmt: skip
    run = _Run(model, optimizer, scheduler, rng, section)
    resumed = run.load(output / RESUME_DIR)
    if resumed:
        log(f"resuming stage 0 after step {run.step} from {output / RESUME_DIR}")
    history = run.history
    started = time.perf_counter() - run.seconds
    metrics = open(output / "metrics.jsonl", "a" if resumed else "w")  # noqa: SIM115 - written through the run
    try:
        for step in range(run.step + 1, section.steps + 1):
            batch = make_batch(train, draw(section.batch_size), tokenizer, config).to(device)
            loss = _optimize(model, batch, optimizer, scheduler, section.grad_clip, step)
            if step % section.eval_every == 0 or step == section.steps:
                row = {"step": step, "loss": loss, "seconds": time.perf_counter() - started}
                row["held_out"] = evaluate(model, test, tokenizer)
                history.append(row)
                metrics.write(json.dumps(row) + "\n")
                metrics.flush()
                shown = ", ".join(f"{k} {v:.1%}" for k, v in row["held_out"].items())
                log(f"step {step} loss {loss:.3f} ({row['seconds']:.0f} s): held out {shown}")
            if step % section.save_every == 0 and step < section.steps:  # after its evaluation row
                run.step, run.seconds = step, time.perf_counter() - started
                run.save(output / RESUME_DIR)
    finally:
        metrics.close()
    report = {
        "preset": config.preset,
        "steps": section.steps,
        "seconds": time.perf_counter() - started,
        "train_scenes": len(train.images),
        "held_out_scenes": len(test.images),
        "held_out_accuracy": history[-1]["held_out"],
        "history": history,
        **(report_extras or {}),
    }
    save_vlm(output / "final", model, report)
    shutil.rmtree(output / RESUME_DIR, ignore_errors=True)  # finished: a rerun must not redo its last steps
    log(f"wrote {output / 'final'}")
    return report


def save_vlm(folder: str | Path, model: VisionLanguageModel, report: dict[str, Any] | None = None) -> None:
    """An InternVL `-hf` folder: config.json, model.safetensors (`model.*`, `lm_head.weight`), and
    evo1_config.json (the preset, so a loader knows the prompt order)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hf = internvl_config(model.config)
    hf.architectures = ["InternVLForConditionalGeneration"]
    hf.to_json_file(str(folder / CONFIG_FILE))
    model.config.save(folder / PRETRAINED_PRESET_FILE)
    state = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model.backbone.model.state_dict().items()}
    state[LM_HEAD_KEY] = model.lm_head.weight.detach().contiguous().cpu()
    save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": "internvl-hf", "trained_by": "evo1 pretrain-vlm"})
    if report is not None:
        (folder / "vqa_report.json").write_text(json.dumps(report, indent=2) + "\n")


def load_vlm(folder: str | Path) -> VisionLanguageModel:
    """A folder written by save_vlm (its evo1_config.json says the sizes and prompt order)."""
    folder = Path(folder)
    if not (folder / PRETRAINED_PRESET_FILE).is_file():
        raise CheckpointError(f"{folder} is not a pretrained VLM folder: {PRETRAINED_PRESET_FILE} is missing")
    config = Evo1Config.load(folder / PRETRAINED_PRESET_FILE)
    state = load_safetensors_dir(folder)
    if LM_HEAD_KEY not in state:
        raise CheckpointError(f"{folder}: the weights have no {LM_HEAD_KEY}")
    model = VisionLanguageModel(config)
    model.lm_head.weight.data.copy_(state[LM_HEAD_KEY])
    mapped, _ = map_internvl_hf_state_dict(state, config.text.num_layers)
    backbone = {k.removeprefix("embedder."): v for k, v in mapped.items()}
    missing, unexpected = model.backbone.load_state_dict(backbone, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{folder}: backbone weights do not match ({len(missing)} missing, {len(unexpected)} unexpected)"
        )
    return model
