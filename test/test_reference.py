"""Released Evo-1 checkpoints act as the reference code runs them (issue 13, docs/checkpoints.md).

The numbers come from the reference implementation itself (MINT-SJTU/Evo-1, branches `main` and
`evo1-flash`), run at toy sizes by scripts/reference_fixtures.py into test/data/reference/. Each
test writes a checkpoint in the reference's exact on-disk layout (DeepSpeed's
mp_rank_00_model_states.pt with `module`, or checkpoint.pt with `model_state_dict`, beside
config.json and norm_stats.json as its trainer writes them), loads it with no option, and compares.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fixtures import to_reference_names
from safetensors.torch import load_file, save_file

from evo1_policy.backbone import UNPADDED_ATTENTION, internvl_config, unpadded_sdpa_attention
from evo1_policy.checkpoint import CheckpointError, load_checkpoint
from evo1_policy.config import Evo1Config, HeadConfig, TextConfig, VisionConfig, preset
from evo1_policy.evaluation.bench import format_info, info
from evo1_policy.images import normalize_image
from evo1_policy.model import Evo1Model, ModelInputs
from evo1_policy.policy import Evo1Policy
from evo1_policy.processor import Observation, Processor

DATA = Path(__file__).parent / "data" / "reference"
FIXTURE = json.loads((DATA / "reference_fixtures.json").read_text())
HEAD = FIXTURE["head"]
NORM = FIXTURE["normalizer"]


def micro_config() -> Evo1Config:
    """The fixtures' toy head on a toy InternVL (one 28 px patch grid: one token per view)."""
    config = preset("evo1-tiny")
    config.vision = VisionConfig(
        hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, patch_size=14, image_size=28
    )
    config.text = TextConfig(
        hidden_size=HEAD["embed_dim"], num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64
    )
    config.head = HeadConfig(
        width=0,
        num_layers=HEAD["num_layers"],
        num_heads=HEAD["num_heads"],
        ffn_size=4 * HEAD["embed_dim"],  # the reference's embed_dim * 4
        mlp_hidden=HEAD["hidden_dim"],
        state_hidden=HEAD["state_hidden_dim"],
        dropout=0.0,
    )
    config.horizon, config.max_state_dim, config.max_action_dim = HEAD["horizon"], 24, 24
    return config


def head_fixture(era: str) -> dict[str, torch.Tensor]:
    return load_file(str(DATA / f"{era}_head.safetensors"))


def reference_weights(era: str) -> dict[str, torch.Tensor]:
    """A toy model's weights under the reference's names, its head the one the fixture ran."""
    torch.manual_seed(11)
    state = to_reference_names(Evo1Model(micro_config()).state_dict())
    head = {k.removeprefix("weights."): v for k, v in head_fixture(era).items() if k.startswith("weights.")}
    assert set(head) == {k for k in state if k.startswith("action_head.")}  # same layout, key for key
    return {**state, **head}


def vlm_folder(tmp_path: Path) -> Path:
    """What `vlm_name` points at: the InternVL config the reference builds its VLM from."""
    folder = tmp_path / "InternVL3-micro"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(internvl_config(micro_config()).to_dict()))
    return folder


def train_args(tmp_path: Path) -> dict[str, Any]:
    """config.json of a `main` checkpoint: the training arguments (no num_inference_timesteps)."""
    return {
        "vlm_name": str(vlm_folder(tmp_path)),
        "action_head": "flowmatching",
        "return_cls_only": False,
        "horizon": HEAD["horizon"],
        "per_action_dim": HEAD["per_action_dim"],
        "action_dim": HEAD["horizon"] * HEAD["per_action_dim"],
        "state_dim": HEAD["state_dim"],
        "embed_dim": HEAD["embed_dim"],
        "hidden_dim": HEAD["hidden_dim"],
        "state_hidden_dim": HEAD["state_hidden_dim"],
        "num_heads": HEAD["num_heads"],
        "num_layers": HEAD["num_layers"],
        "finetune_vlm": True,
        "finetune_action_head": True,
        "lr": 1e-5,
        "max_steps": 1200,
    }


