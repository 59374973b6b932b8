"""Datasets written by `evo1 bag2dataset`, opened by LeRobot itself (issue 14).

Bags -> `evo1 bag2dataset` -> LeRobot 0.4.4's LeRobotDatasetMetadata / LeRobotDataset, its
normaliser and `aggregate_datasets`, run in LeRobot's own venv (.venv-lerobot, made by
scripts/setup_lerobot.sh, which scripts/test.sh runs) by test/lerobot_check.py. Where that venv
could not be installed, the LeRobot test is skipped with the reason the set-up wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fixtures import LEROBOT_VENV, known_episode, lerobot_ready, run_lerobot_check, write_arm_config, write_bag

from evo1_bringup.cli import main
from evo1_policy.data.episode import DatasetError
from evo1_policy.data.lerobot import read_lerobot, write_lerobot


def require_lerobot() -> None:
    if lerobot_ready():
        return
    failed = LEROBOT_VENV / ".failed"
    reason = failed.read_text().strip() if failed.is_file() else "run scripts/setup_lerobot.sh (scripts/test.sh does)"
    pytest.skip(f"LeRobot 0.4.4 is not installed in .venv-lerobot: {reason}")


def bag2dataset(tmp_path: Path, name: str, episodes: list[int], instructions: list[str]) -> Path:
    bags = [
        str(write_bag(tmp_path / f"{name}_bag{i}", known_episode(i, instruction=text), "mcap"))
        for i, text in zip(episodes, instructions, strict=True)
    ]
    arm = write_arm_config(tmp_path / "arm.yaml")
    assert main(["bag2dataset", *bags, "--out", str(tmp_path / name), "--arm-config", str(arm)]) == 0
    return tmp_path / name


def test_lerobot_reads_normalises_and_aggregates_our_datasets(tmp_path: Path) -> None:
    require_lerobot()
    first = bag2dataset(tmp_path, "first", [0, 1], ["touch the red block", "touch the blue block"])
    second = bag2dataset(tmp_path, "second", [2], ["touch the green block"])
    seen = run_lerobot_check(str(first), str(second), str(tmp_path / "both"))
    # the instruction text, not a task number
    assert seen["tasks"] == ["touch the red block", "touch the blue block"]
    assert seen["fps"] == 10 and isinstance(seen["fps"], int)
    assert {"observation.state", "action", "observation.images.front"} <= set(seen["stats_keys"])
    assert seen["image_mean_shape"] == [3, 1, 1]
    states = np.concatenate([known_episode(i).states for i in (0, 1)])
    np.testing.assert_allclose(seen["state_min"], states.min(0), atol=1e-6)
    np.testing.assert_allclose(seen["state_max"], states.max(0), atol=1e-6)
    low, high = np.asarray(seen["state_min"]), np.asarray(seen["state_max"])
    expected = 2 * (np.asarray(seen["state"]) - low) / (high - low) - 1  # LeRobot's MIN_MAX, with our stats
    np.testing.assert_allclose(seen["normalized_state"], expected, atol=1e-5)
    assert seen["aggregated"]["episodes"] == 3 and seen["aggregated"]["frames"] == 180
    assert set(seen["aggregated"]["tasks"]) == {"touch the red block", "touch the blue block", "touch the green block"}


def test_an_existing_dataset_is_not_replaced_without_overwrite(tmp_path: Path) -> None:
    root = write_lerobot(tmp_path / "ds", [known_episode(0)])
    with pytest.raises(DatasetError, match=r"exists and is not empty.*--overwrite"):
        write_lerobot(root, [known_episode(1)])
    write_lerobot(root, [known_episode(1, instruction="touch the blue block")], overwrite=True)
    assert [e.instruction for e in read_lerobot(root)] == ["touch the blue block"]


def test_episodes_with_other_image_sizes_are_an_error_not_stretched(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"camera 'front' frames are 48x48, the first episode's 32x32"):
        write_lerobot(tmp_path / "ds", [known_episode(0), known_episode(1, size=48)])


@pytest.mark.parametrize("version", ["v2.1", "v3.0"])
def test_stats_are_written_for_both_versions(tmp_path: Path, version: str) -> None:
    root = write_lerobot(tmp_path / version, [known_episode(0), known_episode(1)], version)
    stats = json.loads((root / "meta" / "stats.json").read_text())
    assert stats["observation.state"]["count"] == [120]
    assert np.asarray(stats["observation.images.front"]["mean"]).shape == (3, 1, 1)
    if version == "v2.1":
        lines = (root / "meta" / "episodes_stats.jsonl").read_text().splitlines()
        assert [json.loads(line)["episode_index"] for line in lines] == [0, 1]
    info = json.loads((root / "meta" / "info.json").read_text())
    assert info["fps"] == 10 and info["features"]["observation.images.front"]["info"]["video.height"] == 32


def test_demonstrations_without_commands_need_action_source_next_state(tmp_path: Path, capsys) -> None:
    """A plain demonstration bag (no command topic messages): the default says what to do, and
    --action-source next-state takes the next joint state as the action."""
    episode = known_episode(0)
    bag = str(write_bag(tmp_path / "demo", episode, "mcap", commands=False))
    arm = write_arm_config(tmp_path / "arm.yaml")
    assert main(["bag2dataset", bag, "--out", str(tmp_path / "a"), "--arm-config", str(arm)]) == 1
    assert "--action-source next-state" in capsys.readouterr().err
    args = ["bag2dataset", bag, "--out", str(tmp_path / "b"), "--arm-config", str(arm), "--action-source", "next-state"]
    assert main(args) == 0
    read = read_lerobot(tmp_path / "b")[0]
    np.testing.assert_allclose(read.actions[:-1], read.states[1:], atol=1e-6)  # the next state
    np.testing.assert_allclose(read.states, episode.states[: read.length], atol=1e-6)
