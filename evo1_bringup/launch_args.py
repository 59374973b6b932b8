"""Arguments of arm.launch.py and `evo1 bringup`: one list, so both have the same defaults."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LaunchArgument:
    name: str
    default: str
    description: str


LAUNCH_ARGUMENTS = (
    LaunchArgument("arm_config", "sim_arm", "Arm config: a YAML path, or a name in the package's config/ folder"),
    LaunchArgument("checkpoint", "", "Checkpoint directory; empty: the one the arm config names"),
    LaunchArgument("device", "auto", "Torch device: auto, cpu, cuda, cuda:N"),
    LaunchArgument("compile", "", "Inference path: off, graphs (CUDA graphs), compile; empty: the arm config's"),
    LaunchArgument("dry_run", "false", "true: compute and publish chunks and status, but no trajectories"),
    LaunchArgument("namespace", "", "ROS namespace for every node (topics are relative, so they follow it)"),
    LaunchArgument("sim", "true", "true: also start the simulated arm (no hardware needed)"),
    LaunchArgument("episodes", "0", "with sim: run this many scored episodes of the sim's task and print the results"),
    LaunchArgument("enclave", "", "SROS 2 enclave of the policy node, e.g. /evo1/policy (docs/security.md)"),
)

DEFAULTS = {arg.name: arg.default for arg in LAUNCH_ARGUMENTS}

# Executables (console scripts installed into lib/evo1_bringup) the launch file starts.
POLICY_EXECUTABLE = "evo1_policy_node"
SIM_EXECUTABLE = "evo1_sim_arm"
EPISODES_EXECUTABLE = "evo1_sim_episodes"


def parse_bool(value: str) -> bool:
    lowered = str(value).strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"{value!r} is not a boolean (true/false)")


def policy_overrides(checkpoint: str, device: str, dry_run: str, compile: str = "") -> dict[str, object]:
    """Node parameters the launch arguments set on top of the arm config YAML."""
    overrides: dict[str, object] = {"model.device": device, "safety.dry_run": parse_bool(dry_run)}
    if checkpoint:
        overrides["model.checkpoint"] = checkpoint
    if compile:
        overrides["model.compile"] = compile
    return overrides
