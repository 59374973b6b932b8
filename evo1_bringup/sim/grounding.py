"""Does a policy listen? Vision-language pretraining on the simulator's scenes, and the two checks
of grounding that need no ROS: VQA accuracy of a backbone on held-out scenes, and the first-chunk
probe (where the first predicted chunk takes the fingertip, asked once per cube).

`evo1 pretrain-vlm CONFIG`, `evo1 vqa-eval`, `evo1 sim-probe`; docs/sim.md has the figures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evo1_policy.settings import load_yaml
from evo1_policy.training.config import PretrainSection

from .scene import CUBE_COLORS, Scene, instruction_for, random_placement, start_pose
from .seeds import EVAL_SEED_START
from .vqa import HELD_OUT_SEED_START, TRAIN_SEED_START, render_vqa_set


@dataclass
class ModelPart:
    preset: str = "evo1-sim"


@dataclass
class SceneData:
    train_scenes: int = 10000
    held_out_scenes: int = 500
    camera: str = "front"
    render_size: int = 224  # what the simulated camera sends; the preset resizes it
    cube_counts: list[float] = field(default_factory=lambda: [0.2, 0.2, 0.6])  # one, two, three cubes


@dataclass
class PretrainConfig:
    model: ModelPart = field(default_factory=ModelPart)
    data: SceneData = field(default_factory=SceneData)
    pretrain: PretrainSection = field(default_factory=PretrainSection)
    output: str = "runs/vlm_sim"

    @classmethod
    def load(cls, path: str | None, overrides: list[str] | None = None) -> PretrainConfig:
        return load_yaml(cls, path, overrides, "pretraining config key")


def held_out_set(image_size: int, scenes: int, camera: str = "front", render_size: int = 224) -> Any:
    seeds = range(HELD_OUT_SEED_START, HELD_OUT_SEED_START + scenes)
    return render_vqa_set(seeds, image_size, camera, render_size)


def pretrain_vlm(config: PretrainConfig, log: Any = print) -> dict[str, Any]:
    from evo1_policy.config import preset
    from evo1_policy.training.vlm_pretrain import pretrain

    model_config = preset(config.model.preset)
    size, d = model_config.vision.image_size, config.data
    started = time.perf_counter()
    counts = tuple(float(c) for c in d.cube_counts)
    train = render_vqa_set(
        range(TRAIN_SEED_START, TRAIN_SEED_START + d.train_scenes), size, d.camera, d.render_size, counts
    )
    test = held_out_set(size, d.held_out_scenes, d.camera, d.render_size)
    log(f"rendered {d.train_scenes} + {d.held_out_scenes} scenes in {time.perf_counter() - started:.0f} s")
    extras = {"render_seconds": time.perf_counter() - started}
    return pretrain(model_config, train, test, config.pretrain, config.output, log, extras)


def vqa_eval(vlm: str, checkpoint: str | None = None, scenes: int = 500) -> dict[str, float]:
    """Held-out VQA accuracy of a pretrained VLM folder; with a policy checkpoint, of that policy's
    backbone read by the VLM's language head (does action training keep the grounding?)."""
    from evo1_policy.checkpoint import load_checkpoint
    from evo1_policy.tokenizer import PromptTokenizer
    from evo1_policy.training.vlm_pretrain import evaluate, load_vlm

    model = load_vlm(vlm)
    if checkpoint:
        policy_model, _, _, _ = load_checkpoint(checkpoint)
        mine, theirs = model.config, policy_model.config
        if (mine.vision, mine.text, mine.instruction_first) != (theirs.vision, theirs.text, theirs.instruction_first):
            raise ValueError(f"{checkpoint}'s backbone does not have the sizes and prompt order of {vlm}")
        model.backbone.load_state_dict(policy_model.embedder.float().state_dict())
    test = held_out_set(model.config.vision.image_size, scenes)
    return evaluate(model, test, PromptTokenizer.from_dir())


def first_chunk_probe(checkpoint: str, scenes: int = 30, seed_start: int = EVAL_SEED_START) -> dict[str, Any]:
    """From the first frame of `scenes` evaluation placements (the simulator's camera at the start
    pose), ask the policy once per cube and follow its first chunk with the arm's kinematics.

    For each (scene, cube asked): how much closer the chunk's last step brings the fingertip to
    each cube (cm). "heads_to_named" counts the asks where the named cube gains the most;
    ignoring the instruction scores about a third."""
    from evo1_policy.policy import Evo1Policy

    from ..paths import checkpoint_path

    policy = Evo1Policy.from_checkpoint(str(checkpoint_path(checkpoint)), device="cpu")
    scene = Scene(["front"], 224, 224)
    colours = list(CUBE_COLORS)
    named_gain, other_gain, headed = [], [], 0
    per_colour = {c: [0, 0] for c in colours}
    try:
        for seed in range(seed_start, seed_start + scenes):
            placement = random_placement(seed)
            pose = start_pose(seed)
            scene.place(placement)
            scene.pose(pose)
            image = scene.render("front")
            before = {c: scene.distance_to(c) for c in colours}
            state = pose[: policy.state_dim]
            for colour in colours:
                chunk = policy.predict_chunk([image], state, instruction_for(colour), seed=seed)
                scene.pose(chunk[-1])
                gain = {c: (before[c] - scene.distance_to(c)) * 100 for c in colours}
                scene.pose(pose)
                named_gain.append(gain[colour])
                other_gain += [g for c, g in gain.items() if c != colour]
                best = max(gain, key=gain.__getitem__) == colour
                headed += best
                per_colour[colour][0] += best
                per_colour[colour][1] += 1
    finally:
        scene.close()
    asks = scenes * len(colours)
    return {
        "checkpoint": str(checkpoint),
        "scenes": scenes,
        "seed_start": seed_start,
        "heads_to_named": headed / asks,
        "per_colour": {c: hit / n for c, (hit, n) in per_colour.items()},
        "named_cube_gain_cm": float(np.mean(named_gain)),
        "other_cubes_gain_cm": float(np.mean(other_gain)),
    }


def format_probe(result: dict[str, Any]) -> str:
    colours = ", ".join(f"{c} {v:.0%}" for c, v in result["per_colour"].items())
    return (
        f"first-chunk probe of {result['checkpoint']} on {result['scenes']} placements "
        f"(seeds {result['seed_start']}..), each cube asked once:\n"
        f"  heads to the named cube: {result['heads_to_named']:.0%} ({colours}; ignoring the words scores ~33%)\n"
        f"  fingertip gain toward the named cube {result['named_cube_gain_cm']:.1f} cm, "
        f"toward the others {result['other_cubes_gain_cm']:.1f} cm"
    )
