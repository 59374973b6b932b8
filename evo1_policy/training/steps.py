"""The pieces of a training step that every loop here shares (the two-stage trainer, stage 0 and
bench-train): seeded draws, parameter groups, the schedule, the stage's trainable parameters,
activation checkpointing, the distributed set-up and one optimiser step."""

from __future__ import annotations

import math
import os
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..model import Evo1Model, ModelInputs


def rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng([abs(int(k)) for k in keys])


def torch_generator(*keys: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng(*keys).integers(2**62)))


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
