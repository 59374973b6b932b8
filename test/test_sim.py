"""The MuJoCo arm, its expert, the recording path and the shipped policy closing the loop over ROS 2."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from evo1_bringup.arm_config import ArmConfig
from evo1_bringup.paths import checkpoint_path, config_path
from evo1_bringup.sim.expert import ReachExpert
from evo1_bringup.sim.follower import TrajectoryFollower
from evo1_bringup.sim.scene import (
    CUBE_COLORS,
    CUBE_HALF,
    HOME,
    MIN_SEPARATION,
    PLACEMENT_HIGH,
    PLACEMENT_LOW,
    Scene,
    named_object,
    random_placement,
    start_pose,
)
from evo1_bringup.sim.seeds import EVAL_SEED_START

CONFIG = ArmConfig.from_yaml(config_path("sim_arm"))


def test_placements_are_seeded_separated_and_on_the_table() -> None:
    a, b = random_placement(7), random_placement(7)
    assert a.target == b.target and all(np.array_equal(a.cubes[c], b.cubes[c]) for c in CUBE_COLORS)
    targets, every = set(), []
    for seed in range(200):
        placement = random_placement(seed)
        points = np.stack(list(placement.cubes.values()))
        gaps = [np.linalg.norm(p - q) for i, p in enumerate(points) for q in points[i + 1 :]]
        assert min(gaps) >= MIN_SEPARATION
        targets.add(placement.target)
        every.append(points)
    every = np.concatenate(every)
    # every cube inside the placement area, and the area used: seeds spread the cubes over it
    assert (every >= PLACEMENT_LOW).all() and (every <= PLACEMENT_HIGH).all()
    span = PLACEMENT_HIGH - PLACEMENT_LOW
    assert (every.min(axis=0) < PLACEMENT_LOW + 0.1 * span).all()
    assert (every.max(axis=0) > PLACEMENT_HIGH - 0.1 * span).all()
    # and the area lies on the table top with a cube's half size to spare (the MuJoCo model's own table)
    table = Scene(["front"]).model.geom("table")
    centre, half = np.asarray(table.pos[:2]), np.asarray(table.size[:2])
    assert (centre - half <= PLACEMENT_LOW - CUBE_HALF).all()
    assert (centre + half >= PLACEMENT_HIGH + CUBE_HALF).all()
    assert targets == set(CUBE_COLORS)
    assert random_placement(3, "green").target == "green"
    with pytest.raises(ValueError, match="unknown target 'purple'"):
        random_placement(3, "purple")


def test_instructions_name_one_cube() -> None:
    assert named_object("touch the red cube") == "red"
    assert named_object("Touch the BLUE block, please") == "blue"
    assert named_object("touch the red or the blue cube") is None
    assert named_object("wave") is None


def test_scene_renders_the_arm_and_the_cubes() -> None:
    scene = Scene(["front", "side"], 96, 96)
    try:
        scene.place(random_placement(1))
        front, side = scene.render("front"), scene.render("side")
        assert front.shape == (96, 96, 3) and front.dtype == np.uint8
        assert not np.array_equal(front, side)
        before = front.copy()
        scene.pose(HOME + np.array([0.8, 0, 0, 0, 0, 0]))  # swing the base: the picture changes
        assert np.abs(scene.render("front").astype(int) - before).sum() > 0
        # Each cube's colour is in the picture (pure-ish red, green, blue pixels).
        image = before.astype(int)
        for channel in range(3):
            others = [c for c in range(3) if c != channel]
            dominant = (image[..., channel] > 100) & (image[..., channel] > image[..., others].max(-1) + 60)
            assert dominant.sum() >= 4, f"no pixels of cube colour channel {channel}"
    finally:
        scene.close()


def test_touch_is_detected_at_the_faces_only() -> None:
    scene = Scene([])
    placement = random_placement(2)
    scene.place(placement)
    target = placement.target
    assert scene.touched() is None  # home is above everything
    expert = ReachExpert(Scene([]), placement, HOME, 0.05)
    for _ in range(200):
        scene.pose(expert.next_positions())
        if scene.touched():
            break
    assert scene.touched() == target and scene.distance_to(target) <= 0.012


def test_expert_solves_every_placement_within_joint_speed_limits() -> None:
    scene, scratch = Scene([]), Scene([])
    max_step = np.asarray(CONFIG.joints.max_velocity) * 0.05
    for seed in range(EVAL_SEED_START, EVAL_SEED_START + 40):
        placement = random_placement(seed)
        scene.place(placement)
        start = start_pose(seed)
        scene.pose(start)
        assert scene.touched() is None and scene.tip[2] > 0.12, f"seed {seed}: starts too low"
        expert = ReachExpert(scratch, placement, start, 0.05)
        previous, touched = start, None
        for _ in range(80):
            q = expert.next_positions()
            assert (np.abs(q[:5] - previous[:5]) <= max_step + 1e-9).all(), f"seed {seed}: too fast"
            assert (q[:5] >= scene.lower).all() and (q[:5] <= scene.upper).all()
            scene.pose(q)
            previous = q
            if touched := scene.touched():
                break
        assert touched == placement.target, f"seed {seed}: touched {touched}, not {placement.target}"
        tip = scene.tip_axis
        assert tip[2] < -0.99, "the fingers point down when they touch"


def test_start_poses_vary_and_keep_the_placements() -> None:
    poses = np.stack([start_pose(seed) for seed in range(50)])
    assert np.ptp(poses[:, 0]) > 0.8, "the base yaw varies, so the state does not give the target away"
    assert np.array_equal(start_pose(4), start_pose(4)) and (poses[:, 5] == HOME[5]).all()


def test_follower_reset_drops_the_trajectory() -> None:
    follower = TrajectoryFollower(["a", "b"], [-1, -1], [1, 1], np.zeros(2))
    assert follower.command(["a", "b"], [(1.0, np.array([0.5, 0.5]), None)], now=0.0) == ""
    follower.reset(np.array([0.2, 2.0]))
    follower.step(0.5)
    assert np.allclose(follower.position, [0.2, 1.0])  # at the reset pose (clipped), not on the old path


@pytest.mark.slow
@pytest.mark.ros
def test_expert_demonstrations_are_recorded_over_ros_as_trainable_bags(tmp_path, ros_env, monkeypatch) -> None:
    """The expert drives the simulator (its own process) over ROS 2; the bags read back as episodes."""
    from evo1_bringup.sim.evaluate import sim_record
    from evo1_policy.data.rosbag import BagSpec, read_bag

    for key, value in ros_env.items():
        monkeypatch.setenv(key, value)
    bags = sim_record(str(tmp_path / "demos"), episodes=1, seed_start=5, every_target=True)
    assert [b.name for b in bags] == [f"episode_seed00005_{color}" for color in CUBE_COLORS]
    spec = BagSpec.from_arm_config(CONFIG, image_size=224)
    for color, bag in zip(CUBE_COLORS, bags, strict=True):
        episode = read_bag(bag, spec)
        seed, placement = 5, random_placement(5, color)
        assert episode.instruction == placement.instruction
        assert 15 <= episode.length <= 60 and episode.images[0].shape[1:] == (224, 224, 3)
        assert np.allclose(episode.states[0], start_pose(seed), atol=0.02), "episodes start at the seed's pose"
        scene = Scene([])
        scene.place(placement)
        scene.pose(episode.actions[-1])
        assert scene.distance_to(placement.target) < 0.03, "the last command ends at the named cube"
        scene.close()


@pytest.fixture(scope="module")
def shipped_policy_episodes(tmp_path_factory) -> dict:
    """Closed-loop episodes through ROS 2 with the shipped checkpoint: the simulator and the policy
    node in processes of their own (sim-eval), in a DDS domain of this module's own. Three told the
    task's cube, and the same three told another cube."""
    from evo1_bringup.sim.evaluate import sim_eval

    assert (checkpoint_path("sim_touch") / "model.safetensors").is_file()
    out = tmp_path_factory.mktemp("sim_eval")
    runs = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ROS_DOMAIN_ID", str(90 + os.getpid() % 9))
        patch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        for wrong in (False, True):
            folder = out / ("wrong" if wrong else "right")
            runs[wrong] = sim_eval("", 3, str(folder), EVAL_SEED_START + 500, wrong, videos=1, device="cpu")
    return {"summary": runs[False], "wrong": runs[True], "out": out / "right"}


