"""Questions about scenes for stage-0 pretraining, as plain data (no torch): the simulator's
question generator (evo1_bringup/sim/vqa.py) writes them, evo1_policy/training/vlm_pretrain.py trains on them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class VQAItem:
    scene: int  # index into VQASet.images
    question: str
    answer: str
    kind: str  # the question's family, for accuracy per kind


@dataclass
class VQASet:
    images: np.ndarray  # (N, views, H, W, 3) uint8 RGB
    items: list[VQAItem]

    def kinds(self) -> list[str]:
        return sorted({item.kind for item in self.items})