def write_main(tmp_path: Path, **changes: Any) -> Path:
    folder = tmp_path / "step_best"
    folder.mkdir()
    args = {**train_args(tmp_path), **changes}
    blob = {"module": reference_weights("main"), "global_steps": 1200, "step": 1200, "best_loss": 0.01, "config": args}
    torch.save(blob, folder / "mp_rank_00_model_states.pt")
    (folder / "config.json").write_text(json.dumps(args, indent=2))
    (folder / "norm_stats.json").write_text(json.dumps({"franka": NORM["stats"]}, indent=2))
    meta = {"type": "ds_model", "version": 0.0, "checkpoints": "mp_rank_00_model_states.pt"}
    (folder / "checkpoint.json").write_text(json.dumps(meta))
    return folder


def write_flash(tmp_path: Path, stats: dict[str, Any], **changes: Any) -> Path:
    """`evo1-flash` without DeepSpeed: checkpoint.pt; config.json is its EvoConfig."""
    folder = tmp_path / "step_800"
    folder.mkdir()
    config = {**train_args(tmp_path), "num_inference_timesteps": 50, "num_categories": 1, "device": "cuda", **changes}
    blob = {
        "step": 800,
        "best_loss": 0.02,
        "config": config,
        "norm_stats": stats,
        "model_state_dict": reference_weights("flash"),
        "optimizer_state_dict": None,
        "scheduler_state_dict": None,
    }
    torch.save(blob, folder / "checkpoint.pt")
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "norm_stats.json").write_text(json.dumps(stats, indent=2))
    (folder / "checkpoint.json").write_text(json.dumps({"type": "torch_model", "version": 1.0}))
    return folder


def one_dataset() -> dict[str, Any]:
    return {"arm": {"task_a": NORM["flash_stats"]["arm"]["task_a"]}}


def sample_head(model: Evo1Model, era: str, steps: int | None = None) -> torch.Tensor:
    """The loaded head sampling from the fixture's context, state and seeded noise."""
    data = head_fixture(era)
    kv = model.action_head.memory_keys_values(data["input.fused_tokens"], None, data["input.state"])
    inputs = ModelInputs(
        pixel_values=torch.zeros(1),
        view_mask=torch.zeros(1),
        input_ids=torch.zeros(1),
        text_mask=torch.zeros(1),
        state=data["input.state"],
        action_mask=data["input.action_mask"].bool(),
    )
    generator = torch.Generator().manual_seed(HEAD["seeds"]["noise"])
    return model.sample_actions(inputs, steps, generator, kv=kv)


@pytest.mark.parametrize("era", ["main", "flash"])
def test_reference_checkpoint_samples_the_reference_chunk(tmp_path: Path, era: str) -> None:
    folder = write_main(tmp_path) if era == "main" else write_flash(tmp_path, one_dataset())
    model, _, _, report = load_checkpoint(folder)
    c = model.config
    assert c.era == era and report.step == (1200 if era == "main" else 800)
    assert report.format == ("reference-deepspeed" if era == "main" else "reference-torch")
    assert c.num_inference_steps == HEAD["steps"][era]
    assert c.head.time_index_scale == (1000 if era == "main" else 999)
    assert (c.head.num_heads, c.head.ffn_size) == (
        HEAD["num_heads"],
        4 * HEAD["embed_dim"],
    )  # not the preset's 8 / 3584
    assert c.vision.image_size == 28 and c.text.hidden_size == HEAD["embed_dim"]  # from vlm_name's config
    expected = head_fixture(era)["output.actions"]
    real = HEAD["real_dims"]
    chunk = sample_head(model, era)
    torch.testing.assert_close(chunk[..., :real], expected[..., :real], atol=2e-5, rtol=1e-5)
    # the time-table row is what tells the eras apart: the other era's row gives another chunk
    model.action_head.time_index_scale = 999 if era == "main" else 1000
    assert (sample_head(model, era)[..., :real] - expected[..., :real]).abs().max() > 1e-4


