"""Open-loop replay evaluation: metrics checked by hand, both bag formats and LeRobot datasets, the report."""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures import known_episode, write_bag

from evo1_bringup.check.eval_bag import eval_bags
from evo1_policy.normalize import Normalizer
from evo1_policy.policy import Evo1Policy

ARM = """evo1_policy_node:
  ros__parameters:
    joints:
      names: [joint1, joint2]
      lower_limits: [-1.0, -1.0]
      upper_limits: [1.0, 1.0]
      max_velocity: [1.0, 1.0]
    gripper:
      name: joint3
      lower_limit: 0.0
      upper_limit: 8.0
    control:
      rate_hz: 10.0
      execute_steps: 5
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, object]:
    tmp = tmp_path_factory.mktemp("eval")
    truth = [known_episode(0, steps=40), known_episode(1, steps=40)]
    bags = [
        str(write_bag(tmp / "run_sqlite3", truth[0], "sqlite3")),
        str(write_bag(tmp / "run_mcap", truth[1], "mcap")),
    ]
    arm = tmp / "arm.yaml"
    arm.write_text(ARM)
    states = np.concatenate([e.states for e in truth])
    windows = np.stack([e.action_window(t, 16) for e in truth for t in range(e.length)])
    normalizer = Normalizer.fit(states, windows)
    checkpoints = []
    for seed in (1, 2):
        policy = Evo1Policy.from_preset("evo1-tiny", 3, 3, device="cpu", seed=seed, normalizer=normalizer)
        checkpoints.append(str(policy.save(tmp / f"ckpt{seed}")))
    return {"tmp": tmp, "truth": truth, "bags": bags, "arm": str(arm), "checkpoints": checkpoints}


def _by_hand(predictions, steps, truth_actions):
    errors, positions = [], []
    for t, chunk in zip(steps, predictions, strict=True):
        n = min(len(chunk), len(truth_actions) - t)
        errors.append(chunk[:n] - truth_actions[t : t + n])
        positions.append(np.arange(n))
    return np.concatenate(errors), np.concatenate(positions)


def test_metrics_match_a_hand_computation(setup) -> None:
    out = setup["tmp"] / "report"
    result = eval_bags(setup["bags"], setup["checkpoints"][0], setup["arm"], str(out), every=5)
    label = next(iter(result["aggregate"]))
    runs = result["results"][label]
    assert [len(r.predictions) for r in runs] == [8, 8]  # 40 steps, one chunk every 5
    errors, positions = [], []
    for run, truth in zip(runs, setup["truth"], strict=True):
        np.testing.assert_array_equal(run.recorded, truth.actions)  # the bag gave back the recorded commands
        e, p = _by_hand(run.predictions, run.inference_steps, truth.actions)
        errors.append(e)
        positions.append(p)
        per_bag = result["per_bag"][label][run.source]
        np.testing.assert_allclose(list(per_bag["mse"].values()), (e**2).mean(axis=0), rtol=1e-9)
    error, position = np.concatenate(errors), np.concatenate(positions)
    m = result["aggregate"][label]
    np.testing.assert_allclose(list(m["mse"].values()), (error**2).mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(list(m["mae"].values()), np.abs(error).mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(m["mae_by_step"], [np.abs(error[position == i]).mean() for i in range(16)], rtol=1e-9)
    assert m["compared_actions"] == len(error) and 0 < m["coverage"] < 1
    # Gripper (joint3): open/closed about the middle of its recorded range.
    recorded = np.concatenate([t.actions[:, 2] for t in setup["truth"]])
    middle = (recorded.min() + recorded.max()) / 2
    predicted_g = np.concatenate(
        [
            np.concatenate([c[: min(16, 40 - s), 2] for s, c in zip(r.inference_steps, r.predictions, strict=True)])
            for r in runs
        ]
    )
    recorded_g = np.concatenate(
        [
            np.concatenate([t.actions[s : s + min(16, 40 - s), 2] for s in r.inference_steps])
            for r, t in zip(runs, setup["truth"], strict=True)
        ]
    )
    assert m["gripper_agreement"]["joint3"] == pytest.approx(((predicted_g > middle) == (recorded_g > middle)).mean())
    jerk = np.mean([np.abs(np.diff(t.actions, 3, axis=0)).mean() * 10.0**3 for t in setup["truth"]])
    assert m["jerk_recorded"] == pytest.approx(jerk)
    predicted_jerk = np.mean([np.abs(np.diff(c, 3, axis=0)).mean() * 10.0**3 for r in runs for c in r.predictions])
    assert m["jerk_predicted"] == pytest.approx(predicted_jerk)
    latencies = [x for r in runs for x in r.latencies_ms]
    assert m["latency_ms"]["p50"] == pytest.approx(np.percentile(latencies, 50)) and min(latencies) > 0
    # The predictions are the policy's, seeded: predicting again gives the same chunk.
    policy = Evo1Policy.from_checkpoint(setup["checkpoints"][0], device="cpu")
    truth = setup["truth"][1]
    image = runs[1]
    again = policy.predict_chunk([truth.images[0][10]], truth.states[10], truth.instruction, seed=0)
    np.testing.assert_allclose(again, image.predictions[2], atol=1e-5)


def test_both_bag_formats_score_the_same(setup) -> None:
    truth = setup["truth"][0]
    mcap = write_bag(setup["tmp"] / "same_mcap", truth, "mcap")
    a = eval_bags([setup["bags"][0]], setup["checkpoints"][0], setup["arm"], str(setup["tmp"] / "a"), every=5)
    b = eval_bags([str(mcap)], setup["checkpoints"][0], setup["arm"], str(setup["tmp"] / "b"), every=5)
    ma, mb = next(iter(a["aggregate"].values())), next(iter(b["aggregate"].values()))
    assert ma["mse"] == mb["mse"] and ma["mae_by_step"] == mb["mae_by_step"]


def test_report_is_one_file_with_everything_to_judge_the_run(setup) -> None:
    out = setup["tmp"] / "compare"
    out.mkdir()
    (out / "episode_007.png").write_bytes(b"left by an earlier run")
    eval_bags(setup["bags"], setup["checkpoints"][0], setup["arm"], str(out), every=5, compare=setup["checkpoints"][1])
    report = json.loads((out / "report.json").read_text())
    assert report["checkpoints"] == ["ckpt1", "ckpt2"] and set(report["aggregate"]) == {"ckpt1", "ckpt2"}
    assert len(report["per_bag"]["ckpt2"]) == 2
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "report.json", "summary.txt"]  # no stale PNG
    page = (out / "index.html").read_text()
    assert 'src="data:image/png;base64,' in page and not re.search(r'src="(?!data:)', page)  # self-contained
    # what was run: the checkpoint paths, the arm config, the command, the suite version
    for text in (setup["checkpoints"][0], setup["checkpoints"][1], setup["arm"], "suite version", "command"):
        assert html.escape(text) in page, text
    # the per-joint table, and headings that say what they show
    for joint in ("joint1", "joint2", "joint3"):
        assert f"<td>{joint}</td>" in page
    assert "Error per joint" in page and html.escape('Episode 1: run_sqlite3, "touch the red block"') in page
    # what the model saw: three frames per episode; plots decode as PNGs, one 2-inch panel per joint
    assert page.count("data:image/jpeg;base64,") == 3 * 2
    pngs = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(pngs) == 1 + 2
    panels = cv2.imdecode(np.frombuffer(base64.b64decode(pngs[1]), np.uint8), cv2.IMREAD_COLOR)
    assert panels.shape[0] == 3 * 160
    assert "ckpt1: all" in (out / "summary.txt").read_text()


def test_lerobot_datasets_are_scored_and_broken_bags_skipped(setup, capsys) -> None:
    from evo1_policy.data.lerobot import write_lerobot

    dataset = write_lerobot(setup["tmp"] / "lerobot_ds", setup["truth"], lossless=True)
    broken = setup["tmp"] / "broken.mcap"
    broken.write_bytes(b"not a bag")
    out = setup["tmp"] / "mixed"
    result = eval_bags(
        [str(dataset), str(broken), setup["bags"][0]], setup["checkpoints"][0], setup["arm"], str(out), every=5
    )
    scored = list(next(iter(result["per_bag"].values())))
    assert scored == [f"{dataset}#episode0", f"{dataset}#episode1", setup["bags"][0]]
    report = json.loads((out / "report.json").read_text())
    assert len(report["skipped"]) == 1 and "broken.mcap" in report["skipped"][0]
    assert "skipped 1 recording" in capsys.readouterr().out
    # the dataset's first episode is the first bag's episode: the same score
    bag_only = eval_bags([setup["bags"][0]], setup["checkpoints"][0], setup["arm"], str(setup["tmp"] / "b0"), every=5)
    first = next(iter(bag_only["per_bag"].values()))[setup["bags"][0]]
    from_dataset = next(iter(result["per_bag"].values()))[f"{dataset}#episode0"]
    np.testing.assert_allclose(from_dataset["mae_mean"], first["mae_mean"], rtol=1e-3)


def test_mismatched_checkpoint_and_missing_topics_are_clear_errors(setup, capsys) -> None:
    from evo1_bringup.cli import main

    wrong = Evo1Policy.from_preset("evo1-tiny", 7, 7, device="cpu").save(setup["tmp"] / "seven")
    assert (
        main(
            [
                "eval-bag",
                setup["bags"][0],
                "--checkpoint",
                str(wrong),
                "--config",
                setup["arm"],
                "--out",
                str(setup["tmp"] / "x"),
            ]
        )
        == 1
    )
    assert "the checkpoint takes 7 state / 7 action dims, the recording has 3 / 3" in capsys.readouterr().err
    other = Path(setup["arm"]).with_name("other.yaml")
    other.write_text(
        ARM + "    cameras:\n      names: [wrist]\n      topics: [camera/wrist/image_raw]\n      compressed: [false]\n"
    )
    assert main(["eval-bag", setup["bags"][0], "--checkpoint", setup["checkpoints"][0], "--config", str(other)]) == 1
    err = capsys.readouterr().err
    assert "no camera 'wrist' topic" in err and "/camera/front/image_raw (sensor_msgs/msg/Image)" in err


@pytest.mark.ros
@pytest.mark.slow
def test_live_replay_scores_like_open_loop(setup, ros_env, tmp_path: Path) -> None:
    """The bag replayed over DDS to the node process (limits that do not bind, no guidance, seeded):
    its chunks score the same per-joint errors as the open-loop policy at the same steps."""
    import subprocess

    from conftest import PYTHON
    from ros_harness import start_node, stop_node
    from rosbags.highlevel import AnyReader

    from evo1_policy.evaluation.open_loop import EpisodeResult, metrics

    bag, checkpoint = setup["bags"][1], setup["checkpoints"][0]
    node = start_node(
        ros_env, Path(setup["arm"]), model__checkpoint=checkpoint, model__seed=0, control__merge="latest_only",
        safety__camera_timeout=2.0, safety__joint_state_timeout=2.0,
    )  # fmt: skip
    out = tmp_path / "live"
    try:
        run = subprocess.run(
            [str(Path(PYTHON).parent / "evo1"), "eval-bag", bag, "--live", "--config", setup["arm"], "--out", str(out)],
            env=ros_env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        node_output = stop_node(node)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:] + node_output[-2000:]
    report = json.loads((out / "report.json").read_text())
    live = report["per_bag"]["live node"][bag]
    steps = report["episodes"]["live node"][0]["inference_steps"]
    assert len(steps) >= 4, f"only {len(steps)} chunks scored"
    assert np.isfinite(report["latency"][bag]["observation_to_command_ms_p50"])
    assert report["latency"][bag]["chunks_scored"] == len(steps) and "chunks_not_scored" in report["latency"][bag]
    # Open loop at the very steps the node predicted at.
    policy = Evo1Policy.from_checkpoint(checkpoint, device="cpu")
    truth = setup["truth"][1]
    offline = EpisodeResult(bag, 0, truth.instruction, ["joint1", "joint2", "joint3"], truth.fps, truth.actions)
    for step in steps:
        offline.inference_steps.append(step)
        offline.predictions.append(
            policy.predict_chunk([truth.images[0][step]], truth.states[step], truth.instruction, seed=0)
        )
        offline.latencies_ms.append(0.0)
    expected = metrics([offline])
    np.testing.assert_allclose(list(live["mae"].values()), list(expected["mae"].values()), rtol=0.05, atol=1e-4)
    # The node's outputs were recorded into a new bag.
    recording = Path(report["latency"][bag]["recorded_outputs"])
    with AnyReader([recording]) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert counts["/evo1_policy_node/action_chunk"] >= len(steps) and counts["/arm_controller/joint_trajectory"] > 0
