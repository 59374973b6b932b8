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
    """The README's colcon command, as written, after `source .venv/bin/activate`, in a workspace
    holding a copy of the clone: it installs evo1_msgs and evo1_bringup."""
    venv = Path(PYTHON).parent.parent
    source = tmp_path / "src" / "evo1_ros"
    everywhere = shutil.ignore_patterns("__pycache__", "*.egg-info")
    top_level = {".venv", ".venv-lerobot", ".git", "build", "install", "log", "runs", "data"}  # local, not the clone

    def ignore(folder: str, names: list[str]) -> set[str]:
        return set(everywhere(folder, names)) | (top_level & set(names) if Path(folder) == REPO else set())

    shutil.copytree(REPO, source, ignore=ignore)
    env = {k: v for k, v in os.environ.items() if k not in ("AMENT_PREFIX_PATH", "CMAKE_PREFIX_PATH", "VIRTUAL_ENV")}
    workspace = tmp_path
    # Exactly the README's two lines, in a shell that has nothing set up but the venv's activate
    command = f"source {venv / 'bin' / 'activate'} && colcon build --base-paths src/evo1_ros src/evo1_ros/evo1_msgs"
    build = subprocess.run(["bash", "-c", command], cwd=workspace, env=env, capture_output=True, text=True, timeout=600)
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
