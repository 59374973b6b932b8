"""The Evo-1 model: shapes, masks, the prefix cache, seeding, training signal, parameter count."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evo1_policy.config import IMG_CONTEXT_ID, preset
from evo1_policy.evaluation.bench import meta_model, parameter_counts
from evo1_policy.model import Evo1Model
from evo1_policy.policy import ChunkGuidance, Evo1Policy
from evo1_policy.processor import Observation

INSTRUCTION = "pick up the red cube"
HORIZON = 16  # the tiny preset's chunk length


def test_chunk_shape_and_units(tiny_policy: Evo1Policy, rgb: np.ndarray) -> None:
    chunk = tiny_policy.predict_chunk([rgb], np.zeros(7), INSTRUCTION, seed=0)
    assert chunk.shape == (HORIZON, 7)
    assert chunk.dtype == np.float64
    assert np.isfinite(chunk).all()


def test_batched_prediction_matches_single(tiny_policy: Evo1Policy, rgb: np.ndarray) -> None:
    observations = [Observation([rgb], np.zeros(7), INSTRUCTION), Observation([rgb[::-1]], np.ones(7) * 0.1, "push")]
    batch = tiny_policy.predict_chunks(observations, seed=3)
    assert batch.shape == (2, HORIZON, 7)
    # Different observations give different chunks; padding the shorter prompt changes nothing.
    assert not np.allclose(batch[0], batch[1])
    tiny_policy.model.eval()
    inputs = tiny_policy.processor.inputs(observations)
    alone = tiny_policy.processor.inputs(observations[1:])
    kv_batch = tiny_policy.model.encode_prefix(inputs)
    kv_alone = tiny_policy.model.encode_prefix(alone)
    t = torch.full((1,), 0.5)
    x = torch.rand(1, HORIZON, 24)
    with torch.no_grad():
        v_batch = tiny_policy.model.action_head.velocity(x, t, _row(kv_batch, 1))
        v_alone = tiny_policy.model.action_head.velocity(x, t, kv_alone)
    assert torch.allclose(v_batch, v_alone, atol=1e-5)


def _row(kv, i: int):
    from evo1_policy.action_head import KeyValues

    return KeyValues([k[i : i + 1] for k in kv.keys], [v[i : i + 1] for v in kv.values], kv.mask[i : i + 1])


def test_seeded_sample_is_reproducible(tiny_policy: Evo1Policy, rgb: np.ndarray) -> None:
    a = tiny_policy.predict_chunk([rgb], np.zeros(7), INSTRUCTION, seed=7)
    b = tiny_policy.predict_chunk([rgb], np.zeros(7), INSTRUCTION, seed=7)
    c = tiny_policy.predict_chunk([rgb], np.zeros(7), INSTRUCTION, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_prefix_cache_gives_identical_chunks(tiny_policy: Evo1Policy, rgb: np.ndarray) -> None:
    cached = tiny_policy.predict_chunk([rgb, rgb], np.zeros(7), INSTRUCTION, seed=1)
    tiny_policy.use_prefix_cache = False
    try:
        recomputed = tiny_policy.predict_chunk([rgb, rgb], np.zeros(7), INSTRUCTION, seed=1)
    finally:
        tiny_policy.use_prefix_cache = True
    np.testing.assert_allclose(cached, recomputed, atol=1e-5, rtol=0)


def test_masked_view_content_has_no_effect(tiny_policy: Evo1Policy, rgb: np.ndarray) -> None:
    """A missing view is a zero image masked out of attention: what it would have shown is irrelevant."""
    inputs = tiny_policy.processor.inputs([Observation([rgb, rgb], np.zeros(7), INSTRUCTION)])
    inputs.view_mask[0, 1] = False
    base = tiny_policy.model.sample_actions(inputs, generator=torch.Generator().manual_seed(0))
    inputs.pixel_values[0, 1] = torch.randn_like(inputs.pixel_values[0, 1]) * 5
    changed = tiny_policy.model.sample_actions(inputs, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(base, changed, atol=1e-6, rtol=0)
    # ... whereas the same change to a present view does change the chunk.
    inputs.view_mask[0, 1] = True
    present = tiny_policy.model.sample_actions(inputs, generator=torch.Generator().manual_seed(0))
    assert (present - base).abs().max() > 1e-4
    # The API's None view gives the same chunk as the masked view above.
    via_api = tiny_policy.predict_chunk([rgb, None], np.zeros(7), INSTRUCTION, seed=0)
    expected = tiny_policy.processor.robot_actions(base, np.zeros((1, 7)))[0]
    np.testing.assert_allclose(via_api, expected, atol=1e-5)


def test_masked_action_dims_have_no_effect(tiny_policy: Evo1Policy, rgb: np.ndarray) -> None:
    model = tiny_policy.model
    inputs = tiny_policy.processor.inputs([Observation([rgb], np.zeros(7), INSTRUCTION)])
    sample = model.sample_actions(inputs, generator=torch.Generator().manual_seed(0))
    assert torch.count_nonzero(sample[..., 7:]) == 0
    actions = torch.rand(1, HORIZON, 24) * 2 - 1
    garbage = actions.clone()
    garbage[..., 7:] = 1e3
    model.train()
    try:
        loss = model.compute_loss(inputs, actions * (torch.arange(24) < 7), torch.Generator().manual_seed(5))
        loss_garbage = model.compute_loss(inputs, garbage, torch.Generator().manual_seed(5))
    finally:
        model.eval()
    torch.testing.assert_close(loss, loss_garbage)


def test_guidance_pulls_chunk_toward_committed_actions(tiny_policy: Evo1Policy, rgb: np.ndarray) -> None:
    previous = tiny_policy.predict_chunk([rgb], np.zeros(7), INSTRUCTION, seed=1)
    frozen = 8
    guidance = ChunkGuidance(previous[:frozen], np.ones(frozen))
    guided = tiny_policy.predict_chunk([rgb], np.zeros(7), INSTRUCTION, seed=2, guidance=guidance)
    free = tiny_policy.predict_chunk([rgb], np.zeros(7), INSTRUCTION, seed=2)
    guided_error = np.abs(guided[:frozen] - previous[:frozen]).mean()
    free_error = np.abs(free[:frozen] - previous[:frozen]).mean()
    assert guided_error < 0.2 * free_error


def test_tiny_preset_overfits_a_small_batch(rgb: np.ndarray) -> None:
    """The classic sanity check: one fixed batch (same noise and times each step) is memorised."""
    torch.manual_seed(0)
    policy = Evo1Policy.from_preset("evo1-tiny", 7, 7, device="cpu", seed=0)
    model = policy.model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    observations = [Observation([rgb], np.zeros(7), INSTRUCTION), Observation([rgb[:, ::-1]], np.ones(7) * 0.5, "push")]
    inputs = policy.processor.inputs(observations)
    steps = np.linspace(0, 1, HORIZON)[:, None]
    actions = np.stack([np.sin(steps * np.arange(1, 8)), np.cos(steps * np.arange(1, 8))]) * 0.8
    target = policy.processor.model_actions(actions, np.stack([o.state for o in observations]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(200):
        loss = model.compute_loss(inputs, target, torch.Generator().manual_seed(0))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert last < first / 10, f"loss went from {first:.4f} to {last:.4f}"


def test_full_preset_has_077b_parameters() -> None:
    counts = parameter_counts(meta_model(preset("evo1-0.77b")))
    assert abs(counts["total"] - 0.77e9) / 0.77e9 < 0.03
    head = sum(v for k, v in counts.items() if k.startswith("action_head"))
    assert 115e6 < head < 130e6  # the paper's ~122 M action expert


def test_prompt_layout_matches_reference() -> None:
    from evo1_policy.tokenizer import PromptTokenizer

    tokenizer = PromptTokenizer.from_dir()
    ids = tokenizer.prompt_ids("  pick the cube \n", num_views=2, tokens_per_view=256)
    text = tokenizer._tokenizer.decode(ids, skip_special_tokens=False)
    assert text.startswith("Image-1: <img>")
    assert "</img>\nImage-2: <img>" in text
    assert text.endswith("</img>\npick the cube")
    assert ids.count(IMG_CONTEXT_ID) == 512
    assert ids[0] != 151643  # no BOS / pad at the start
    first = tokenizer.prompt_ids("pick the cube", num_views=1, tokens_per_view=4, instruction_first=True)
    assert tokenizer._tokenizer.decode(first, skip_special_tokens=False) == (
        "pick the cube\nImage-1: <img>" + "<IMG_CONTEXT>" * 4 + "</img>"
    )


def test_instruction_first_is_a_config_that_checkpoints_keep(tmp_path, rgb: np.ndarray) -> None:
    policy = Evo1Policy.from_preset("evo1-tiny", 7, 7, device="cpu", seed=0)
    policy.model.config.instruction_first = True  # the processor reads the same config
    loaded = Evo1Policy.from_checkpoint(policy.save(tmp_path / "ckpt"), device="cpu")
    assert loaded.config.instruction_first
    first_word = loaded.processor.tokenizer._text("pick")[0]
    for p in (policy, loaded):
        inputs = p.processor.inputs([Observation([rgb], np.zeros(7), "pick the cube")])
        assert int(inputs.input_ids[0, 0]) == first_word
    chunks = [p.predict_chunk([rgb], np.zeros(7), "pick the cube", seed=0) for p in (policy, loaded)]
    np.testing.assert_array_equal(*chunks)


def test_model_builds_on_meta_device_without_memory() -> None:
    model = meta_model(preset("evo1-0.77b"))
    assert isinstance(model, Evo1Model)
    assert next(model.parameters()).device.type == "meta"


@pytest.mark.parametrize("mode", ["cpu-bf16"])
def test_bf16_on_cpu_runs(mode: str, rgb: np.ndarray) -> None:
    del mode
    policy = Evo1Policy.from_preset("evo1-tiny", 7, 7, device="cpu", dtype="bfloat16", seed=0)
    chunk = policy.predict_chunk([rgb], np.zeros(7), INSTRUCTION, seed=0)
    assert chunk.shape == (HORIZON, 7) and np.isfinite(chunk).all()