def test_main_era_normalisation_is_the_servers(tmp_path: Path) -> None:
    _, normalizer, _, _ = load_checkpoint(write_main(tmp_path))
    processor = Processor(micro_config(), None, normalizer)  # type: ignore[arg-type]
    assert normalizer.convention == "reference" and normalizer.mode == "bounds"
    state = np.asarray(NORM["state"][0])
    padded = np.full(24, normalizer.state_padding)
    padded[:5] = normalizer.normalize(state, "state")
    # a dim whose min equals its max gives -1, and so do the padded dims (zero stats), as there
    np.testing.assert_allclose(padded, NORM["main"]["state"][0], atol=1e-6)
    actions = torch.tensor(NORM["model_actions"])[None]
    robot = processor.robot_actions(actions, state[None])[0]
    # model outputs are not clamped: -1.2 and 1.1 are denormalised as they are
    np.testing.assert_allclose(robot, np.asarray(NORM["main"]["actions"])[:, :5], atol=1e-6)


@pytest.mark.parametrize("kind", ["bounds", "bounds_q99", "normal"])
@pytest.mark.parametrize("key", ["task_a", "task_b"])
def test_flash_era_normalisation_type_and_dataset_key(tmp_path: Path, kind: str, key: str) -> None:
    folder = write_flash(tmp_path, NORM["flash_stats"], normalization_type=kind)
    _, normalizer, _, _ = load_checkpoint(folder, dataset_key=key)
    assert normalizer.mode == kind and normalizer.state_padding == 0.0
    expected = NORM["flash"][kind][key]
    state = np.asarray(NORM["state"][0])
    np.testing.assert_allclose(normalizer.normalize(state, "state"), expected["state"][0][:5], atol=1e-5)
    assert expected["state"][0][5:] == [0.0] * 19
    actions = np.asarray(NORM["model_actions"])[:, :5]
    np.testing.assert_allclose(
        normalizer.denormalize(actions, "action"), np.asarray(expected["actions"])[:, :5], atol=1e-5
    )


def test_several_datasets_need_a_dataset_key_and_the_error_lists_them(tmp_path: Path) -> None:
    folder = write_flash(tmp_path, NORM["flash_stats"])
    with pytest.raises(CheckpointError, match=r"dataset_key.*task_a.*task_b"):
        load_checkpoint(folder)
    with pytest.raises(CheckpointError, match=r"no dataset 'task_c'.*task_a"):
        load_checkpoint(folder, dataset_key="task_c")
    result = info(checkpoint=str(folder), dataset_key="task_b")
    c = result["checkpoint"]
    assert (c["format"], c["era"], c["step"], c["normalization"]) == ("reference-torch", "flash", 800, "bounds")
    assert c["dataset_keys"] == {"arm": ["task_a", "task_b"]} and c["view_slots"] == 3
    text = format_info(result)
    assert "era flash, step 800" in text and "task_a, task_b" in text and "int(t * 999)" in text


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"embed_dim": 64}, r"embed_dim 64 \(weights: 32\)"),
        ({"horizon": 50}, r"horizon 50 \(weights: 4\)"),
        ({"num_heads": 3}, "num_heads 3 does not divide"),
        ({"vlm_name": "OpenGVLab/InternVL3-2B"}, "vlm_name 'OpenGVLab/InternVL3-2B'"),
    ],
)
def test_config_json_that_contradicts_the_weights_is_refused(tmp_path: Path, change: dict, error: str) -> None:
    with pytest.raises(CheckpointError, match=error):
        load_checkpoint(write_main(tmp_path, **change))


# ------------------------------------------------------------------ the language model's masked positions


