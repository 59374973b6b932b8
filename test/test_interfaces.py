"""evo1_msgs over real DDS between two processes, and the colcon build of both packages."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import PYTHON, REPO

PUBLISHER = r"""
import sys, time, rclpy
from evo1_msgs.msg import ActionChunk
rclpy.init()
node = rclpy.create_node("chunk_publisher")
pub = node.create_publisher(ActionChunk, "chunks", 10)
msg = ActionChunk(sequence=7, instruction="stack the cups", joint_names=["j1", "j2"], horizon=3, action_dim=2,
                  time_step=0.05, data=[0.5, -0.5, 1.0, -1.0, 1.5, -1.5], inference_latency=0.012, denoising_steps=10)
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    pub.publish(msg)
    rclpy.spin_once(node, timeout_sec=0.1)
"""


@pytest.mark.ros
def test_action_chunk_crosses_processes(ros_env: dict[str, str], ros_context: object) -> None:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from evo1_msgs.msg import ActionChunk

    publisher = subprocess.Popen([PYTHON, "-c", PUBLISHER], env=ros_env)
    received: list[ActionChunk] = []
    node = rclpy.create_node("chunk_listener", context=ros_context)
    node.create_subscription(ActionChunk, "chunks", received.append, 10)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    try:
        deadline = time.monotonic() + 20
        while not received and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
    finally:
        publisher.terminate()
        publisher.wait(timeout=10)
        node.destroy_node()
    assert received, "no ActionChunk arrived from the other process within 20 s"
    msg = received[0]
    assert msg.sequence == 7 and msg.instruction == "stack the cups"
    assert list(msg.joint_names) == ["j1", "j2"] and (msg.horizon, msg.action_dim) == (3, 2)
    assert list(msg.data) == [0.5, -0.5, 1.0, -1.0, 1.5, -1.5]


@pytest.mark.slow
def test_colcon_builds_both_packages(tmp_path: Path) -> None:
    """The documented colcon command, run from a clone, installs evo1_msgs and evo1_bringup."""
    venv = Path(PYTHON).parent.parent
    source = tmp_path / "src" / "evo1_ros"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(".venv", ".git", "build", "install", "log", "__pycache__", "*.egg-info"),
    )
    env = {**os.environ, "AMENT_PREFIX_PATH": str(venv), "CMAKE_PREFIX_PATH": str(venv)}
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    workspace = tmp_path / "ws"
    workspace.mkdir()
    build = subprocess.run(
        [str(venv / "bin" / "colcon"), "build", "--base-paths", str(source), str(source / "evo1_msgs"),
         "--cmake-args", f"-DPython3_EXECUTABLE={PYTHON}", "-DBUILD_TESTING=OFF"],
        cwd=workspace, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    assert "2 packages finished" in build.stdout, build.stdout[-2000:]
    install = workspace / "install"
    prefixes = [str(install / "evo1_bringup"), str(install / "evo1_msgs"), str(venv)]
    check = subprocess.run(
        [PYTHON, "-c", "from ament_index_python.packages import get_package_share_directory as g; "
         "print(g('evo1_bringup')); print(g('evo1_msgs'))"],
        env={**env, "AMENT_PREFIX_PATH": os.pathsep.join(prefixes)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    share = Path(check.stdout.splitlines()[0])
    assert (share / "launch" / "arm.launch.py").is_file()
    assert (share / "config").is_dir() and any((share / "config").glob("*.yaml"))
    assert (install / "evo1_bringup" / "lib" / "evo1_bringup" / "evo1_policy_node").is_file()
    assert list((install / "evo1_msgs").rglob("_action_chunk.py")), "generated Python message code missing"
