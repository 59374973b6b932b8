"""Evo1Config: the one source of every model default, and the named presets.

Sizes follow the Evo-1 paper and reference implementation (InternVL3-1B truncated to 14
language layers, an 8-block cross-attention flow-matching head of width 896, chunks of
50 x 24). `evo1-tiny` runs the same code with toy sizes for tests and CPU demos.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Token ids InternVL3 uses for its image markers (Qwen2 vocabulary + InternVL additions).
IMG_START_ID = 151665
IMG_END_ID = 151666
IMG_CONTEXT_ID = 151667
PAD_ID = 151643  # <|endoftext|>
INTERNVL3_VOCAB = 151674

NORMALIZATION_MODES = ("bounds", "bounds_q99", "normal")
# Where a checkpoint's numeric conventions come from (docs/checkpoints.md): this suite's own, the
# reference implementation's two eras (branch `main`, which trained the November 2025 releases,
# and `evo1-flash`), or LeRobot's `evo1` port.
ERAS = ("evo1_ros", "main", "flash", "lerobot")
MISSING_VIEW_FILLS = ("grey", "black")
IMAGE_RESIZES = ("area", "bicubic")
# How chunks run (static.py): eager, CUDA graphs over static shapes, or torch.compile over them.
COMPILE_MODES = ("off", "graphs", "compile")


@dataclass
class VisionConfig:
    hidden_size: int = 1024
    num_layers: int = 24
    num_heads: int = 16
    intermediate_size: int = 4096
    patch_size: int = 14
    image_size: int = 448


@dataclass
class TextConfig:
    hidden_size: int = 896
    num_layers: int = 14  # of the 24 in InternVL3-1B; the rest are dropped
    num_heads: int = 14
    num_kv_heads: int = 2
    intermediate_size: int = 4864
    vocab_size: int = INTERNVL3_VOCAB
    rope_theta: float = 1_000_000.0
    max_position_embeddings: int = 32768
    # Word embeddings drawn with this std when the model is built (0: transformers' 0.02). Trained
    # from scratch, 0.02 leaves a word's vector ~15x shorter than an image token's, and attention
    # drowns it: the tiny model then never learned to tell "red" from "green" (docs/sim.md).
    embedding_init_std: float = 0.0


@dataclass
class HeadConfig:
    width: int = 0  # 0: the language model's hidden size (Evo-1: 896); keys/values are projected from it
    num_layers: int = 8
    num_heads: int = 8
    ffn_size: int = 3584
    mlp_hidden: int = 1024  # output MLP 896 -> 1024 -> horizon * action_dim
    state_hidden: int = 1024  # state MLP 24 -> 1024 -> 896
    dropout: float = 0.2
    time_table: int = 1000  # sinusoidal timestep table, indexed by int(t * time_index_scale)
    # Row of that table for time t: int(t * scale). The reference's `main` branch (the released
    # checkpoints) uses 1000 in training and sampling, `evo1-flash` and LeRobot 999.
    time_index_scale: int = 999


@dataclass
class Evo1Config:
    preset: str = "evo1-0.77b"
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    downsample_ratio: float = 0.5  # pixel unshuffle: 32x32 patches -> 16x16 = 256 tokens
    max_views: int = 3
    horizon: int = 50
    max_state_dim: int = 24
    max_action_dim: int = 24
    # Prompts are right-padded to this length when pad_to_max_length; otherwise to the
    # longest prompt of the batch (same result when the head masks padding, and faster).
    max_text_length: int = 1024
    pad_to_max_length: bool = False
    # The reference puts the images before the instruction, as InternVL's chat format does, and its
    # pretrained VLM grounds the words in them. A VLM trained from scratch learns that far faster
    # with the instruction first: in a causal LM, image tokens can then attend to it (docs/sim.md).
    instruction_first: bool = False
    # The reference attends the padded text and masked views in the action head; masking them
    # is correct, makes masked views have no effect, and differs numerically from the reference.
    head_attends_padding: bool = False
    num_inference_steps: int = 32
    # --- Conventions a checkpoint was trained and served with (docs/checkpoints.md). The defaults
    # are this suite's; loading a reference or LeRobot checkpoint sets them as that code runs.
    era: str = "evo1_ros"
    # The reference's language model runs flash-attention-2, which drops masked positions before
    # attending: there, padded and missing-view positions get a zero attention output in every
    # layer. SDPA lets them attend to the valid tokens instead. Only matters where the head attends
    # those positions (head_attends_padding).
    zero_masked_attention: bool = False
    # A missing view is fed as a grey image (zeros after normalisation) or, as the reference and
    # LeRobot do, a black one; either way its tokens are masked out of the language model.
    missing_view_fill: str = "grey"
    # The prompt always has max_views image slots (the reference), not one per configured camera.
    fixed_view_slots: bool = False
    # Resizing a frame to the model's size: "area" (OpenCV's area filter when shrinking, bicubic when
    # enlarging) or "bicubic" (Pillow's antialiased bicubic, what the reference trained with).
    image_resize: str = "area"
    # `evo1-flash` and LeRobot normalise pixels in bfloat16, `main` in float32.
    image_normalize_dtype: str = "float32"
    # Flow-matching training time distribution: Beta(a, b) clamped to [t_min, t_max].
    time_beta: tuple[float, float] = (2.0, 2.0)
    time_clamp: tuple[float, float] = (0.02, 0.98)

    @property
    def tokens_per_view(self) -> int:
        grid = self.vision.image_size // self.vision.patch_size
        return int(grid * grid * self.downsample_ratio**2)

    @property
    def width(self) -> int:
        """Width of the action head (its action tokens and pooled vector)."""
        return self.head.width or self.text.hidden_size

    @property
    def memory_width(self) -> int:
        """Width of what the head attends to: the VLM's hidden states and the state token."""
        return self.text.hidden_size

    def validate(self) -> None:
        v, t, h = self.vision, self.text, self.head
        problems = []
        if v.image_size % v.patch_size:
            problems.append(f"image_size {v.image_size} is not a multiple of patch_size {v.patch_size}")
        grid = v.image_size // v.patch_size
        if (grid * self.downsample_ratio) % 1:
            problems.append(f"patch grid {grid} cannot be pixel-unshuffled by {self.downsample_ratio}")
        if t.hidden_size % t.num_heads or t.num_heads % t.num_kv_heads:
            problems.append("text hidden_size must divide by num_heads, and num_heads by num_kv_heads")
        if (t.hidden_size // t.num_heads) % 2:
            problems.append("text head dimension must be even (rotary embeddings)")
        if self.width % h.num_heads:
            problems.append(f"head width {self.width} must divide by head num_heads {h.num_heads}")
        if not 1 <= self.max_views <= 3:
            problems.append(f"max_views must be 1..3, got {self.max_views}")
        if self.num_inference_steps < 1:
            problems.append("num_inference_steps must be >= 1")
        for name, value, allowed in (
            ("era", self.era, ERAS),
            ("missing_view_fill", self.missing_view_fill, MISSING_VIEW_FILLS),
            ("image_resize", self.image_resize, IMAGE_RESIZES),
            ("image_normalize_dtype", self.image_normalize_dtype, ("float32", "bfloat16")),
        ):
            if value not in allowed:
                problems.append(f"{name} {value!r} unknown; choose one of {list(allowed)}")
        if h.time_index_scale not in (h.time_table - 1, h.time_table):
            problems.append(f"head time_index_scale must be {h.time_table - 1} or {h.time_table}")
        if problems:
            raise ValueError("invalid Evo1Config: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evo1Config:
        from .settings import build

        config = build(cls, data, "Evo1Config field")
        config.validate()
        return config

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Evo1Config:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _tiny() -> Evo1Config:
    return Evo1Config(
        preset="evo1-tiny",
        vision=VisionConfig(
            hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, patch_size=14, image_size=224
        ),
        text=TextConfig(
            hidden_size=48, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128, embedding_init_std=0.3
        ),
        # The head pools a chunk into one width-sized vector: 128 carries 16 steps x 8 dims.
        head=HeadConfig(
            width=128, num_layers=2, num_heads=4, ffn_size=256, mlp_hidden=256, state_hidden=64, dropout=0.0
        ),
        horizon=16,
        num_inference_steps=10,
    )


def _sim() -> Evo1Config:
    """evo1-tiny for the simulated arm's shipped policy, trained on a CPU: 112 px views (16 tokens
    each; a 5 cm cube is still a patch), a wider language model, and images first as in the
    reference, so that the colour word of "touch the red cube" finds its cube in one attention hop
    (docs/sim.md)."""
    config = _tiny()
    config.preset = "evo1-sim"
    config.vision.image_size = 112
    # A language model twice as wide (4 heads of 24): at 48 wide (heads of 12) pretraining stalled
    # at 85 % on "where is the <colour> cube", at 96 it reached 98 % (docs/sim.md, stage 0).
    config.text.hidden_size = 96
    config.text.intermediate_size = 256
    return config


def _metaworld() -> Evo1Config:
    """evo1-sim for Meta-World on a CPU (docs/metaworld.md): the reference's 50-action chunks
    (15 are executed), so the head is wider (256: 50 steps x 4 action dims pooled into one
    vector) and the sampler takes 10 Euler steps."""
    config = _sim()
    config.preset = "evo1-metaworld"
    config.horizon = 50
    config.head.width = 256
    config.head.ffn_size = 512
    config.head.mlp_hidden = 512
    config.head.state_hidden = 128
    return config


PRESETS = {
    "evo1-0.77b": Evo1Config,
    "evo1-tiny": _tiny,
    "evo1-sim": _sim,
    "evo1-metaworld": _metaworld,
}


def preset(name: str) -> Evo1Config:
    try:
        config = PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
    config.validate()
    return config
