"""Two-stage training on a small fixture written here: freezing, resuming, DDP, learning."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import PYTHON
from fixtures import known_episode

from evo1_policy.data.lerobot import write_lerobot
from evo1_policy.policy import Evo1Policy
from evo1_policy.training.trainer import TrainConfig, Trainer

QUIET = {"log": lambda *_: None}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("train_data")
    episodes = [
        known_episode(i, steps=40, instruction=("touch the red block", "push the blue block")[i % 2]) for i in range(2)
    ]
    return write_lerobot(tmp / "ds", episodes, "v3.0", lossless=True)


def _config(dataset: Path, output: Path, *overrides: str) -> TrainConfig:
    return TrainConfig.load(
        None,
        [f"data.lerobot=['{dataset}']", f"output={output}", "train.batch_size=4", "train.save_every=10",
         "train.log_every=1", "train.warmup_steps=5", "train.lr=1e-3", *overrides],
    )  # fmt: skip


def test_stage_one_leaves_the_vlm_bit_identical(dataset: Path, tmp_path: Path) -> None:
    trainer = Trainer(_config(dataset, tmp_path / "run", "train.stages=[1]", "train.stage1_steps=12"), **QUIET)
    vlm_before = {k: v.clone() for k, v in trainer.model.embedder.state_dict().items()}
    head_before = {k: v.clone() for k, v in trainer.model.action_head.state_dict().items()}
    final = trainer.run()
    trained = Evo1Policy.from_checkpoint(final, device="cpu").model
    for key, value in vlm_before.items():
        assert torch.equal(trained.embedder.state_dict()[key], value), key
    changed = [k for k, v in head_before.items() if not torch.equal(trained.action_head.state_dict()[k], v)]
    assert len(changed) > 10, "stage 1 did not train the action head"


def test_stage_two_trains_the_vlm_too(dataset: Path, tmp_path: Path) -> None:
    trainer = Trainer(_config(dataset, tmp_path / "run", "train.stages=[2]", "train.stage2_steps=3"), **QUIET)
    before = trainer.model.embedder.model.vision_tower.embeddings.cls_token.clone()
    trainer.run()
    assert not torch.equal(trainer.model.embedder.model.vision_tower.embeddings.cls_token, before)


def test_resumed_run_reproduces_the_uninterrupted_losses(dataset: Path, tmp_path: Path) -> None:
    whole = Trainer(_config(dataset, tmp_path / "whole", "train.stage1_steps=20", "train.stage2_steps=6"), **QUIET)
    whole.run()
    resumed = Trainer(_config(dataset, tmp_path / "resumed", "train.stage1_steps=20", "train.stage2_steps=6"), **QUIET)
    resumed.run(resume=str(tmp_path / "whole" / "stage1" / "step_10"))
    expected = [loss for stage, step, loss in whole.losses if (stage, step) >= (1, 10)]
    got = [loss for _, _, loss in resumed.losses]
    assert len(got) == len(expected) == 16
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    a = Evo1Policy.from_checkpoint(tmp_path / "whole" / "final", device="cpu").model.state_dict()
    b = Evo1Policy.from_checkpoint(tmp_path / "resumed" / "final", device="cpu").model.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(dataset: Path, tmp_path: Path) -> None:
    common = ["train.stages=[1,2]", "train.stage1_steps=6", "train.stage2_steps=3", "train.batch_size=4"]
    single = Trainer(_config(dataset, tmp_path / "single", *common), **QUIET)
    single.run()
    overrides = [f"data.lerobot=['{dataset}']", f"output={tmp_path / 'ddp'}", "train.save_every=10",
                 "train.log_every=1", "train.warmup_steps=5", "train.lr=1e-3", *common]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    torchrun = Path(PYTHON).parent / "torchrun"
    evo1 = Path(PYTHON).parent / "evo1"
    result = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node=2", str(evo1), "train", *overrides],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    ddp_losses = [r["loss"] for r in rows]
    single_losses = [loss for _, _, loss in single.losses]
    assert len(ddp_losses) == len(single_losses) == 9
    np.testing.assert_allclose(ddp_losses, single_losses, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_training_lowers_the_loss_5x_and_the_checkpoint_deploys(dataset: Path, tmp_path: Path) -> None:
    """Fresh noise every step: the loss falls quickly to about the noise variance (1/3, the actions
    learnt) and then, more slowly, far below it (measured: 5.5x by step 2000 of 4000, 23x at 4000)."""
    config = _config(dataset, tmp_path / "run", "train.stages=[1]", "train.stage1_steps=3000", "train.batch_size=8",
                     "train.save_every=100000", "train.log_every=100000", "train.augment=false")  # fmt: skip
    trainer = Trainer(config, **QUIET)
    final = trainer.run()
    losses = np.array([loss for _, _, loss in trainer.losses])
    first, last = losses[:10].mean(), losses[-50:].mean()
    assert last < first / 5, f"loss {first:.3f} -> {last:.3f}"
    policy = Evo1Policy.from_checkpoint(final, device="cpu")
    episode = known_episode(0, steps=40)
    chunk = policy.predict_chunk([episode.images[0][5]], episode.states[5], "touch the red block", seed=0)
    assert chunk.shape == (policy.config.horizon, 3) and np.isfinite(chunk).all()


def test_gradient_checkpointing_changes_memory_not_results(dataset: Path, tmp_path: Path) -> None:
    runs = []
    for flag in ("false", "true"):
        overrides = (
            "train.stages=[2]",
            "train.stage2_steps=3",
            f"train.gradient_checkpointing={flag}",
            "train.augment=false",
        )
        trainer = Trainer(_config(dataset, tmp_path / flag, *overrides), **QUIET)
        trainer.run()
        runs.append([loss for _, _, loss in trainer.losses])
    assert trainer.model.embedder.model.language_model.gradient_checkpointing
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-6)


def test_bag2dataset_and_train_from_bags(tmp_path: Path) -> None:
    """Bags recorded like a live run -> `evo1 bag2dataset` -> a LeRobot v3 dataset; and `evo1 train`
    straight from the bags with an arm config naming the topics."""
    from fixtures import write_arm_config, write_bag

    from evo1_bringup.cli import main
    from evo1_policy.data.lerobot import read_lerobot

    bags = [str(write_bag(tmp_path / f"demo_{i}", known_episode(i), "mcap")) for i in range(2)]
    arm = write_arm_config(tmp_path / "arm.yaml")
    assert main(["bag2dataset", *bags, "--out", str(tmp_path / "ds"), "--arm-config", str(arm)]) == 0
    episodes = read_lerobot(tmp_path / "ds")
    assert [e.length for e in episodes] == [60, 60] and episodes[1].instruction == "touch the red block"
    np.testing.assert_allclose(episodes[1].states, known_episode(1).states, atol=1e-6)
    overrides = [f"data.bags={bags}", f"data.arm_config={arm}", f"output={tmp_path / 'run'}", "train.stages=[1]",
                 "train.stage1_steps=3", "train.batch_size=2"]  # fmt: skip
    assert main(["train", *overrides]) == 0
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
