"""Launch file, arm configs, `evo1 bringup` (the launch file's twin) and `evo1 instruct`."""

from __future__ import annotations

import ast
import importlib
import json
import re
import subprocess
import time
from pathlib import Path

import pytest
from conftest import PYTHON, REPO
from ros_harness import Recorder, spin_for, start_node, stop_node

from evo1_bringup import launch_args
from evo1_bringup.arm_config import ArmConfig, parameter_schema
from evo1_bringup.cli import build_parser

LAUNCH = REPO / "launch" / "arm.launch.py"
EVO1 = str(Path(PYTHON).parent / "evo1")


def console_scripts() -> set[str]:
    setup = (REPO / "setup.py").read_text()
    return set(re.findall(r'"([\w-]+) = [\w.]+:main"', setup))


def test_launch_file_names_only_things_that_exist() -> None:
    tree = ast.parse(LAUNCH.read_text())
    imported = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("evo1_bringup"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"
                imported.append(alias.name)
        if isinstance(node, ast.ImportFrom) and node.module in ("launch", "launch.actions", "launch_ros.actions"):
            assert {a.name for a in node.names} <= {
                "LaunchDescription", "DeclareLaunchArgument", "OpaqueFunction", "Node",
            }  # fmt: skip
    for name in ("LAUNCH_ARGUMENTS", "POLICY_EXECUTABLE", "SIM_EXECUTABLE", "config_path", "NODE_NAME", "PACKAGE"):
        assert name in imported
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "Node"]
    assert len(calls) == 3
    executables = ("POLICY_EXECUTABLE", "SIM_EXECUTABLE", "EPISODES_EXECUTABLE")
    for call in calls:
        kwargs = {k.arg: k.value for k in call.keywords}
        assert ast.unparse(kwargs["package"]) == "PACKAGE"
        assert ast.unparse(kwargs["executable"]) in executables
    assert {getattr(launch_args, name) for name in executables} <= console_scripts()
    from evo1_bringup.paths import PACKAGE, checkpoint_path, config_path

    assert PACKAGE == "evo1_bringup" and "<name>evo1_bringup</name>" in (REPO / "package.xml").read_text()
    assert config_path(launch_args.DEFAULTS["arm_config"]).is_file()
    default_checkpoint = ArmConfig.from_yaml(config_path(launch_args.DEFAULTS["arm_config"])).model.checkpoint
    assert (checkpoint_path(default_checkpoint) / "model.safetensors").is_file(), "the default policy ships"
    assert 'glob("models/*")' in (REPO / "setup.py").read_text()
    assert "launch/*.py" in (REPO / "setup.py").read_text() and "config/*.yaml" in (REPO / "setup.py").read_text()


def test_bringup_has_the_launch_arguments_and_defaults() -> None:
    parser, _ = build_parser()
    bringup = parser._subparsers._group_actions[0].choices["bringup"]
    options = {a.dest: a.default for a in bringup._actions if a.dest != "help"}
    for arg in launch_args.LAUNCH_ARGUMENTS:
        assert options[arg.name] == arg.default


@pytest.mark.parametrize("name", ["sim_arm", "xarm6", "so100", "franka"])
def test_arm_configs_load_and_validate(name: str) -> None:
    config = ArmConfig.from_yaml(REPO / "config" / f"{name}.yaml")
    joints = {"sim_arm": 5, "xarm6": 6, "so100": 5, "franka": 7}[name]
    assert len(config.joints.names) == joints and config.gripper.name
    assert 1 <= len(config.cameras.names) <= 3


def test_bad_arm_config_names_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "evo1_policy_node:\n  ros__parameters:\n    joints:\n      names: [a, b]\n      lower_limits: [0.0]\n"
        "    control:\n      merge: fancy\n      rate_hz: 0.0\n"
    )
    with pytest.raises(ValueError) as error:
        ArmConfig.from_yaml(bad)
    message = str(error.value)
    assert "joints.lower_limits has 1 entries for 2 joints" in message
    assert "control.merge 'fancy' unknown" in message and "rate_hz = 0.0 outside" in message
    typo = tmp_path / "typo.yaml"
    typo.write_text("evo1_policy_node:\n  ros__parameters:\n    safety:\n      camera_timout: 1.0\n")
    with pytest.raises(ValueError, match=r"unknown parameter 'safety\.camera_timout'"):
        ArmConfig.from_yaml(typo)


def test_every_parameter_has_a_description() -> None:
    for name, _, meta in parameter_schema():
        assert meta["description"], name


@pytest.mark.ros
def test_evo1_bringup_runs_policy_and_sim(ros_env) -> None:
    result = subprocess.run(
        # an SROS2 enclave name passes through to rcl (without ROS_SECURITY_ENABLE it is not enforced)
        [EVO1, "bringup", "--duration", "12", "--instruction", "touch the red block", "--enclave", "/evo1/policy"],
        env=ros_env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    summary = json.loads(result.stdout.split("[evo1] summary: ")[-1])
    assert summary["chunks"] > 3 and summary["trajectories"] > 100
    assert summary["sim_trajectories_followed"] > 0.9 * summary["trajectories"]
    assert summary["rejected"] == {}


@pytest.mark.ros
@pytest.mark.slow
def test_main_command_runs_scored_episodes_and_saves_frames(ros_env, tmp_path) -> None:
    """What scripts/run.sh does on a fresh clone: the simulated arm and the shipped policy, episodes
    scored by the simulator, results printed, frames saved for a person to look at."""
    result = subprocess.run(
        [EVO1, "bringup", "--episodes", "2", "--videos", str(tmp_path / "videos"), "--duration", "90"],
        env=ros_env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "[sim] episode 1/2 seed 100000: 'touch the" in result.stdout
    assert "[sim] episode 2/2 seed 100001" in result.stdout
    summary = json.loads(result.stdout.split("[evo1] summary: ")[-1])
    assert summary["episodes"]["episodes"] == 2 and summary["rejected"] == {}
    assert len(list((tmp_path / "videos").glob("*.mp4"))) == 2 and list((tmp_path / "videos").glob("*.png"))


@pytest.mark.ros
def test_evo1_instruct_reaches_the_node(ros_context, ros_env, nodes_in) -> None:
    from ros_harness import SIM_YAML

    process = start_node(ros_env, model__preset="evo1-tiny")
    recorder = nodes_in(Recorder, ArmConfig.from_yaml(SIM_YAML))
    try:
        assert spin_for(ros_context, [recorder], 40.0, until=recorder.configured)
        sent = subprocess.run([EVO1, "instruct", "open the drawer"], env=ros_env, capture_output=True, text=True)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        heard = spin_for(
            ros_context, [recorder], 5.0, until=lambda: recorder.last_status().instruction == "open the drawer"
        )
        assert heard, "the node did not get the instruction"
        time.sleep(0.1)
    finally:
        stop_node(process)


def test_evo1_instruct_refuses_what_ros_would_cut() -> None:
    """ROS 2 strings end at a NUL: the node would silently get 'touch the red cube'."""
    from evo1_bringup.bringup import instruct

    with pytest.raises(ValueError, match="NUL character at 18"):
        instruct("touch the red cube\x00 and then the blue one")


def test_the_simulator_and_the_fuzzer_do_not_load_the_model() -> None:
    """Drivers and tools import the shared ROS plumbing (ros_io.py), not the policy node: a
    MuJoCo arm that loaded torch and transformers took seconds longer to start."""
    code = (
        "import sys, evo1_bringup.sim.arm, evo1_bringup.check.fuzz\n"
        "print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    )
    done = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr
