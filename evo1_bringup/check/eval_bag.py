"""`evo1 eval-bag`: score checkpoints against recorded runs (open loop), per bag and in aggregate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tqdm import tqdm

from evo1_policy.data.episode import DatasetError, Episode
from evo1_policy.data.lerobot import read_lerobot
from evo1_policy.data.rosbag import BagSpec, read_bag
from evo1_policy.evaluation.open_loop import EpisodeResult, evaluate_episode, metrics
from evo1_policy.evaluation.report import write_report
from evo1_policy.policy import Evo1Policy

from ..arm_config import ArmConfig
from ..paths import config_path


def _labels(checkpoints: list[str]) -> list[str]:
    names = [Path(c).name or str(c) for c in checkpoints]
    return names if len(set(names)) == len(names) else [f"{chr(65 + i)}:{n}" for i, n in enumerate(names)]


def read_recordings(paths: list[str], spec: BagSpec) -> tuple[list[str], list[Episode], list[str]]:
    """Bags and LeRobot datasets (a folder with meta/info.json: every episode in it). A recording
    that cannot be read is skipped, with its one-line reason, so one broken bag costs only itself.
    Returns (names, episodes, skipped reasons)."""
    names: list[str] = []
    episodes: list[Episode] = []
    skipped: list[str] = []
    for path in paths:
        try:
            if (Path(path) / "meta" / "info.json").is_file():
                found = read_lerobot(path, spec.image_size)
                names += [f"{path}#episode{e.index}" for e in found]
                episodes += found
            else:
                episodes.append(read_bag(path, spec, None, len(episodes)))
                names.append(path)
        except DatasetError as error:
            skipped.append(str(error))
    return names, episodes, skipped


def eval_bags(
    bags: list[str],
    checkpoint: str,
    arm_config: str = "sim_arm",
    out: str = "eval_report",
    every: int | None = None,
    compare: str | None = None,
    device: str = "cpu",
    seed: int = 0,
    dataset_key: str | None = None,
    action_source: str = "command",
    compile: str = "off",
) -> dict[str, Any]:
    config = ArmConfig.named(arm_config)
    checkpoints = [checkpoint] + ([compare] if compare else [])
    key = dataset_key or config.model.dataset_key or None
    policies = [Evo1Policy.from_checkpoint(c, device=device, dataset_key=key, compile=compile) for c in checkpoints]
    labels = _labels(checkpoints)
    spec = BagSpec.from_arm_config(config, policies[0].config.vision.image_size, action_source)
    names, episodes, skipped = read_recordings(bags, spec)
    if not episodes:
        raise DatasetError("nothing to score, every recording was skipped:\n" + "\n".join(skipped))
    every = every or config.control.execute_steps
    gripper_dims = config.gripper_dims
    total = sum(len(range(0, e.length, every)) for e in episodes) * len(policies)
    results: dict[str, list[EpisodeResult]] = {}
    with tqdm(total=total, desc="eval-bag", unit="chunk", dynamic_ncols=True) as progress:
        for label, policy in zip(labels, policies, strict=True):
            results[label] = [evaluate_episode(policy, e, every, seed, progress) for e in episodes]
    per_bag = {
        label: {name: metrics([r], gripper_dims) for name, r in zip(names, results[label], strict=True)}
        for label in labels
    }
    aggregate = {label: metrics(results[label], gripper_dims) for label in labels}
    extra = {
        "mode": "open loop",
        "checkpoint paths": ", ".join(str(Path(c).resolve()) for c in checkpoints),
        "every": every,
        "arm_config": str(config_path(arm_config)),
        "action source": action_source,
        "bags": names,
        "skipped": skipped,
    }
    frames = [list(e.images[0]) for e in episodes]
    print(write_report(Path(out), results, per_bag, aggregate, extra, frames))
    if skipped:
        print(f"skipped {len(skipped)} recording(s):\n  " + "\n  ".join(skipped))
    print(f"report: {Path(out) / 'index.html'}")
    return {"per_bag": per_bag, "aggregate": aggregate, "results": results}