def explicit_unpadded(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Flash-attention-2 with padding, spelled out: drop the masked positions, attend causally
    among the rest, put the results back and zeros at the masked positions. (B, H, L, D) in,
    (B, L, H, D) out, as transformers' attention functions return."""
    batch, heads, length, dim = q.shape
    out = torch.zeros(batch, length, heads, dim)
    for b in range(batch):
        keep = valid[b].nonzero().flatten()
        qb, kb, vb = q[b][:, keep], k[b][:, keep], v[b][:, keep]
        scores = qb @ kb.transpose(-1, -2) / dim**0.5
        causal = torch.ones(len(keep), len(keep)).tril().bool()
        attended = scores.masked_fill(~causal, float("-inf")).softmax(-1) @ vb
        out[b, keep] = attended.transpose(0, 1)
    return out


def test_masked_positions_get_the_zero_attention_output_of_flash_attention() -> None:
    torch.manual_seed(0)
    batch, heads, length, dim = 2, 2, 9, 8
    q, k, v = (torch.randn(batch, heads, length, dim) for _ in range(3))
    valid = torch.ones(batch, length, dtype=torch.bool)
    valid[0, 3:5] = False  # a missing view in the middle
    valid[1, 6:] = False  # right padding
    causal = torch.ones(length, length).tril().bool()
    mask = (causal[None] & valid[:, None, :])[:, None]  # transformers' (B, 1, L, L) boolean mask
    module = torch.nn.Module()
    module.is_causal = True
    ours, _ = unpadded_sdpa_attention(module, q, k, v, mask, scaling=dim**-0.5)
    torch.testing.assert_close(ours, explicit_unpadded(q, k, v, valid), atol=1e-5, rtol=1e-5)
    assert ours[0, 3:5].abs().max() == 0 and ours[1, 6:].abs().max() == 0


def test_reference_mode_changes_only_the_masked_positions_of_the_language_model() -> None:
    torch.manual_seed(1)
    config = micro_config()
    sdpa = Evo1Model(config).eval()
    config.zero_masked_attention = True
    flash = Evo1Model(config).eval()
    flash.load_state_dict(sdpa.state_dict())
    assert flash.embedder.model.language_model.config._attn_implementation == UNPADDED_ATTENTION
    embeds = torch.randn(2, 12, config.text.hidden_size)
    attention = torch.ones(2, 12, dtype=torch.long)
    attention[0, 4:6] = 0
    attention[1, 9:] = 0
    with torch.no_grad():
        a = sdpa.embedder.model.language_model(inputs_embeds=embeds, attention_mask=attention).last_hidden_state
        b = flash.embedder.model.language_model(inputs_embeds=embeds, attention_mask=attention).last_hidden_state
    valid = attention.bool()
    torch.testing.assert_close(a[valid], b[valid], atol=1e-5, rtol=1e-5)
    assert (a[~valid] - b[~valid]).abs().max() > 1e-3


# ------------------------------------------------------------------ views and pixels


def test_reference_checkpoint_feeds_black_missing_views_in_every_slot(tmp_path: Path) -> None:
    model, normalizer, tokenizer, _ = load_checkpoint(write_main(tmp_path))
    c = model.config
    assert c.fixed_view_slots and c.missing_view_fill == "black" and c.zero_masked_attention
    processor = Processor(c, tokenizer, normalizer)
    image = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    inputs = processor.inputs([Observation([image], np.zeros(5), "pick up the cube")])
    assert inputs.view_mask.tolist() == [[True, False, False]]  # one camera, three slots
    assert inputs.input_ids.shape[1] == c.max_text_length  # padded to 1024 as the reference pads
    black = model.embedder.missing_view.flatten()
    torch.testing.assert_close(black, torch.tensor(FIXTURE["black_view"]), atol=1e-6, rtol=0)
    assert processor.check_instruction("pick up the cube", views=1) is None  # counted with 3 slots
    # the whole pipeline, as the node runs it: one camera, 5 joints, a chunk in robot units
    policy = Evo1Policy.from_checkpoint(tmp_path / "step_best", device="cpu")
    chunk = policy.predict_chunk([image], np.asarray(NORM["state"][0]), "pick up the cube", seed=0)
    assert chunk.shape == (HEAD["horizon"], 5) and np.isfinite(chunk).all()


def test_flash_pixels_are_normalised_in_bfloat16() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (28, 28, 3), dtype=np.uint8)
    ours = normalize_image(rgb, 28, "bicubic", "bfloat16")
    # evo1-flash's embedder on a 448 px tensor: (x.to(bf16) - mean_bf16) / std_bf16
    x = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.bfloat16).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.bfloat16).view(3, 1, 1)
    theirs = ((x.to(torch.bfloat16) - mean) / std).float().numpy()
    np.testing.assert_array_equal(ours, theirs)
    assert np.abs(ours - normalize_image(rgb, 28)).max() > 0  # float32 differs


