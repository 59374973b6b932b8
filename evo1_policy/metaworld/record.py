"""`evo1 metaworld-record`: metaworld's scripted experts, observed exactly as the evaluation
observes (corner2, the reference's image chain, obs[:8]), written as a LeRobot dataset that
`evo1 train` reads (data.lerobot). Only successful episodes are kept; the count says how many
were tried.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ..data.episode import Episode
from ..data.lerobot import check_output, write_lerobot
from ..images import resize_square
from .protocol import ACTION_DIMS, CHUNK, IMAGE_SIZE, STATE_DIMS, select_tasks
from .rollout import expert_controller, mt50_envs, reference_executor, run_episode

FPS = 80  # metaworld steps 5 x 2.5 ms of physics per action
RECORD_SEED = 0  # not the evaluation's 4042: demonstrations come from other task variants
STATE_NAMES = ["hand_x", "hand_y", "hand_z", "gripper", "object_x", "object_y", "object_z", "object_qw"]
ACTION_NAMES = ["delta_x", "delta_y", "delta_z", "gripper_effort"]


def record(
    out: str | Path,
    tasks: str = "MT10",
    episodes: int = 20,
    seed: int = RECORD_SEED,
    image_size: int = IMAGE_SIZE,
    min_steps: int = CHUNK,
    lossless: bool = True,
    overwrite: bool = False,
    log: Any = print,
) -> dict[str, Any]:
    """`episodes` tries per task; each kept episode runs to success and on to `min_steps` steps
    (so every frame has a full chunk ahead; the evaluation stops at success). Frames are stored at
    `image_size` (the 448 px frame shrunk as the policy would: OpenCV area filter)."""
    chosen = select_tasks(tasks)
    check_output(out, overwrite)  # fail before an hour of rendering
    kept: list[Episode] = []
    counts: dict[str, dict[str, int]] = {}
    start = time.monotonic()
    with mt50_envs(seed) as envs:
        for task in chosen:
            env, tried, ok = envs[task.index], 0, 0
            for episode in range(episodes):
                controller = expert_controller(task.env_name)
                executor = reference_executor(execute_steps=1)  # observe before every step
                result = run_episode(
                    env, task, episode, controller, executor, seed, record=True, min_record_steps=min_steps
                )
                tried += 1
                if not result.success:
                    continue
                ok += 1
                images = np.stack([resize_square(f, image_size) for f in result.record["image"]])
                kept.append(
                    Episode(
                        source=f"metaworld {task.env_name} seed {seed + episode}",
                        index=len(kept),
                        instruction=task.prompt,
                        fps=FPS,
                        camera_names=["corner2"],
                        images=[images],
                        states=np.asarray(result.record["state"], dtype=np.float64).reshape(-1, STATE_DIMS),
                        actions=np.asarray(result.record["action"], dtype=np.float64).reshape(-1, ACTION_DIMS),
                        state_names=STATE_NAMES,
                        action_names=ACTION_NAMES,
                        timestamps=np.arange(len(images)) / FPS,
                    )
                )
            counts[task.env_name] = {"tried": tried, "kept": ok}
            log(f"{task.env_name}: kept {ok} of {tried} expert episodes ({time.monotonic() - start:.0f} s so far)")
    if not kept:
        raise ValueError("the experts succeeded in no episode: nothing to write")
    root = write_lerobot(out, kept, "v3.0", lossless, "sawyer", overwrite)
    frames = sum(e.length for e in kept)
    summary = {"out": str(root), "episodes": len(kept), "frames": frames, "per_task": counts, "seed": seed}
    log(f"wrote {root}: {len(kept)} episodes, {frames} frames, {time.monotonic() - start:.0f} s")
    return summary
