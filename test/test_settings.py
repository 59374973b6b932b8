"""The one config loader (evo1_policy/settings.py) behind Evo1Config, TrainConfig and ArmConfig."""

from __future__ import annotations

from pathlib import Path

import pytest

from evo1_bringup.arm_config import ArmConfig
from evo1_policy.config import Evo1Config, preset
from evo1_policy.training.trainer import TrainConfig


def test_the_three_configs_share_keys_types_and_errors(tmp_path: Path) -> None:
    yaml_file = tmp_path / "train.yaml"
    yaml_file.write_text("train:\n  lr: 1e-3\n  stages: [2]\ndata:\n  instructions: {a.mcap: touch the red cube}\n")
    config = TrainConfig.load(yaml_file, ["train.batch_size=4", "train.augment=false", "model.preset=evo1-tiny"])
    assert config.train.lr == 1e-3 and config.train.stages == [2] and config.train.batch_size == 4
    assert config.train.augment is False and config.data.instructions == {"a.mcap": "touch the red cube"}
    cleared = TrainConfig.load(None, ["model.internvl_hf=runs/vlm", "model.internvl_hf="])
    assert cleared.model.internvl_hf == "", "`key=` clears a text field (docs/sim.md uses it), not 'None'"
    with pytest.raises(ValueError, match=r"unknown training config key 'train\.lrr'"):
        TrainConfig.load(None, ["train.lrr=1"])
    with pytest.raises(ValueError, match=r"training config key train\.batch_size: 'many' is not a int"):
        TrainConfig.load(None, ["train.batch_size=many"])
    with pytest.raises(ValueError, match=r"training config key data\.bags: 'x\.mcap' is not a list"):
        TrainConfig.load(None, ["data.bags=x.mcap"])  # a string would be globbed letter by letter
    # Evo1Config: a checkpoint's config.json, nested sections and tuples
    data = preset("evo1-tiny").to_dict()
    data["time_beta"] = [1.5, 1.0]
    loaded = Evo1Config.from_dict(data)
    assert loaded.time_beta == (1.5, 1.0) and loaded.head.num_heads == 4
    with pytest.raises(ValueError, match=r"unknown Evo1Config field 'head\.num_head'"):
        Evo1Config.from_dict({"head": {"num_head": 3}})
    # ArmConfig: ROS parameter types are strict (a bool must be a bool), nested or dotted keys
    arm = ArmConfig.from_parameters({"control": {"rate_hz": 15}, "safety.joint_state_jump": 0.2})
    assert arm.control.rate_hz == 15.0 and arm.safety.joint_state_jump == 0.2
    with pytest.raises(ValueError, match=r"parameter safety\.dry_run: .yes. is not a bool"):
        ArmConfig.from_parameters({"safety.dry_run": "yes"})
