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


# ---------------------------------------------------------------- ROS 2 on loopback

import itertools  # noqa: E402
import sys  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
_domains = itertools.count(20 + os.getpid() % 40)


@pytest.fixture
def ros_domain() -> int:
    """A DDS domain of this test's own, so concurrent tests and runs do not hear each other."""
    return next(_domains) % 100 + 1


@pytest.fixture
def ros_env(ros_domain: int) -> dict[str, str]:
    """Environment for node processes started by a test: same domain, loopback only, offline."""
    return {
        **os.environ,
        "ROS_DOMAIN_ID": str(ros_domain),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture
def ros_context(ros_domain: int) -> Iterator[object]:
    """An rclpy context in this test process, on the test's domain."""
    import rclpy

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain)
    try:
        yield context
    finally:
        context.try_shutdown()


@pytest.fixture
def nodes_in(ros_context):
    """Create test-process nodes in the test's own context."""
    created = []

    def make(kind, *args, **kwargs):
        node = kind(*args, context=ros_context, **kwargs)
        created.append(node)
        return node

    yield make
    for node in created:
        node.destroy_node()
