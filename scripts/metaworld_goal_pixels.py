"""How visible the goal is in what a Meta-World policy sees (issue 25, item 3): for each task, the
scored placements (environment seed 4042) rendered as the reference's client observes them, once
with the goal marker shown and once hidden, shrunk as the policy shrinks them (OpenCV area filter);
the pixels that differ by more than 20 levels are where the goal is visible.

    .venv/bin/python scripts/metaworld_goal_pixels.py [TASK ...] > goal_pixels.json
"""

from __future__ import annotations

import json
import sys

import cv2
import mujoco
import numpy as np

from evo1_policy.metaworld.protocol import BY_NAME, SEED, observation_image
from evo1_policy.metaworld.rollout import mt50_envs

SIZES = (112, 224, 448)
EPISODES = 10


def goal_pixels(env: object) -> dict[int, list[tuple[int, int]]]:
    """Per size: (pixels over 20 levels apart, largest difference) for each episode's first frame."""
    model = env.unwrapped.model
    goal = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "goal")
    shown_rgba = model.site_rgba[goal].copy()
    rows: dict[int, list[tuple[int, int]]] = {size: [] for size in SIZES}
    for episode in range(EPISODES):
        env.reset(seed=SEED + episode)
        env.step(np.zeros(env.action_space.shape, np.float32))
        shown = observation_image(env.render())
        model.site_rgba[goal, 3] = 0.0
        hidden = observation_image(env.render())
        model.site_rgba[goal] = shown_rgba
        for size in SIZES:
            a, b = (cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA).astype(int) for f in (shown, hidden))
            difference = np.abs(a - b).max(axis=2)
            rows[size].append((int((difference > 20).sum()), int(difference.max())))
    return rows


def main(tasks: list[str]) -> None:
    report = {}
    with mt50_envs(SEED) as envs:
        for name in tasks:
            rows = goal_pixels(envs[BY_NAME[name].index])
            report[name] = {
                size: {
                    "pixels_median": float(np.median([p for p, _ in r])),
                    "pixels_min": min(p for p, _ in r),
                    "largest_difference_median": float(np.median([d for _, d in r])),
                    "episodes_without_a_visible_goal": sum(p == 0 for p, _ in r),
                }
                for size, r in rows.items()
            }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:] or ["reach-v3", "pick-place-v3", "push-v3"])
