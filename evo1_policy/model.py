"""Evo-1: backbone + action head, the flow-matching loss and the Euler sampler.

Everything here works in the model's normalised space ([-1, 1], padded to 24 dims); the
processor (processor.py) converts from and to robot units.

Flow matching (reference conventions): t = 0 is noise, t = 1 is data;
x_t = (1 - t) * noise + t * action, target velocity = action - noise; noise ~ U[-1, 1]
times the action mask; t ~ Beta(2, 2) clamped to [0.02, 0.98]. Sampling integrates
dx/dt = v(x_t, t) with Euler steps from t = 0 to 1.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from .action_head import ActionHead, KeyValues
from .backbone import Backbone
from .config import Evo1Config

# (noisy actions, time row, keys/values) -> velocity: ActionHead.velocity_at or a compiled copy
VelocityFn = Callable[[torch.Tensor, torch.Tensor, KeyValues], torch.Tensor]


@dataclass
class ModelInputs:
    """One batch, already preprocessed (see processor.py)."""

    pixel_values: torch.Tensor  # (B, V, 3, S, S) float, ImageNet-normalised
    view_mask: torch.Tensor  # (B, V) bool, False = missing view
    input_ids: torch.Tensor  # (B, L) long
    text_mask: torch.Tensor  # (B, L) bool, False = padding
    state: torch.Tensor  # (B, max_state_dim) normalised, zero-padded
    action_mask: torch.Tensor  # (B, max_action_dim) bool, True = a real action dim
    # (B, V * tokens_per_view) where the image placeholders are; None: the backbone finds them
    image_positions: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> ModelInputs:
        return ModelInputs(**{k: None if v is None else v.to(device) for k, v in self.__dict__.items()})


@dataclass
class Guidance:
    """Real-time chunking: steer the new chunk toward actions already committed.

    target: (B, horizon, max_action_dim) normalised actions of the previous chunk, aligned with
    the new chunk's steps; weights: (B, horizon) in [0, 1] (1 = must match, 0 = free);
    max_weight caps the guidance strength (beta in Black et al. 2025).
    """

    target: torch.Tensor
    weights: torch.Tensor
    max_weight: float = 10.0


@contextlib.contextmanager
def building_in(dtype: torch.dtype | None) -> Iterator[None]:
    """Create parameters directly in `dtype` (a bf16 model never exists in fp32 first)."""
    previous = torch.get_default_dtype()
    if dtype is not None:
        torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


class Evo1Model(nn.Module):
    def __init__(self, config: Evo1Config):
        super().__init__()
        config.validate()
        self.config = config
        self.embedder = Backbone(config)
        self.action_head = ActionHead(config)

    @property
    def dtype(self) -> torch.dtype:
        return self.action_head.seq_pool_proj.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.action_head.seq_pool_proj.weight.device

    def vlm_parameters(self) -> list[nn.Parameter]:
        return list(self.embedder.parameters())

    def encode_prefix(self, inputs: ModelInputs) -> KeyValues:
        """Run the VLM once and project the memory for every head block (reused by all steps)."""
        vlm_trainable = any(p.requires_grad for p in self.embedder.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and vlm_trainable):
            hidden, attention = self.embedder(
                inputs.pixel_values, inputs.view_mask, inputs.input_ids, inputs.text_mask, inputs.image_positions
            )
        head_mask = None if self.config.head_attends_padding else attention
        return self.action_head.memory_keys_values(hidden, head_mask, inputs.state)

    def draw_noise_and_time(
        self, shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Flow-matching noise U[-1, 1] of `shape` (B, horizon, dims) and times t (B,) from the recipe's Beta."""
        noise = torch.rand(shape, generator=generator, device=device) * 2 - 1
        t = sample_beta(*self.config.time_beta, shape[0], generator, device).clamp(*self.config.time_clamp)
        return noise, t

    def compute_loss(
        self,
        inputs: ModelInputs,
        actions: torch.Tensor,
        generator: torch.Generator | None = None,
        noise_and_time: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Masked flow-matching MSE, rescaled by numel / sum(mask); actions (B, horizon, max_action_dim).

        noise_and_time: given draws (distributed training slices one global draw per rank)."""
        mask = inputs.action_mask[:, None, :].expand_as(actions).to(actions.dtype)
        actions = actions * mask  # padded dims carry nothing into x_t, whatever the caller put there
        noise, t = noise_and_time or self.draw_noise_and_time(tuple(actions.shape), generator, actions.device)
        noise = noise.to(actions) * mask
        t = t.to(actions.device)
        noisy = (1 - t[:, None, None]) * noise + t[:, None, None] * actions
        target = actions - noise
        kv = self.encode_prefix(inputs)
        predicted = self.action_head.velocity(noisy, t, kv).float()
        squared = ((predicted - target.float()) * mask) ** 2
        return squared.mean() * (mask.numel() / (mask.sum() + 1e-8))

    def forward(
        self,
        inputs: ModelInputs,
        actions: torch.Tensor,
        noise_and_time: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The training loss (so DistributedDataParallel can wrap the model)."""
        return self.compute_loss(inputs, actions, noise_and_time=noise_and_time)

    @torch.no_grad()
    def sample_actions(
        self,
        inputs: ModelInputs,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        guidance: Guidance | None = None,
        kv: KeyValues | None = None,
        reuse_prefix: bool = True,
    ) -> torch.Tensor:
        """Sample a chunk (B, horizon, max_action_dim) in normalised space.

        The prefix (VLM + state token + per-block keys/values) is computed once, or passed in;
        reuse_prefix=False recomputes it at every step instead (same result, for comparison).
        """
        steps = steps or self.config.num_inference_steps
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        kv = kv if kv is not None or not reuse_prefix else self.encode_prefix(inputs)
        batch = inputs.action_mask.shape[0]
        shape = (batch, self.config.horizon, self.config.max_action_dim)
        mask = inputs.action_mask[:, None, :].expand(shape).to(torch.float32)
        x = (torch.rand(shape, generator=generator, device=self.device) * 2 - 1) * mask
        for i in range(steps):
            if not reuse_prefix:
                kv = self.encode_prefix(inputs)
            # float64, so that the time-table row is int(i / steps * scale) exactly as the reference
            # computes it on Python floats (float32 rounding moves some rows by one)
            t = torch.full((batch,), i / steps, dtype=torch.float64, device=self.device)
            scale = None if guidance is None else min(guidance.max_weight, guidance_cap(i / steps))
            row = self.action_head.time_embedding(t)
            x = self.denoise_step(x, mask, kv, row, t.float()[:, None, None], 1.0 / steps, guidance, scale)
        return x * mask

    def denoise_step(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        kv: KeyValues,
        time_row: torch.Tensor,
        tau: torch.Tensor,
        dt: float,
        guidance: Guidance | None = None,
        scale: float | torch.Tensor | None = None,
        velocity_at: VelocityFn | None = None,
    ) -> torch.Tensor:
        """One Euler step from x_t (B, horizon, dims, float32) at time tau (B, 1, 1) whose table row
        is time_row (B, width). The one rule for every sampler, eager or captured (static.py):
        nothing here reads a value back to the host, so a CUDA graph can hold it. velocity_at: the
        head's function, or a compiled copy of it."""
        velocity_at = velocity_at or self.action_head.velocity_at
        if guidance is None:
            velocity = velocity_at(x * mask, time_row, kv).float()
        else:
            velocity = self._guided_velocity(x * mask, time_row, tau, kv, guidance, mask, scale, velocity_at)
        return x + dt * velocity

    def _guided_velocity(
        self,
        x: torch.Tensor,
        time_row: torch.Tensor,
        tau: torch.Tensor,
        kv: KeyValues,
        guidance: Guidance,
        mask: torch.Tensor,
        scale: float | torch.Tensor | None,
        velocity_at: VelocityFn,
    ) -> torch.Tensor:
        """Pseudo-inverse guidance (Black et al. 2025, real-time chunking): v + c * J^T W (Y - x1_hat),
        with c = min(max_weight, guidance_cap(tau)) given as `scale`."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            velocity = velocity_at(x, time_row, kv).float()
            predicted_clean = x + (1 - tau) * velocity
            error = (guidance.target.to(x) - predicted_clean) * guidance.weights[:, :, None].to(x) * mask
            (correction,) = torch.autograd.grad(predicted_clean, x, grad_outputs=error.detach())
        return velocity.detach() + scale * correction


def guidance_cap(tau: float) -> float:
    """RTC's guidance weight at flow time tau before the max_weight cap: (1 - tau) / (tau * r^2),
    r^2 = (1 - tau)^2 / (tau^2 + (1 - tau)^2); unbounded at tau = 0."""
    if tau <= 0:
        return math.inf
    r2 = (1 - tau) ** 2 / (tau**2 + (1 - tau) ** 2)
    return (1 - tau) / (tau * r2)


def sample_beta(a: float, b: float, n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """n draws of Beta(a, b), reproducible with `generator`.

    torch's Beta takes no generator; for integer shapes (the recipe's Beta(2, 2)) Beta(a, b) is
    the a-th smallest of a + b - 1 uniforms, which a generator does seed.
    """
    if float(a).is_integer() and float(b).is_integer():
        uniforms = torch.rand((n, int(a + b - 1)), generator=generator, device=device)
        return uniforms.sort(dim=1).values[:, int(a) - 1]
    if generator is not None:
        raise ValueError(f"seeded Beta sampling needs integer shape parameters, got ({a}, {b})")
    return torch.distributions.Beta(float(a), float(b)).sample((n,)).to(device)
