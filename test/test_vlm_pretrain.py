"""Stage 0 (vision-language pretraining) with the real model code and real simulator renders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evo1_bringup.sim.scene import PLACEMENT_HIGH, PLACEMENT_LOW, Placement, random_placement
from evo1_bringup.sim.vqa import cell_words, questions, render_vqa_set, spot_of
from evo1_policy.checkpoint import CheckpointError, from_internvl_hf
from evo1_policy.config import preset
from evo1_policy.tokenizer import PromptTokenizer
from evo1_policy.training.vlm_pretrain import (
    PretrainSection,
    VisionLanguageModel,
    VQAItem,
    VQASet,
    evaluate,
    load_vlm,
    make_batch,
    pretrain,
)


@pytest.fixture(scope="module")
def tokenizer() -> PromptTokenizer:
    return PromptTokenizer.from_dir()


@pytest.fixture(scope="module")
def scenes() -> VQASet:
    return render_vqa_set(range(10, 26), preset("evo1-sim").vision.image_size)


def test_cells_are_named_in_the_arms_frame() -> None:
    near, far = PLACEMENT_LOW[0] + 0.01, PLACEMENT_HIGH[0] - 0.01
    assert cell_words(np.array([near, PLACEMENT_HIGH[1] - 0.01])) == "near left"  # +y is the arm's left
    assert cell_words(np.array([far, PLACEMENT_LOW[1] + 0.01])) == "far right"
    assert cell_words(np.array([far, 0.0])) == "far middle"


def test_questions_agree_with_the_placement() -> None:
    placement = Placement(
        {"red": np.array([0.3, 0.15]), "green": np.array([0.4, 0.0]), "blue": np.array([0.3, -0.15])}, "red"
    )
    asked = questions(placement, ["blue", "green", "red"], np.random.default_rng(0))
    answers = {q: a for _, q, a in asked}
    assert answers["where is the red cube"] == "near left"
    # the fine grid: x 5 cm into the 17 cm area is its 2nd row of 4, y 15 cm left its 1st column of 6
    assert answers["touch the red"] == spot_of(np.array([0.3, 0.15])) == "g"
    assert answers["where is the blue cube"] == "near right"
    assert answers["how many cubes"] == "three"
    for question, answer in answers.items():
        if question.startswith("what colour is the cube on the"):
            side = question.rsplit(" ", 1)[1]
            assert answer == {"left": "red", "middle": "green", "right": "blue"}[side]
        if question.startswith("is the"):
            a, b = question.split()[2], question.split()[-2]
            assert answer == ("yes" if placement.cubes[a][1] > placement.cubes[b][1] else "no")


def test_touch_question_is_the_policy_prompt_up_to_the_colour_word(tokenizer) -> None:
    """The pretraining question "touch the red" and the policy's instruction "touch the red cube"
    share every token up to the colour word, so in a causal LM its hidden state is the same."""
    config = preset("evo1-sim")
    question = tokenizer.prompt_ids("touch the red", 1, config.tokens_per_view, config.instruction_first)
    instruction = tokenizer.prompt_ids("touch the red cube", 1, config.tokens_per_view, config.instruction_first)
    assert instruction[: len(question)] == question and len(instruction) > len(question)
    model = VisionLanguageModel(config).eval()
    pixels, view = torch.randn(1, 1, 3, 112, 112), torch.ones(1, 1, dtype=torch.bool)

    def hidden(ids: list[int]) -> torch.Tensor:
        with torch.no_grad():
            return model.backbone(pixels, view, torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.bool))[0]

    short, full = hidden(question), hidden(instruction)
    assert torch.allclose(short[0, -1], full[0, len(question) - 1], atol=1e-5)


def test_batch_predicts_each_answer_token_from_the_token_before_it(tokenizer, scenes) -> None:
    config = preset("evo1-sim")
    batch = make_batch(scenes, [0, 1, 5], tokenizer, config)
    assert len(batch.targets) >= 3
    # the token after each predicting position is the target itself (teacher forcing)
    assert torch.equal(batch.input_ids[batch.rows, batch.positions + 1], batch.targets)
    for row, index in enumerate([0, 1, 5]):
        answer = tokenizer.answer_ids(scenes.items[index].answer)
        assert batch.targets[batch.rows == row].tolist() == answer
        # logits are taken only after the prompt: the first predicting position is the question's last token
        prompt = tokenizer.prompt_ids(scenes.items[index].question, 1, config.tokens_per_view)
        assert int(batch.positions[batch.rows == row][0]) == len(prompt) - 1


def test_pretraining_learns_the_answers_and_saves_an_internvl_hf_folder(tmp_path, scenes) -> None:
    """Forty steps: the head over the whole vocabulary (loss ln 151,674 = 11.9 at the start) learns
    to put its mass on the answer words; then the folder loads back as a VLM and as Evo-1's backbone.
    (Held-out accuracy is what docs/sim.md measures with `evo1 pretrain-vlm`; it takes thousands of steps.)"""
    config = preset("evo1-sim")
    counts = [item for item in scenes.items if item.kind == "count"]
    # held out by scene: the reported accuracy is on scenes the training never showed
    held_scenes = {item.scene for item in counts[-4:]}
    small = VQASet(scenes.images, [item for item in counts if item.scene not in held_scenes])
    held_out = VQASet(scenes.images, [item for item in counts if item.scene in held_scenes])
    assert small.items and held_out.items
    section = PretrainSection(steps=40, batch_size=16, lr=3e-3, warmup_steps=5, eval_every=40, device="cpu")
    model = VisionLanguageModel(config)
    first = model.loss(make_batch(small, list(range(len(small.items))), PromptTokenizer.from_dir(), config)).item()
    assert first > 10.0
    report = pretrain(config, small, held_out, section, tmp_path / "vlm", log=lambda *_: None)
    assert report["history"][-1]["loss"] < 2.0, report["history"]

    folder = tmp_path / "vlm" / "final"
    loaded = load_vlm(folder)
    tokenizer = PromptTokenizer.from_dir()
    # the saved folder answers the held-out scenes as the run reported
    assert evaluate(loaded, held_out, tokenizer)["count"] == report["held_out_accuracy"]["count"]

    model, _, load_report = from_internvl_hf(folder, preset("evo1-sim"))
    assert load_report.dropped == ["lm_head.weight"] and not load_report.missing
    for key, value in loaded.backbone.state_dict().items():
        assert torch.equal(model.embedder.state_dict()[key], value), key
    other_order = preset("evo1-sim")
    other_order.instruction_first = True
    with pytest.raises(CheckpointError, match="prompt order"):
        from_internvl_hf(folder, other_order)


def test_unanswerable_weights_are_refused(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="not a pretrained VLM folder"):
        load_vlm(tmp_path)
    with pytest.raises(ValueError, match="kind_weights"):
        section = PretrainSection(steps=1, kind_weights={"count": 0.0}, device="cpu")
        item = VQAItem(0, "how many cubes", "one", "count")
        data = VQASet(np.zeros((1, 1, 112, 112, 3), dtype=np.uint8), [item])
        pretrain(preset("evo1-sim"), data, data, section, tmp_path / "x", log=lambda *_: None)


def test_scene_questions_cover_every_kind_with_one_to_three_cubes(scenes) -> None:
    kinds = {item.kind for item in scenes.items}
    assert kinds == {"where", "touch", "colour_at", "count", "left_of", "what_at"}
    assert scenes.images.shape[1:] == (1, 112, 112, 3) and scenes.images.dtype == np.uint8
    counts = {item.answer for item in scenes.items if item.kind == "count"}
    assert len(counts) >= 2, "scenes differ in how many cubes they show"
    assert random_placement(10).cubes.keys() == {"red", "green", "blue"}


class _Interrupted(Exception):
    pass


def test_an_interrupted_pretraining_resumes_to_the_same_weights(tmp_path, scenes) -> None:
    """Stopped after its step-8 state was saved (at step 12's evaluation, before the final
    folder): a run with other settings is refused by name; the same run again goes on from step 8
    and ends with the uninterrupted run's weights and evaluation history, bit for bit, and drops
    the resumable state once the final folder is written."""
    config = preset("evo1-sim")
    section = PretrainSection(steps=12, batch_size=4, lr=3e-3, warmup_steps=2, eval_every=6, save_every=4, device="cpu")
    quiet = lambda *_: None  # noqa: E731

    def stop_at_12(message: str) -> None:
        if message.startswith("step 12 "):
            raise _Interrupted

    whole = pretrain(config, scenes, scenes, section, tmp_path / "whole", log=quiet)
    with pytest.raises(_Interrupted):
        pretrain(config, scenes, scenes, section, tmp_path / "cut", log=stop_at_12)
    assert not (tmp_path / "cut" / "final").exists() and (tmp_path / "cut" / "resume" / "state.json").is_file()
    other = PretrainSection(**{**section.__dict__, "lr": 1e-3})
    with pytest.raises(ValueError, match="resume is the resumable state of a run with other settings"):
        pretrain(config, scenes, scenes, other, tmp_path / "cut", log=quiet)
    lines: list[str] = []
    resumed = pretrain(config, scenes, scenes, section, tmp_path / "cut", log=lines.append)
    assert any("resuming stage 0 after step 8" in line for line in lines)
    assert [(r["step"], r["loss"]) for r in resumed["history"]] == [(r["step"], r["loss"]) for r in whole["history"]]
    a, b = load_vlm(tmp_path / "whole" / "final"), load_vlm(tmp_path / "cut" / "final")
    for key, value in a.state_dict().items():
        assert torch.equal(b.state_dict()[key], value), key
    assert not (tmp_path / "cut" / "resume").exists(), "a finished run keeps its resumable state"
