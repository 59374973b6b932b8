"""Shared fixtures. Tests never touch the network: the hub is switched off before any import."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest

from evo1_policy.policy import Evo1Policy


@pytest.fixture(scope="session")
def tiny_policy() -> Evo1Policy:
    """A randomly initialised (seeded) tiny Evo-1 for a 7-joint arm, on CPU in fp32."""
    return Evo1Policy.from_preset("evo1-tiny", state_dim=7, action_dim=7, device="cpu", seed=0)


@pytest.fixture
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