@pytest.mark.slow
@pytest.mark.ros
def test_shipped_policy_closes_the_loop_and_reaches_a_cube(shipped_policy_episodes) -> None:
    summary, out = shipped_policy_episodes["summary"], shipped_policy_episodes["out"]
    assert json.loads((out / "sim_eval.json").read_text())["episodes"] == 3
    assert list((out / "videos").glob("*.mp4")) and list((out / "videos").glob("*.png"))
    scene = Scene([])
    start, end = [], []
    for outcome in summary["outcomes"]:
        scene.place(random_placement(outcome["seed"]))
        scene.pose(start_pose(outcome["seed"]))
        start.append(min(scene.distance_to(name) for name in CUBE_COLORS))
        end.append(outcome["nearest_distance"])
    scene.close()
    assert np.mean(end) < 0.5 * np.mean(start), f"the arm did not go to the cubes: {summary['outcomes']}"


@pytest.mark.slow
@pytest.mark.ros
def test_shipped_policy_touches_the_cube_it_is_told(shipped_policy_episodes) -> None:
    """Issue 12's bar, in miniature: on 50 unseen placements the shipped policy touched the named
    cube in 96 %, and told another cube it touched that one in 94 % and the task's in 2 %
    (docs/sim.md). Here six episodes (the episodes are not seeded end to end: timing and sampling
    noise vary), so the thresholds leave room for misses (a flake below 1 in 300 at these rates)."""
    right, wrong = shipped_policy_episodes["summary"], shipped_policy_episodes["wrong"]
    told = [o["touched"] == o["instructed"] for o in right["outcomes"] + wrong["outcomes"]]
    assert sum(told) >= 4, f"touched the cube it was told in {sum(told)} of 6: {right['outcomes'] + wrong['outcomes']}"
    assert all(o["instructed"] != o["target"] for o in wrong["outcomes"])  # really told another cube
    task_cube = sum(o["touched"] == o["target"] for o in wrong["outcomes"])
    assert task_cube <= 1, f"told another cube, it touched the task's cube in {task_cube} of 3"


@pytest.mark.slow
def test_shipped_policy_heads_for_the_cube_it_is_told() -> None:
    """The first-chunk probe (the policy and the arm's kinematics in this process, no timing
    involved), on placements it never saw, each cube asked in turn: the first chunk goes toward
    the cube the instruction names, not toward one of the others."""
    from evo1_bringup.sim.grounding import first_chunk_probe

    result = first_chunk_probe("sim_touch", scenes=10, seed_start=EVAL_SEED_START + 700)
    # Ignoring the words scores ~33 %; the shipped policy scores 70 % on these 10 placements and
    # 83 % on 30 others (docs/sim.md): the first chunk is a noisier measure than the closed loop.
    assert result["heads_to_named"] >= 0.5, result
    assert result["named_cube_gain_cm"] > result["other_cubes_gain_cm"] + 2.0, result
