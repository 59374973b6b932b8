"""Meta-World with the reference's protocol: the observation the policy gets (camera, image chain,
state), the task table and order, the episode loop, demonstrations as a LeRobot dataset, and one
task end to end through `evo1 metaworld-eval` with a trained checkpoint. Real metaworld, real
MuJoCo rendering, the real model code."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from evo1_policy.chunking import ChunkExecutor
from evo1_policy.data.lerobot import read_lerobot
from evo1_policy.metaworld.protocol import (
    BY_NAME,
    GROUPS,
    MT10,
    SEED,
    TASKS,
    VALIDATION_SEED,
    observation_image,
    observation_state,
    select_tasks,
)
from evo1_policy.metaworld.record import RECORD_SEED, record
from evo1_policy.metaworld.rollout import import_metaworld, reference_executor, run_episode

gym = import_metaworld()  # headless GL first, then gymnasium with metaworld's environments registered
import metaworld  # noqa: E402
import mujoco  # noqa: E402


@pytest.fixture(scope="module")
def reach_env():
    env = gym.make("Meta-World/MT1", env_name="reach-v3", seed=0, render_mode="rgb_array", camera_name="corner2")
    yield env
    env.close()


def _reference_frame(rendered: np.ndarray) -> np.ndarray:
    """The reference client's chain, with the calls it makes: cv2.rotate 180, a centre crop that
    keeps 2/3 (rounded), cv2.resize to 448 x 448 bilinear."""
    rgb = cv2.rotate(rendered, cv2.ROTATE_180)
    h, w = rgb.shape[:2]
    nh, nw = round(h * 2 / 3), round(w * 2 / 3)
    rgb = rgb[(h - nh) // 2 : (h - nh) // 2 + nh, (w - nw) // 2 : (w - nw) // 2 + nw]
    return cv2.resize(rgb, (448, 448), interpolation=cv2.INTER_LINEAR)


def test_observation_is_the_reference_clients(reach_env) -> None:
    obs, _ = reach_env.reset(seed=0)
    unwrapped = reach_env.unwrapped
    camera = mujoco.mj_name2id(unwrapped.model, mujoco.mjtObj.mjOBJ_CAMERA, "corner2")
    assert unwrapped.mujoco_renderer.camera_id == camera >= 0
    rendered = reach_env.render()
    assert rendered.shape == (480, 480, 3) and rendered.dtype == np.uint8  # metaworld's default size, kept
    frame = observation_image(rendered)
    assert frame.shape == (448, 448, 3) and frame.dtype == np.uint8
    assert np.array_equal(frame, _reference_frame(rendered))
    # upright after the turn: the plain grey backdrop is at the top, the table and arm below
    spread = [frame[rows].reshape(-1, 3).std(axis=0).max() for rows in (slice(0, 40), slice(-40, None))]
    assert spread[0] < 2.0 < spread[1]
    state = observation_state(obs)
    assert state.shape == (8,) and state.dtype == np.float32
    np.testing.assert_allclose(state[:3], unwrapped.get_endeff_pos(), atol=1e-6)  # hand
    np.testing.assert_allclose(state[4:7], unwrapped._get_pos_objects()[:3], atol=1e-6)  # first object
    np.testing.assert_array_equal(state, np.asarray(obs, dtype=np.float32)[:8])


def test_task_table_is_metaworlds_mt50_in_the_reference_order() -> None:
    # metaworld.MT50(seed).train_classes is this table of metaworld's (building MT50 takes 30 s)
    assert [t.env_name for t in TASKS] == list(metaworld.env_dict.MT50_V3)
    assert [t.index for t in TASKS] == list(range(50))
    assert [sum(t.group == g for t in TASKS) for g in GROUPS] == [28, 11, 6, 5]
    order = [t.index for t in select_tasks("MT50")]
    assert order[:6] == [4, 5, 6, 7, 8, 11] and order[-5:] == [12, 28, 38, 39, 45]  # mt50_order.json
    assert {t.env_name for t in select_tasks("MT10")} == set(MT10) == set(metaworld.env_dict.MT10_V3)
    assert BY_NAME["door-v3"] is BY_NAME["door-open-v3"]  # the reference's labels work too
    with pytest.raises(ValueError, match="unknown Meta-World task"):
        select_tasks("reach-v3,no-such-task")


def test_episode_observes_every_fifteen_actions(reach_env) -> None:
    """The reference's client: observe, execute 15 actions of the 50, observe again, 400 steps."""
    seen: list[tuple[tuple[int, ...], tuple[int, ...], str]] = []

    def still(frame: np.ndarray, state: np.ndarray, prompt: str, _obs: np.ndarray) -> np.ndarray:
        seen.append((frame.shape, state.shape, prompt))
        return np.zeros((50, 4))

    result = run_episode(reach_env, BY_NAME["reach-v3"], 0, still, reference_executor(), seed=0)
    assert not result.success and result.steps == 400
    assert result.chunks == len(seen) == 27  # ceil(400 / 15)
    assert set(seen) == {((448, 448, 3), (8,), "Reach a goal position")}


def test_synchronous_executor_runs_each_prefix_as_predicted() -> None:
    executor = ChunkExecutor(15, merge="latest_only")
    asked, executed = [], []
    for tick in range(-1, 44):  # the tick of the last executed action
        if executor.prefix_done(tick):
            asked.append(tick)
            executor.merge(np.arange(50)[:, None] + 100 * len(asked), tick, tick)
        executed.append(float(executor.upcoming(tick, 1)[0, 0]))
    assert asked == [-1, 14, 29]
    assert executed == [100 + i for i in range(15)] + [200 + i for i in range(15)] + [300 + i for i in range(15)]


