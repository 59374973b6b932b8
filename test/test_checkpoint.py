"""Checkpoints: exact round trip, foreign name mappings, refusing partial or unsafe loads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures import to_reference_names
from safetensors.torch import save_file

from evo1_policy.checkpoint import (
    CheckpointError,
    from_internvl_hf,
    load_checkpoint,
    load_reference_checkpoint,
    map_lerobot_state_dict,
    map_reference_state_dict,
)
from evo1_policy.config import preset
from evo1_policy.model import Evo1Model
from evo1_policy.normalize import Normalizer
from evo1_policy.policy import Evo1Policy


def _fitted_normalizer() -> Normalizer:
    rng = np.random.default_rng(0)
    return Normalizer.fit(rng.normal(size=(40, 7)), rng.normal(size=(40, 50, 7)), absolute_dims=[6])


def test_save_load_round_trip_is_exact(tmp_path: Path, rgb: np.ndarray) -> None:
    policy = Evo1Policy.from_preset("evo1-tiny", 7, 7, device="cpu", seed=1, normalizer=_fitted_normalizer())
    policy.save(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "config.json",
        "model.safetensors",
        "norm_stats.json",
        "tokenizer.json",
    ]
    loaded = Evo1Policy.from_checkpoint(tmp_path / "ckpt", device="cpu")
    for (name, a), (_, b) in zip(policy.model.state_dict().items(), loaded.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert loaded.config == policy.config
    assert loaded.processor.normalizer.to_dict() == policy.processor.normalizer.to_dict()
    state = np.linspace(-0.5, 0.5, 7)
    np.testing.assert_array_equal(
        policy.predict_chunk([rgb], state, "stack the cubes", seed=4),
        loaded.predict_chunk([rgb], state, "stack the cubes", seed=4),
    )


def test_missing_file_is_named(tmp_path: Path) -> None:
    policy = Evo1Policy.from_preset("evo1-tiny", 7, 7, device="cpu")
    folder = policy.save(tmp_path / "ckpt")
    (folder / "norm_stats.json").unlink()
    with pytest.raises(CheckpointError, match=r"lacks norm_stats\.json"):
        load_checkpoint(folder)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")


def test_config_weights_mismatch_is_refused(tmp_path: Path) -> None:
    folder = Evo1Policy.from_preset("evo1-tiny", 7, 7, device="cpu").save(tmp_path / "ckpt")
    config = json.loads((folder / "config.json").read_text())
    config["head"]["mlp_hidden"] = 96
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="do not match the config's shapes"):
        load_checkpoint(folder)


def test_partial_load_refused_unless_allowed(tmp_path: Path) -> None:
    folder = Evo1Policy.from_preset("evo1-tiny", 7, 7, device="cpu").save(tmp_path / "ckpt")
    from safetensors.torch import load_file

    weights = load_file(str(folder / "model.safetensors"))
    weights.pop("action_head.norm_out.weight")
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "evo1_ros/1"})
    with pytest.raises(CheckpointError, match="refusing a partial load"):
        load_checkpoint(folder)
    _, _, _, report = load_checkpoint(folder, allow_partial=True)
    assert report.missing == ["action_head.norm_out.weight"]


def test_reference_names_map_with_zero_missing_keys() -> None:
    model = Evo1Model(preset("evo1-tiny"))
    reference = to_reference_names(model.state_dict())
    reference["embedder.model.language_model.lm_head.weight"] = torch.zeros(4, 48)
    reference["embedder.model.language_model.model.layers.15.mlp.up_proj.weight"] = torch.zeros(4, 4)
    mapped, dropped = map_reference_state_dict(reference, text_layers=2)
    assert set(mapped) == set(model.state_dict())
    assert len(dropped) == 2
    fresh = Evo1Model(preset("evo1-tiny"))
    missing, unexpected = fresh.load_state_dict(mapped, strict=True)
    assert not missing and not unexpected
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_documented_reference_keys_land_where_they_belong() -> None:
    """Independent of the test helper's inverse mapping: key names as the reference's checkpoints
    spell them (shared/reference/evo1-model.md), each filled with its own marker value, must land
    on our parameter of the documented meaning; the fused qkv splits by rows as q | k | v."""
    config = preset("evo1-tiny")
    ours = Evo1Model(config).state_dict()
    reference = {key: torch.zeros_like(value) for key, value in to_reference_names(ours).items()}
    width = config.vision.hidden_size
    qkv = torch.arange(3 * width, dtype=torch.float32)[:, None].expand(-1, width).clone()
    documented = {  # reference name -> (its marker, our name)
        "embedder.model.vision_model.embeddings.class_embedding": (1.0, "embeddings.cls_token"),
        "embedder.model.vision_model.embeddings.position_embedding": (2.0, "embeddings.position_embeddings"),
        "embedder.model.vision_model.encoder.layers.1.ls1": (3.0, "encoder.layer.1.lambda_1"),
        "embedder.model.vision_model.encoder.layers.0.attn.proj.weight": (4.0, "attention.projection_layer.weight"),
        "embedder.model.vision_model.encoder.layers.0.norm2.bias": (5.0, "encoder.layer.0.layernorm_after.bias"),
        "embedder.model.mlp1.0.weight": (6.0, "multi_modal_projector.layer_norm.weight"),
        "embedder.model.mlp1.3.weight": (7.0, "multi_modal_projector.linear_2.weight"),
        "embedder.model.language_model.model.layers.1.self_attn.k_proj.bias": (8.0, "layers.1.self_attn.k_proj.bias"),
        "embedder.model.language_model.model.norm.weight": (9.0, "language_model.norm.weight"),
        "action_head.mlp_head.fc1.linear.weight": (10.0, "action_head.mlp_head.fc1.weight"),
        "action_head.action_encoder.W3.linear.bias": (11.0, "action_head.action_encoder.W3.bias"),
    }
    for name, (marker, _) in documented.items():
        assert name in reference, f"the documented reference key {name} is missing"
        reference[name] = torch.full_like(reference[name], marker)
    reference["embedder.model.vision_model.encoder.layers.0.attn.qkv.weight"] = qkv
    mapped, _ = map_reference_state_dict(reference, text_layers=config.text.num_layers)
    for name, (marker, ending) in documented.items():
        landed = [key for key, value in mapped.items() if value.numel() and bool((value == marker).all())]
        assert len(landed) == 1 and landed[0].endswith(ending), (name, landed)
    prefix = "embedder.model.vision_tower.encoder.layer.0.attention."
    for i, part in enumerate("qkv"):
        assert torch.equal(mapped[f"{prefix}{part}_proj.weight"], qkv[i * width : (i + 1) * width]), part


def test_reference_deepspeed_folder_loads_with_weights_only(tmp_path: Path, rgb: np.ndarray) -> None:
    torch.manual_seed(3)
    model = Evo1Model(preset("evo1-tiny"))
    folder = tmp_path / "step_best"
    folder.mkdir()
    torch.save(
        {"module": to_reference_names(model.state_dict()), "global_steps": 5}, folder / "mp_rank_00_model_states.pt"
    )
    (folder / "norm_stats.json").write_text(
        json.dumps(
            {
                "franka": {
                    "observation.state": {"min": [-1.0] * 7, "max": [1.0] * 7},
                    "action": {"min": [-2.0] * 7, "max": [2.0] * 7},
                }
            }
        )
    )
    (folder / "config.json").write_text(json.dumps({"num_inference_timesteps": 12, "horizon": 16}))
    loaded, normalizer, _, report = load_reference_checkpoint(folder, False, None, None, base=preset("evo1-tiny"))
    assert not report.missing and not report.unexpected
    assert loaded.config.era == "flash" and loaded.config.num_inference_steps == 50  # what its server forces
    assert loaded.config.head_attends_padding and loaded.config.pad_to_max_length
    assert normalizer.action.max.tolist() == [2.0] * 7
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


class _Arbitrary:
    """Stands for a pickled object that weights_only must refuse."""


def test_unsafe_pickle_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    folder = tmp_path / "evil"
    folder.mkdir()
    torch.save({"module": {"x": torch.zeros(1)}, "payload": _Arbitrary()}, folder / "checkpoint.pt")
    (folder / "norm_stats.json").write_text("{}")
    with pytest.raises(CheckpointError, match="cannot be read safely"):
        load_checkpoint(folder)


def test_lerobot_layout_loads(tmp_path: Path) -> None:
    torch.manual_seed(4)
    model = Evo1Model(preset("evo1-tiny"))
    state = {f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    mapped, dropped = map_lerobot_state_dict(state, text_layers=2)
    assert set(mapped) == set(model.state_dict()) and not dropped
    folder = tmp_path / "lerobot"
    folder.mkdir()
    save_file(state, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"type": "evo1", "num_inference_timesteps": 16}))
    _fitted_normalizer().save(folder)
    loaded, _, _, report = load_checkpoint(folder, base=preset("evo1-tiny"))
    assert not report.missing and loaded.config.num_inference_steps == 16
    assert torch.equal(
        loaded.state_dict()["action_head.mlp_head.fc2.weight"], model.state_dict()["action_head.mlp_head.fc2.weight"]
    )


def test_fresh_model_from_internvl_hf_folder(tmp_path: Path) -> None:
    """A folder laid out like OpenGVLab/InternVL3-1B-hf (native names, LM head, extra layers)."""
    torch.manual_seed(5)
    source = Evo1Model(preset("evo1-tiny"))
    hf = {
        k.replace("embedder.model.", "model."): v for k, v in source.state_dict().items() if k.startswith("embedder.")
    }
    hf["lm_head.weight"] = torch.zeros(10, 48)
    hf["model.language_model.layers.7.mlp.up_proj.weight"] = torch.zeros(2, 2)
    folder = tmp_path / "InternVL3-1B-hf"
    folder.mkdir()
    save_file(hf, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(
        json.dumps({"text_config": {"hidden_size": 48}, "vision_config": {"hidden_size": 64}})
    )
    model, _, report = from_internvl_hf(folder, preset("evo1-tiny"))
    assert not report.missing and not report.unexpected and len(report.dropped) == 2
    for key, value in source.state_dict().items():
        if key.startswith("embedder."):
            assert torch.equal(model.state_dict()[key], value), key
    with pytest.raises(CheckpointError, match="hidden size"):
        from_internvl_hf(folder, preset("evo1-0.77b"))


def test_evo1_convert_writes_our_format(tmp_path: Path) -> None:
    from evo1_bringup.cli import main

    torch.manual_seed(6)
    model = Evo1Model(preset("evo1-tiny"))
    source = tmp_path / "step_final"
    source.mkdir()
    torch.save({"module": to_reference_names(model.state_dict())}, source / "mp_rank_00_model_states.pt")
    _fitted_normalizer().save(source)
    assert main(["convert", str(source), str(tmp_path / "ours"), "--base-preset", "evo1-tiny"]) == 0
    loaded, _, _, report = load_checkpoint(tmp_path / "ours")
    assert not report.missing and not report.unexpected
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_checkpoint_without_tokenizer_uses_the_bundled_one_checked_by_hash(tmp_path: Path, rgb: np.ndarray) -> None:
    """What the shipped policy does to stay small: bf16 weights, no tokenizer.json (11 MB)."""
    from evo1_bringup.cli import main

    policy = Evo1Policy.from_preset("evo1-tiny", 7, 7, device="cpu", seed=2, normalizer=_fitted_normalizer())
    policy.save(tmp_path / "full")
    assert main(["convert", str(tmp_path / "full"), str(tmp_path / "small"), "--bf16", "--bundled-tokenizer"]) == 0
    small = tmp_path / "small"
    assert not (small / "tokenizer.json").exists()
    assert (small / "model.safetensors").stat().st_size < 0.55 * (
        tmp_path / "full" / "model.safetensors"
    ).stat().st_size
    loaded = Evo1Policy.from_checkpoint(small, device="cpu")
    text = "touch the red cube"
    assert loaded.processor.tokenizer.prompt_ids(text, 1, 4) == policy.processor.tokenizer.prompt_ids(text, 1, 4)
    state = np.linspace(-0.5, 0.5, 7)
    np.testing.assert_allclose(
        loaded.predict_chunk([rgb], state, text, seed=1), policy.predict_chunk([rgb], state, text, seed=1), atol=0.1
    )
    config = json.loads((small / "config.json").read_text())
    config["bundled_tokenizer_sha256"] = "0" * 64  # trained with another vocabulary
    (small / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="bundled tokenizer with sha256 000000000000"):
        load_checkpoint(small)


def _corruptions(folder: Path) -> dict[str, tuple[Path, bytes]]:
    weights = (folder / "model.safetensors").read_bytes()
    stats = json.loads((folder / "norm_stats.json").read_text())
    stats["action"]["max"][2] = float("nan")
    return {
        "truncated weights": (folder / "model.safetensors", weights[: len(weights) // 2]),
        "garbage weights": (folder / "model.safetensors", bytes(range(256)) * 40),
        "a header that claims 2**60 bytes": (folder / "model.safetensors", (2**60).to_bytes(8, "little") + weights[8:]),
        "NaN in norm stats": (folder / "norm_stats.json", json.dumps(stats).encode()),
        "inf in norm stats": (folder / "norm_stats.json", json.dumps(stats).replace("NaN", "Infinity").encode()),
        "garbage config": (folder / "config.json", b"\xff\xfe{"),
    }


def test_every_corrupt_checkpoint_is_one_error_naming_the_file(tmp_path: Path) -> None:
    source = Evo1Policy.from_preset("evo1-tiny", 7, 7, device="cpu").save(tmp_path / "good")
    for what, (path, content) in _corruptions(source).items():
        original = path.read_bytes()
        path.write_bytes(content)
        try:
            with pytest.raises(ValueError) as caught:
                Evo1Policy.from_checkpoint(source, device="cpu")
        finally:
            path.write_bytes(original)
        message = str(caught.value)
        assert path.name in message and "\n" not in message, f"{what}: {message!r}"


def test_the_cli_reports_a_corrupt_checkpoint_in_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    from fixtures import known_episode, write_bag

    folder = Evo1Policy.from_preset("evo1-tiny", 3, 3, device="cpu").save(tmp_path / "ckpt")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    bag = write_bag(tmp_path / "run", known_episode(0, steps=20), "mcap")
    arm = tmp_path / "arm.yaml"
    arm.write_text(
        "evo1_policy_node:\n  ros__parameters:\n    joints: {names: [joint1, joint2], lower_limits: [-1.0, -1.0],"
        " upper_limits: [1.0, 1.0], max_velocity: [1.0, 1.0]}\n    gripper: {name: joint3, upper_limit: 8.0}\n"
        "    topics: {trajectory: ''}\n"
    )
    evo1 = str(Path(sys.executable).parent / "evo1")
    for args in (["info", "--checkpoint", str(folder)], ["eval-bag", str(bag), "--checkpoint", str(folder),
                 "--config", str(arm), "--out", str(tmp_path / "report")]):  # fmt: skip
        done = subprocess.run([evo1, *args], capture_output=True, text=True, timeout=300)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1, f"{args[0]}: {done.stderr[-2000:]}"
        assert "model.safetensors is not a readable safetensors file" in lines[0] and "Traceback" not in done.stderr
