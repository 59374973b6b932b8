"""Fine-tuning speed and memory (`evo1 bench-train`): samples/s and peak memory of training steps,
stage 1 (VLM frozen) and stage 2 (everything), per batch size, with and without activation
checkpointing. The steps are the trainer's own (train.optimize_step: bf16 autocast on CUDA,
AdamW, gradient clipping) on synthetic batches, so data loading is not part of the figure.

The question it answers: does stage 2 of evo1-0.77b fit a 24 GB card, and at what batch?
"""

from __future__ import annotations

import gc
import time
from typing import Any

import numpy as np
import torch

from ..config import preset
from ..devices import resolve_device
from ..model import Evo1Model
from ..normalize import Normalizer
from ..processor import Observation, Processor
from ..tokenizer import PromptTokenizer
from ..training.steps import enable_checkpointing, optimize_step, parameter_groups, set_stage_trainable
from .bench import _cpu_name, _peak_memory_mb

PROMPT = "pick up the red cube and place it in the bowl"
DIMS = 7


def _batch(processor: Processor, size: int, views: int, device: torch.device, seed: int):
    rng = np.random.default_rng(seed)
    image_size = processor.config.vision.image_size
    observations = [
        Observation(
            [rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8) for _ in range(views)],
            rng.uniform(-1, 1, DIMS),
            PROMPT,
        )
        for _ in range(size)
    ]
    states = np.stack([o.state for o in observations])
    actions = rng.uniform(-1, 1, (size, processor.config.horizon, DIMS))
    inputs = processor.inputs(observations).to(device)
    return inputs, processor.model_actions(actions, states).to(device)


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def bench_train(
    config_name: str = "evo1-0.77b",
    device: str = "auto",
    batches: tuple[int, ...] = (8, 16, 32),
    stages: tuple[int, ...] = (1, 2),
    checkpointing: tuple[bool, ...] = (False, True),
    steps: int = 5,
    warmup: int = 2,
    views: int = 1,
) -> dict[str, Any]:
    """One row per (checkpointing, stage, batch): samples/s over `steps` timed steps after `warmup`,
    peak memory, or "oom" where the batch did not fit."""
    dev = resolve_device(device)
    torch.manual_seed(0)
    config = preset(config_name)
    model = Evo1Model(config).to(dev)  # fp32 master weights; autocast computes in bf16 on CUDA
    processor = Processor(config, PromptTokenizer.from_dir(), Normalizer.identity(DIMS, DIMS))
    model.train()
    rows: list[dict[str, Any]] = []
    for checkpointed in checkpointing:
        enable_checkpointing(model, vlm=checkpointed, head=checkpointed)
        for stage in stages:
            set_stage_trainable(model, stage)
            for size in batches:
                rows.append(_row(model, processor, dev, stage, size, checkpointed, steps, warmup, views))
    return {
        "preset": config.preset,
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name(),
        "autocast": "bfloat16" if dev.type == "cuda" else "off (fp32)",
        "views": views,
        "torch": torch.__version__,
        "peak_memory_kind": "cuda_max_allocated" if dev.type == "cuda" else "process_max_rss",
        "rows": rows,
    }


def _row(
    model: Evo1Model,
    processor: Processor,
    dev: torch.device,
    stage: int,
    size: int,
    checkpointed: bool,
    steps: int,
    warmup: int,
    views: int,
) -> dict[str, Any]:
    row: dict[str, Any] = {"stage": stage, "batch": size, "checkpointing": checkpointed}
    _release(dev)
    optimizer = None
    try:
        optimizer = torch.optim.AdamW(parameter_groups(model, 1e-3, 1e-5), lr=1e-5, betas=(0.9, 0.95))
        inputs, target = _batch(processor, size, views, dev, seed=size)
        generator = torch.Generator().manual_seed(size)
        started = 0.0
        for step in range(warmup + steps):
            if step == warmup:
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                started = time.perf_counter()
            noise, times = model.draw_noise_and_time(tuple(target.shape), generator)
            optimize_step(model, model, inputs, target, (noise.to(dev), times.to(dev)), optimizer, 1.0)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        elapsed = time.perf_counter() - started
        row["samples_per_s"] = size * steps / elapsed
        row["step_ms"] = 1e3 * elapsed / steps
        row["peak_memory_mb"] = _peak_memory_mb(dev)
        if dev.type == "cuda":
            row["peak_reserved_mb"] = torch.cuda.max_memory_reserved(dev) / 2**20
    except torch.OutOfMemoryError:
        row["oom"] = True
    finally:
        del optimizer
        model.zero_grad(set_to_none=True)
    return row


def format_bench_train(result: dict[str, Any]) -> str:
    lines = [
        f"{result['preset']} training on {result['device']} ({result['device_name']}), autocast "
        f"{result['autocast']}, {result['views']} view(s); peak memory is {result['peak_memory_kind']}"
    ]
    for r in result["rows"]:
        what = f"  stage {r['stage']} batch {r['batch']:>3} checkpointing {'on ' if r['checkpointing'] else 'off'}"
        if r.get("oom"):
            lines.append(f"{what}: out of memory")
            continue
        reserved = f" (reserved {r['peak_reserved_mb']:.0f})" if "peak_reserved_mb" in r else ""
        lines.append(
            f"{what}: {r['samples_per_s']:7.1f} samples/s  {r['step_ms']:8.1f} ms/step  "
            f"peak {r['peak_memory_mb']:.0f} MiB{reserved}"
        )
    return "\n".join(lines)