@pytest.mark.slow
def test_recorded_expert_demonstrations_are_a_trainable_lerobot_dataset(tmp_path) -> None:
    # the evaluation's seed here only to share this file's one build of the environments (~30 s);
    # recordings for training use their own, which no evaluation uses
    assert RECORD_SEED not in (SEED, VALIDATION_SEED)
    summary = record(tmp_path / "ds", "drawer-close-v3", episodes=2, seed=SEED, image_size=64, log=lambda *_: None)
    assert summary["per_task"] == {"drawer-close-v3": {"tried": 2, "kept": 2}}
    episodes = read_lerobot(tmp_path / "ds")
    assert len(episodes) == 2
    for episode in episodes:
        assert episode.instruction == "Push and close a drawer"
        assert episode.states.shape[1] == 8 and episode.actions.shape[1] == 4
        assert episode.images[0].shape[1:] == (64, 64, 3)
        assert episode.length >= 50  # run on past success to a full chunk
        assert np.abs(episode.actions).max() <= 1.0


@pytest.mark.slow
def test_metaworld_eval_runs_a_task_end_to_end(tmp_path, capsys) -> None:
    """`evo1 metaworld-eval` with the shipped MT10 policy on one task, with both bounds (in this
    process: it shares the file's one build of the environments)."""
    from evo1_bringup.cli import main

    out = tmp_path / "eval"
    command = ["metaworld-eval", "--checkpoint", "metaworld_mt10", "--split", "report", "--tasks", "drawer-close-v3"]
    assert main([*command, "--episodes", "3", "--bounds", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "drawer-close-v3" in printed and "average over tasks" in printed
    results = json.loads((out / "results.json").read_text())
    scores = results["scores"]
    assert scores["expert"]["per_task"]["drawer-close-v3"] == 1.0
    assert scores["random"]["per_task"]["drawer-close-v3"] == 0.0
    assert scores["policy"]["per_task"]["drawer-close-v3"] >= 2 / 3
    for episode in scores["policy"]["episodes"]:
        assert episode["chunks"] == -(-episode["steps"] // 15)  # one observation per 15 actions
    assert (out / "success.png").stat().st_size > 0 and (out / "strips" / "drawer-close-v3.png").stat().st_size > 0


@pytest.mark.slow
def test_reference_format_checkpoint_runs_unchanged(tmp_path) -> None:
    """A checkpoint in the reference's own `main` layout (DeepSpeed folder, its config.json and
    norm_stats.json; toy sizes) is scored with no option: the reference's 3 view slots, black
    missing views and time row are read from the files, and its Meta-World stats are 8 / 4 wide."""
    from test_reference import write_main

    from evo1_policy.metaworld.evaluate import evaluate

    folder = write_main(tmp_path)
    dims = {"observation.state": 8, "action": 4}
    stats = {key: {"min": [-1.0] * n, "max": [1.0] * n, "mean": [0.0] * n, "std": [0.5] * n} for key, n in dims.items()}
    (folder / "norm_stats.json").write_text(json.dumps({"metaworld": stats}))
    summary = evaluate(str(folder), tmp_path / "out", "reach-v3", episodes=1, steps=2, log=lambda *_: None)
    (episode,) = summary["scores"]["policy"]["episodes"]
    assert episode["steps"] == 400 or episode["success"]
    # the toy chunk is 4 actions and all are run: the policy itself was asked once per 4 steps
    # (its own timer counts the calls; the rollout's counter is a separate count)
    assert summary["timing"]["chunks"] == episode["chunks"] == -(-episode["steps"] // 4)
    assert (tmp_path / "out" / "strips" / "reach-v3.png").is_file()
    assert (tmp_path / "out" / "videos" / "reach-v3.mp4").stat().st_size > 0


def _placements(envs: list, actions: float) -> np.ndarray:
    """What each (task, episode) starts from after the protocol's reset: metaworld's full first
    observation (hand, objects) and the goal, for 2 episodes of every task, the episode between
    run for 20 steps of constant `actions` (controllers differ in what they do between resets)."""
    starts = []
    for env in envs:
        for episode in range(2):
            obs, _ = env.reset(seed=SEED + episode)
            starts.append(np.concatenate([obs, env.unwrapped._target_pos]))
            for _ in range(20):
                env.step(np.full(env.action_space.shape, actions, dtype=np.float32))
    return np.array(starts)


@pytest.mark.slow
def test_every_controller_sees_the_placements_of_a_fresh_build() -> None:
    """The policy, the experts and random actions share one build of the 50 environments, put back
    to its just-built state for each (building costs ~30 s): their episodes start from the same
    placements, which are those of a fresh build (the first use), not a continuation of them."""
    from evo1_policy.metaworld.rollout import mt50_envs

    with mt50_envs(SEED) as envs:
        fresh = _placements(envs, 0.5)
        continued = _placements(envs, 0.0)
    with mt50_envs(SEED) as envs:
        restored = _placements(envs, -0.5)
    assert len(fresh) == 100 and not np.array_equal(fresh, continued), "the instrument cannot tell"
    np.testing.assert_array_equal(restored, fresh)
