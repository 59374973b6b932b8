"""Load: three 640x480 cameras at 30 Hz for 60 s into the node process."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from rclpy.executors import SingleThreadedExecutor
from std_msgs.msg import String

from evo1_bringup.arm_config import ArmConfig
from evo1_bringup.bench_node import Feeder, config_with_cameras, node_rss_mb, spin, start_policy_process


@pytest.mark.slow
@pytest.mark.ros
def test_three_cameras_at_30_hz_for_60_s(ros_context, ros_env, tmp_path: Path) -> None:
    arm_yaml = config_with_cameras("sim_arm", 3, tmp_path, **{"model.checkpoint": "", "model.preset": "evo1-tiny"})
    config = ArmConfig.from_yaml(arm_yaml)
    process = start_policy_process(arm_yaml, ros_env)
    feeder = Feeder(config, (480, 640), context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(feeder)
    try:
        feeder.instruction_pub.publish(String(data="stack the cubes"))
        deadline = time.monotonic() + 60
        while not any(s.commanding for _, s in feeder.statuses) and time.monotonic() < deadline:
            spin(executor, 0.2)
        assert any(s.commanding for _, s in feeder.statuses), "the node never started commanding"
        spin(executor, 8.0)  # warm-up: allocator pools, first chunks
        rss_start, started = node_rss_mb(process.pid), time.monotonic()
        sent_start = feeder.images_sent
        spin(executor, 60.0)
        rss_end = node_rss_mb(process.pid)
        assert process.poll() is None, "the node died under load"
    finally:
        executor.shutdown()
        feeder.destroy_node()
        process.terminate()
        process.wait(timeout=10)
    images_per_s = (feeder.images_sent - sent_start) / 60.0
    assert images_per_s > 0.9 * 90, f"the feeder only managed {images_per_s:.0f} images/s"
    growth = (rss_end - rss_start) / rss_start
    assert growth < 0.05, f"node RSS grew {growth:.1%} ({rss_start:.0f} -> {rss_end:.0f} MiB)"
    stamps = np.array(
        [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for t, m in feeder.trajectories if t >= started]
    )
    periods = np.diff(stamps)
    nominal = 1.0 / config.control.rate_hz
    assert len(periods) > 0.9 * 60 / nominal, f"{len(periods)} updates in 60 s"
    p99 = np.percentile(periods, 99)
    assert abs(p99 - nominal) <= 0.2 * nominal, f"control period p99 {p99 * 1e3:.1f} ms vs nominal {nominal * 1e3:.0f}"
    window = [s for t, s in feeder.statuses if t >= started]
    assert max(s.planned_steps for s in window) <= 50, "the action queue grew past one chunk"
    assert max(max(s.camera_ages) for s in window) < 0.5, "camera frames are queuing up"
    assert all(s.commanding for s in window[1:]), [s.reason for s in window if not s.commanding]
