"""Real-time chunking's request to the sampler, as plain data: no torch here, so the chunk
executor (evo1_policy/chunking.py) and whatever else plans chunks stay light."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ChunkGuidance:
    """Actions already committed from the previous chunk, in robot units, aligned with the new
    chunk's first steps: actions (K, A) and weights (K,) in [0, 1] (1 = frozen)."""

    actions: np.ndarray
    weights: np.ndarray
    max_weight: float = 10.0