def test_bicubic_resize_is_pillows() -> None:
    from PIL import Image

    rgb = np.random.default_rng(2).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(rgb).resize((28, 28), Image.Resampling.BICUBIC), dtype=np.float32) / 255
    ours = normalize_image(rgb, 28, "bicubic") * np.array([0.229, 0.224, 0.225])[:, None, None]
    ours = ours + np.array([0.485, 0.456, 0.406])[:, None, None]
    np.testing.assert_allclose(ours.transpose(1, 2, 0), expected, atol=1e-6)


# ------------------------------------------------------------------ LeRobot's evo1 port


def write_lerobot(tmp_path: Path) -> Path:
    """A LeRobot-format Evo-1 (policies/evo1): model.* weights, its config.json, and the
    normaliser's stats in the processor's safetensors file, as LeRobot saves them."""
    torch.manual_seed(12)
    model = Evo1Model(micro_config())
    folder = tmp_path / "pretrained_model"
    folder.mkdir()
    save_file({f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    config = {
        "type": "evo1",
        "vlm_model_name": str(vlm_folder(tmp_path)),
        "num_inference_timesteps": 32,
        "embed_dim": HEAD["embed_dim"],
        "num_heads": HEAD["num_heads"],
        "max_views": 3,
        "normalization_mapping": {"VISUAL": "IDENTITY", "STATE": "MIN_MAX", "ACTION": "MIN_MAX"},
    }
    (folder / "config.json").write_text(json.dumps(config))
    stats = NORM["stats"]
    flat = {f"{feature}.{name}": torch.tensor(v) for feature, d in stats.items() for name, v in d.items()}
    save_file(flat, str(folder / "policy_preprocessor_step_3_normalizer_processor.safetensors"))
    steps = [
        {"registry_name": "rename_observations_processor", "config": {}},
        {
            "registry_name": "normalizer_processor",
            "state_file": "policy_preprocessor_step_3_normalizer_processor.safetensors",
        },
    ]
    (folder / "policy_preprocessor.json").write_text(json.dumps({"name": "policy_preprocessor", "steps": steps}))
    return folder


def test_lerobot_checkpoint_runs_as_lerobot_runs_it(tmp_path: Path) -> None:
    model, normalizer, _, report = load_checkpoint(write_lerobot(tmp_path))
    c = model.config
    assert report.format == "lerobot" and c.era == "lerobot"
    assert c.head.time_index_scale == 999 and c.num_inference_steps == 32 and c.head.num_heads == HEAD["num_heads"]
    assert not c.head_attends_padding and not c.pad_to_max_length  # its head masks padding and missing views
    assert c.missing_view_fill == "black" and c.fixed_view_slots and c.image_normalize_dtype == "bfloat16"
    assert normalizer.convention == "lerobot" and normalizer.mode == "bounds"
    # MIN_MAX: 2 (x - min) / (max - min) - 1 with a zero range replaced by 1e-8; nothing clamped
    state = np.asarray(NORM["state"][0])
    np.testing.assert_allclose(normalizer.normalize(state, "state"), [0.3, 1.5, -1.0, -0.5, 0.0], atol=1e-6)
    np.testing.assert_allclose(
        normalizer.denormalize(np.array([1.5, -1.0, 0.0, 0.0, 0.0]), "action"), [1.5, 0.0, 0.5, 0.0, 0.5]
    )
