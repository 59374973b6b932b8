"""The seams between the suite's rooms: what may import what (docs/architecture rules in code).

The simulators, the checks and the orchestrating commands never load torch or transformers (a
process that only runs episodes or audits stays light); the model package never imports the ROS
package or rclpy at module level (it runs where ROS is not installed)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import evo1_policy

TORCH_FREE = [
    "evo1_bringup.sim.evaluate",
    "evo1_bringup.sim.episodes",
    "evo1_bringup.sim.arm",
    "evo1_bringup.sim.scene",
    "evo1_bringup.sim.expert",
    "evo1_bringup.sim.vqa",
    "evo1_bringup.sim.follower",
    "evo1_bringup.safety",
    "evo1_bringup.check.audit",
    "evo1_bringup.check.fuzz",
    "evo1_bringup.check.eval_live",
    "evo1_bringup.check.soak",
    "evo1_bringup.check.bench_record",
    "evo1_bringup.check.compare_bags",
    "evo1_bringup.record.run",
    "evo1_bringup.record.session",
    "evo1_bringup.record.recorder",
    "evo1_bringup.record.episode_bag",
    "evo1_bringup.process",
    "evo1_bringup.launch_args",
    "evo1_policy.chunking",
    "evo1_policy.guidance",
    "evo1_policy.stamps",
    "evo1_policy.data.vqa",
    "evo1_policy.metaworld.protocol",
    "evo1_policy.metaworld.rollout",
]


def _loaded_after_import(module: str, watched: list[str]) -> list[str]:
    code = f"import sys, {module}; print(' '.join(m for m in {watched!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


@pytest.mark.parametrize("module", TORCH_FREE)
def test_simulators_checks_and_orchestration_load_no_torch(module: str) -> None:
    assert _loaded_after_import(module, ["torch", "transformers"]) == []


def test_the_model_package_imports_no_ros() -> None:
    modules = [m.name for m in pkgutil.walk_packages(evo1_policy.__path__, "evo1_policy.")]
    assert len(modules) > 30
    code = "import importlib, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules)
    code += "print(' '.join(m for m in ('rclpy', 'evo1_bringup', 'evo1_msgs') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [], f"evo1_policy imports {done.stdout.split()} at module level"
