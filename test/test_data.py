"""Demonstration readers: identical samples from every format, and clear errors on bad data."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from fixtures import JOINTS, SPEC, known_episode, write_bag

from evo1_policy.data.episode import DatasetError, check_consistent
from evo1_policy.data.lerobot import read_lerobot, write_lerobot
from evo1_policy.data.rosbag import BagSpec, read_bag


def _same(a, b, state_tol: float = 0.0) -> None:
    assert a.instruction == b.instruction and a.length == b.length
    np.testing.assert_allclose(a.states, b.states, atol=state_tol, rtol=0)
    np.testing.assert_allclose(a.actions, b.actions, atol=state_tol, rtol=0)
    for x, y in zip(a.images, b.images, strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> dict[str, object]:
    """One recorded run in every format: bag (sqlite3, mcap), LeRobot (v2.1, v3.0) made from the bag."""
    tmp = tmp_path_factory.mktemp("formats")
    truth = known_episode(0)
    bags = {storage: write_bag(tmp / f"run_{storage}", truth, storage) for storage in ("sqlite3", "mcap")}
    from_bag = read_bag(bags["mcap"], SPEC)
    datasets = {v: write_lerobot(tmp / f"ds_{v}", [from_bag], v, lossless=True) for v in ("v2.1", "v3.0")}
    return {"truth": truth, "bags": bags, "datasets": datasets, "tmp": tmp}


def test_bag_formats_give_identical_episodes(recorded) -> None:
    sqlite = read_bag(recorded["bags"]["sqlite3"], SPEC)
    mcap = read_bag(recorded["bags"]["mcap"], SPEC)
    _same(sqlite, mcap)
    truth = recorded["truth"]
    assert sqlite.length == truth.length
    np.testing.assert_array_equal(sqlite.states, truth.states)  # the extra joint was ignored, order kept
    np.testing.assert_array_equal(sqlite.actions, truth.actions)  # the trajectory's first point, one step ahead
    np.testing.assert_array_equal(sqlite.images[0], truth.images[0])
    assert sqlite.instruction == "touch the red block" and sqlite.state_names == JOINTS


def test_lerobot_versions_and_bags_give_identical_samples(recorded) -> None:
    v2 = read_lerobot(recorded["datasets"]["v2.1"])[0]
    v3 = read_lerobot(recorded["datasets"]["v3.0"])[0]
    _same(v2, v3)
    bag = read_bag(recorded["bags"]["sqlite3"], SPEC)
    _same(bag, v3, state_tol=1e-6)  # LeRobot stores float32; pixels are exact (lossless video)
    from evo1_policy.training.trainer import Windows

    a, b = Windows([bag], 16), Windows([v3], 16)
    for i in (0, 17, len(a) - 1):
        (obs_a, act_a), (obs_b, act_b) = a.sample(i, None, None), b.sample(i, None, None)
        np.testing.assert_array_equal(obs_a.images[0], obs_b.images[0])
        np.testing.assert_allclose(act_a, act_b, atol=1e-6)


def test_shared_video_is_close_to_the_recording(recorded) -> None:
    """The default (lossy, LeRobot-compatible) video: same frames up to compression."""
    bag = read_bag(recorded["bags"]["mcap"], SPEC)
    root = write_lerobot(recorded["tmp"] / "lossy", [bag], "v3.0", lossless=False)
    lossy = read_lerobot(root)[0]
    assert lossy.length == bag.length
    error = np.abs(lossy.images[0].astype(int) - bag.images[0].astype(int)).mean()
    assert error < 12, f"mean pixel error {error:.1f}"


def test_missing_topic_lists_what_the_bag_has(recorded) -> None:
    spec = BagSpec(**{**SPEC.__dict__, "camera_topics": ["camera/wrist/image_raw"]})
    with pytest.raises(
        DatasetError,
        match=r"no camera 'front' topic 'camera/wrist/image_raw'; the bag has: "
        r".*/camera/front/image_raw \(sensor_msgs/msg/Image\)",
    ):
        read_bag(recorded["bags"]["sqlite3"], spec)


def test_episode_shorter_than_horizon_is_named(recorded) -> None:
    episode = read_bag(recorded["bags"]["sqlite3"], SPEC)
    with pytest.raises(DatasetError, match=r"run_sqlite3, episode 0: 60 steps, shorter than the action horizon 100"):
        episode.validate(100)


def test_nan_rows_and_mismatched_joints_are_named(recorded, tmp_path: Path) -> None:
    broken = known_episode(1)
    broken.states[7, 1] = np.nan
    with pytest.raises(DatasetError, match=r"episode 1, frame 7: state contains NaN"):
        broken.validate(16)
    other = known_episode(2)
    other.state_names = ["a", "b", "c"]
    with pytest.raises(DatasetError, match="state_names"):
        check_consistent([known_episode(0), other])
    spec = BagSpec(**{**SPEC.__dict__, "joint_names": ["joint1", "joint9"]})
    with pytest.raises(DatasetError, match=r"joint state #0: joint_states lacks joints \['joint9'\]"):
        read_bag(recorded["bags"]["mcap"], spec)


def test_corrupt_bag_and_unreadable_video_are_named(recorded, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.mcap"
    garbage.write_bytes(b"\x89MCAP0\r\n" + b"\x00" * 100)
    with pytest.raises(DatasetError, match=r"garbage\.mcap: cannot read the bag"):
        read_bag(garbage, SPEC)
    copy = tmp_path / "ds"
    shutil.copytree(recorded["datasets"]["v3.0"], copy)
    video = next(copy.glob("videos/*/chunk-000/file-000.mp4"))
    video.write_bytes(video.read_bytes()[: len(video.read_bytes()) // 3])
    with pytest.raises(DatasetError, match=r"episode 0.*(frame \d+: no frame|unreadable)"):
        read_lerobot(copy)


def test_skipping_bad_episodes_needs_the_flag_and_is_counted(recorded, tmp_path: Path) -> None:
    from evo1_policy.training.trainer import TrainConfig, load_episodes

    bad = tmp_path / "bad.mcap"
    bad.write_bytes(b"not a bag")
    good = recorded["datasets"]["v3.0"]
    config = TrainConfig.load(None, [f"data.lerobot=['{good}']", f"data.bags=['{bad}']"])
    with pytest.raises(ValueError, match=r"data\.bags needs the topics"):
        load_episodes(config, 16, 32, log=lambda *_: None)
    with pytest.raises(DatasetError, match=r"bad\.mcap"):
        load_episodes(config, 16, 32, log=lambda *_: None, bag_spec=SPEC)
    config.data.skip_bad_episodes = True
    lines: list[str] = []
    episodes = load_episodes(config, 16, 32, log=lines.append, bag_spec=SPEC)
    assert len(episodes) == 1
    assert any(line.startswith("skipped: ") and "bad.mcap" in line for line in lines)
    assert lines[-1].endswith("1 skipped")
