"""The integration module and the cross-modulated diffusion transformer of Evo-1.

The robot state becomes one token (MLP) appended to the VLM's hidden states; that sequence is
the key/value memory of every block. The 50 noisy action tokens are the queries; the blocks
are cross-attention only (no self-attention among actions). The flow-matching timestep is
added to the normalised stream before each feed-forward. The 50 output tokens are flattened,
pooled to one vector and decoded by an MLP into the velocity of the whole chunk.

Parameter names match the reference implementation (minus its `.linear` wrappers), so its
checkpoints map by rule (see checkpoint.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import Evo1Config


def sinusoidal_table(length: int, dim: int) -> torch.Tensor:
    """(1, length, dim) table: sin on even channels, cos on odd ones (Transformer positions)."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * -(math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)
    return table.unsqueeze(0)


class SinusoidalTable(nn.Module):
    def __init__(self, length: int, dim: int):
        super().__init__()
        self.register_buffer("pe", sinusoidal_table(length, dim))


class MLP(nn.Module):
    """Two linear layers with a ReLU between them."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


class ActionEncoder(nn.Module):
    """Per-step MLP over the noisy actions, with sinusoidal positions added after the first layer."""

    def __init__(self, action_dim: int, width: int, horizon: int):
        super().__init__()
        self.W1 = nn.Linear(action_dim, width)
        self.W2 = nn.Linear(width, width)
        self.W3 = nn.Linear(width, width)
        self.pos_encoding = SinusoidalTable(horizon, width)

    def forward(self, actions: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.W1(actions)) + self.pos_encoding.pe[:, : actions.shape[1]].to(actions.dtype)
        return self.W3(F.relu(self.W2(x)))


@dataclass
class KeyValues:
    """Per-block keys and values over the memory, computed once per chunk."""

    keys: list[torch.Tensor]  # each (B, heads, M, head_dim)
    values: list[torch.Tensor]
    mask: torch.Tensor | None  # (B, 1, 1, M) bool, True = attend; None = attend everything

    def repeat(self, times: int) -> KeyValues:
        """The same memory for `times` samples each (batched sampling of several noises)."""

        def rep(t: torch.Tensor) -> torch.Tensor:
            return t.repeat_interleave(times, dim=0)

        return KeyValues(
            [rep(k) for k in self.keys], [rep(v) for v in self.values], None if self.mask is None else rep(self.mask)
        )


class CrossAttention(nn.Module):
    """Multi-head attention from action queries to the memory. With equal widths the in-projection
    is fused and laid out like torch.nn.MultiheadAttention's (q | k | v rows), so reference weights
    load as they are; a narrower memory gets separate q/k/v weights (MultiheadAttention's kdim/vdim)."""

    def __init__(self, width: int, memory_width: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.fused = width == memory_width
        if self.fused:
            self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
            nn.init.xavier_uniform_(self.in_proj_weight)
        else:
            self.q_proj_weight = nn.Parameter(torch.empty(width, width))
            self.k_proj_weight = nn.Parameter(torch.empty(width, memory_width))
            self.v_proj_weight = nn.Parameter(torch.empty(width, memory_width))
            for weight in (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
                nn.init.xavier_uniform_(weight)
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.zeros_(self.out_proj.bias)

    def _weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.fused:
            return self.in_proj_weight.chunk(3)
        return self.q_proj_weight, self.k_proj_weight, self.v_proj_weight

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        return x.view(batch, length, self.num_heads, width // self.num_heads).transpose(1, 2)

    def project_memory(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, w_k, w_v = self._weights()
        _, b_k, b_v = self.in_proj_bias.chunk(3)
        return self._heads(F.linear(memory, w_k, b_k)), self._heads(F.linear(memory, w_v, b_v))

    def forward(
        self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        w_q = self._weights()[0]
        b_q = self.in_proj_bias.chunk(3)[0]
        q = self._heads(F.linear(queries, w_q, b_q))
        dropout = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, dropout_p=dropout)
        batch, _, length, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, -1))


class CrossBlock(nn.Module):
    def __init__(self, width: int, memory_width: int, num_heads: int, ffn_size: int, dropout: float):
        super().__init__()
        self.attn = CrossAttention(width, memory_width, num_heads, dropout)
        self.norm1 = nn.LayerNorm(width)
        self.norm2 = nn.LayerNorm(width)
        self.ff = nn.Sequential(nn.Linear(width, ffn_size), nn.GELU(), nn.Linear(ffn_size, width))

    def forward(
        self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None, time: torch.Tensor
    ) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), keys, values, mask)
        return x + self.ff(self.norm2(x) + time.unsqueeze(1))


class ActionHead(nn.Module):
    """State token + cross-attention flow-matching transformer, predicting a chunk's velocity."""

    def __init__(self, config: Evo1Config):
        super().__init__()
        head, width = config.head, config.width
        self.horizon = config.horizon
        self.action_dim = config.max_action_dim
        self.time_pos_enc = SinusoidalTable(head.time_table, width)
        self.time_index_scale = head.time_index_scale
        self.state_encoder = MLP(config.max_state_dim, head.state_hidden, config.memory_width)
        self.action_encoder = ActionEncoder(config.max_action_dim, width, config.horizon)
        self.transformer_blocks = nn.ModuleList(
            CrossBlock(width, config.memory_width, head.num_heads, head.ffn_size, head.dropout)
            for _ in range(head.num_layers)
        )
        self.norm_out = nn.LayerNorm(width)
        self.seq_pool_proj = nn.Linear(config.horizon * width, width)
        self.mlp_head = MLP(width, head.mlp_hidden, config.horizon * config.max_action_dim)
        self.checkpoint_blocks = False  # training: recompute each block in backward (train.enable_checkpointing)

    def memory_keys_values(
        self, prefix: torch.Tensor, prefix_mask: torch.Tensor | None, state: torch.Tensor
    ) -> KeyValues:
        """Append the state token to the VLM prefix and project it for every block, once per chunk.

        prefix: (B, L, width) VLM hidden states; prefix_mask: (B, L) bool, True where the head
        may attend (None: everywhere, as the reference does); state: (B, max_state_dim).
        """
        state_token = self.state_encoder(state.to(prefix.dtype)).unsqueeze(1)
        memory = torch.cat([prefix, state_token], dim=1)
        mask = None
        if prefix_mask is not None:
            ones = torch.ones(prefix_mask.shape[0], 1, dtype=torch.bool, device=prefix_mask.device)
            mask = torch.cat([prefix_mask.bool(), ones], dim=1)[:, None, None, :]
        keys, values = zip(*(block.attn.project_memory(memory) for block in self.transformer_blocks), strict=True)
        return KeyValues(list(keys), list(values), mask)

    def time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        """Row int(t * time_index_scale) of the sinusoidal table, per sample (t in [0, 1], shape (B,)).
        The product is taken in float64, as the reference takes it on Python floats."""
        rows = self.time_pos_enc.pe.shape[1]
        index = (t.double() * self.time_index_scale).long().clamp(0, rows - 1)
        return self.time_pos_enc.pe[0, index]

    def velocity(self, noisy_actions: torch.Tensor, t: torch.Tensor, kv: KeyValues) -> torch.Tensor:
        """Predicted flow velocity (B, horizon, action_dim) at noisy actions x_t and times t (B,)."""
        return self.velocity_at(noisy_actions, self.time_embedding(t), kv)

    def velocity_at(self, noisy_actions: torch.Tensor, time_embedding: torch.Tensor, kv: KeyValues) -> torch.Tensor:
        """The velocity given the time's table row (B, width) already looked up: the sampler's time
        grid is known before the loop starts, so a captured loop reads its rows from a buffer."""
        dtype = kv.keys[0].dtype
        x = self.action_encoder(noisy_actions.to(dtype))
        time = time_embedding.to(dtype)
        for block, keys, values in zip(self.transformer_blocks, kv.keys, kv.values, strict=True):
            if self.checkpoint_blocks and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, keys, values, kv.mask, time, use_reentrant=False)
            else:
                x = block(x, keys, values, kv.mask, time)
        pooled = self.seq_pool_proj(self.norm_out(x).flatten(1))
        return self.mlp_head(pooled).view(-1, self.horizon, self.action_dim)
