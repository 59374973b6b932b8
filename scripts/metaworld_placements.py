"""Where Meta-World puts things in the demonstrations and in the scored episodes (issue 25, item 4).

metaworld 3.1 ignores `reset(seed=...)`: each environment draws its placements from the random
state it was built with, one draw per reset. So the recorder's placements are the first N resets
of an environment built with seed 0, and the scored ones the first 10 of one built with 4042 (the
same calls `evo1 metaworld-record` and `metaworld-eval` make, without rendering). Per task: how
many distinct placements the demonstrations had, which coordinates vary at all, and how far each
scored placement is from the nearest demonstrated one (metres, over the object, second object and
goal positions of the observation). The script first checks, on one task, that stepping an episode
does not move the draws on (so resets alone replay the recorder's sequence).

    .venv/bin/python scripts/metaworld_placements.py [--tasks MT10] [--episodes 24] > placements.json
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from evo1_policy.metaworld.protocol import EPISODES, SEED, select_tasks
from evo1_policy.metaworld.record import RECORD_SEED
from evo1_policy.metaworld.rollout import mt50_envs

# obs[4:7] first object, obs[11:14] second object, obs[36:39] goal (metaworld's 39-value observation)
PLACEMENT = np.r_[4:7, 11:14, 36:39]
SAME = 1e-6  # metres: placements closer than this are the same placement


def placements(env: object, seed: int, count: int, steps_between: int = 0) -> np.ndarray:
    rows = []
    for episode in range(count):
        obs, _ = env.reset(seed=seed + episode)
        rows.append(np.asarray(obs, float)[PLACEMENT])
        for _ in range(steps_between):
            env.step(env.action_space.sample())
    return np.array(rows)


def distinct(rows: np.ndarray) -> int:
    kept: list[np.ndarray] = []
    for row in rows:
        if not any(np.abs(row - k).max() < SAME for k in kept):
            kept.append(row)
    return len(kept)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="MT10")
    parser.add_argument("--episodes", type=int, default=24, help="demonstration tries per task (the recipe's 24)")
    args = parser.parse_args()
    tasks = select_tasks(args.tasks)
    with mt50_envs(RECORD_SEED) as envs:
        probe = envs[tasks[0].index]
        stepped = placements(probe, RECORD_SEED, 3, steps_between=60)
    with mt50_envs(RECORD_SEED) as envs:  # restored to the just-built state
        if not np.allclose(stepped, placements(envs[tasks[0].index], RECORD_SEED, 3)):
            raise SystemExit("stepping an episode moved the placement draws on: resets alone do not replay it")
        demonstrated = {t.env_name: placements(envs[t.index], RECORD_SEED, args.episodes) for t in tasks}
    with mt50_envs(SEED) as envs:
        scored = {t.env_name: placements(envs[t.index], SEED, EPISODES) for t in tasks}
    report = {}
    for task in tasks:
        train, test = demonstrated[task.env_name], scored[task.env_name]
        both = np.vstack([train, test])
        varying = [int(i) for i in PLACEMENT[np.ptp(both, axis=0) > SAME]]
        nearest = [float(np.min(np.linalg.norm(train - row, axis=1))) for row in test]
        report[task.env_name] = {
            "group": task.group,
            "demonstration_placements": distinct(train),
            "of_tries": len(train),
            "varying_observation_indices": varying,
            "scored_distinct": distinct(test),
            "scored_equal_to_a_demonstrated_one": sum(d < SAME for d in nearest),
            "nearest_demonstrated_m": {"min": min(nearest), "median": float(np.median(nearest)), "max": max(nearest)},
            "range_m": {str(i): [float(both[:, k].min()), float(both[:, k].max())] for k, i in enumerate(PLACEMENT)
                        if int(i) in varying},
        }  # fmt: skip
    print(json.dumps({"record_seed": RECORD_SEED, "scored_seed": SEED, "tasks": report}, indent=1))


if __name__ == "__main__":
    main()
