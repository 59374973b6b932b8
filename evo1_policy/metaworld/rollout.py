"""Meta-World episodes as the reference's client runs them, for any controller: a policy's chunks,
metaworld's scripted experts, or uniform random actions.

The environments are built exactly as the reference builds them (`gym.make_vec("Meta-World/MT50",
seed=SEED, camera_name="corner2")`, all 50, picked by index), and each episode repeats its calls
in its order: reset(seed=SEED + episode), one zero action, then observe / act until success or
MAX_STEPS. Metaworld draws each episode's task variant (object and goal placement) from the
environment's own random state, so the same calls give the same placements as the reference's run.
No torch here: the policy comes in as a function.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..chunking import ChunkExecutor
from ..headless import use_headless_gl
from .protocol import (
    CAMERA,
    EXECUTE_STEPS,
    MAX_STEPS,
    SEED,
    SUITE,
    Task,
    env_action,
    observation_image,
    observation_state,
)

# A chunk source: (448 x 448 RGB frame, 8-value state, prompt, metaworld's full 39-value
# observation) -> (N, >= 4) actions. A policy reads the first three, as the reference's server
# does; the scripted experts need the last. The rollout executes the first `execute_steps` rows.
ChunkFn = Callable[[np.ndarray, np.ndarray, str, np.ndarray], np.ndarray]


class MetaWorldUnavailable(RuntimeError):
    """metaworld (or its renderer) cannot be used here; the message says how to install it."""


def import_metaworld() -> Any:
    use_headless_gl()
    try:
        import gymnasium as gym
        import metaworld  # noqa: F401  (registers the Meta-World/* environments)
    except ImportError as error:
        raise MetaWorldUnavailable(
            f"metaworld is not installed ({error}); `bash scripts/setup.sh` installs it "
            "(pip install --no-deps metaworld==3.1.1 gymnasium scipy imageio)"
        ) from None
    gym.logger.min_level = gym.logger.ERROR
    return gym


# Built environments by seed, with each one's checkpoint taken right after building. Building
# MT50 costs about 30 s on 2 cores (metaworld resets every environment 50 times to draw its task
# variants), and an evaluation with bounds needed three identical builds. They live as long as the
# process (closing them at exit raced the GL display's own teardown: EGL errors on the way out).
_BUILT: dict[int, tuple[Any, list[Any]]] = {}


@contextmanager
def mt50_envs(seed: int = SEED) -> Iterator[list[Any]]:
    """The 50 environments in metaworld's MT50 order, built as the reference builds them, each as
    it was just after building: the first call builds them, later calls with the same seed load
    the checkpoint metaworld's own CheckpointWrapper took then (the task list, the task-select and
    environment random states, which draw every placement), so every controller sees the same
    placements a fresh build would give (test_metaworld checks it against a fresh build)."""
    if seed not in _BUILT:
        gym = import_metaworld()
        envs = gym.make_vec(SUITE, vector_strategy="sync", seed=seed, render_mode="rgb_array", camera_name=CAMERA)
        _BUILT[seed] = (envs, [env.get_checkpoint() for env in envs.envs])
    envs, checkpoints = _BUILT[seed]
    for env in envs.envs:
        env.load_checkpoint(checkpoints)
    yield list(envs.envs)


@dataclass
class EpisodeResult:
    task: str
    episode: int
    success: bool
    steps: int  # env steps taken (success ends the episode at once)
    chunks: int  # observations sent to the controller
    frames: list[np.ndarray] = field(default_factory=list)  # the observed frames, when kept
    record: dict[str, list[np.ndarray]] = field(default_factory=dict)  # per step: image, state, action


def run_episode(
    env: Any,
    task: Task,
    episode: int,
    controller: ChunkFn,
    executor: ChunkExecutor,
    seed: int = SEED,
    max_steps: int = MAX_STEPS,
    keep_frames: bool = False,
    record: bool = False,
    min_record_steps: int = 0,
    render: bool = True,
) -> EpisodeResult:
    """One episode with the reference's calls. The executor decides when to observe and what to
    execute: with `execute_steps` 15 and merge "latest_only" it is the reference's client (observe,
    run 15 actions of the chunk, observe again). `record` keeps every step's frame, state and
    executed action (demonstrations; use execute_steps 1). `min_record_steps` lets a recorded
    episode run on past success to that many steps (a full chunk for every frame); the success
    is counted where it happened. `render` False skips the camera for controllers that do not look
    (experts, random actions): they get a 1 x 1 black frame."""
    blank = np.zeros((1, 1, 3), dtype=np.uint8)
    obs, _ = env.reset(seed=seed + episode)
    obs, *_ = env.step(np.zeros(env.action_space.shape, dtype=np.float32))
    executor.reset()
    result = EpisodeResult(task.env_name, episode, False, 0, 0)
    if record:
        result.record = {"image": [], "state": [], "action": []}
    steps, success = 0, False
    frame = state = None
    while steps < max_steps:
        tick = steps - 1  # the tick of the last executed action
        if executor.prefix_done(tick):
            frame = observation_image(env.render()) if render else blank
            state = observation_state(obs)
            if keep_frames:
                result.frames.append(frame)
            executor.merge(np.atleast_2d(controller(frame, state, task.prompt, np.asarray(obs))), tick, tick)
            result.chunks += 1
        action = env_action(executor.upcoming(tick, 1)[0])
        if record:
            result.record["image"].append(frame)
            result.record["state"].append(state)
            result.record["action"].append(action)
        obs, _, terminated, truncated, info = env.step(action)
        steps += 1
        if not success and float(info.get("success", 0.0)) == 1.0:
            success, result.steps = True, steps
        if (success and steps >= min_record_steps) or terminated or truncated:
            break
    result.success = success
    result.steps = result.steps or steps
    return result


def reference_executor(execute_steps: int = EXECUTE_STEPS) -> ChunkExecutor:
    """The reference client's execution: the first `execute_steps` of each chunk as predicted."""
    return ChunkExecutor(execute_steps, merge="latest_only")


def expert_controller(env_name: str) -> ChunkFn:
    """metaworld's scripted policy for the task (it reads the full observation): the upper bound."""
    from metaworld.policies import ENV_POLICY_MAP

    policy = ENV_POLICY_MAP[env_name]()

    def act(_frame: np.ndarray, _state: np.ndarray, _prompt: str, obs: np.ndarray) -> np.ndarray:
        return np.asarray(policy.get_action(obs), dtype=np.float32)[None]

    return act


def random_controller(seed: int) -> ChunkFn:
    """Uniform actions in [-1, 1]^4: the lower bound."""
    rng = np.random.default_rng(seed)

    def act(_frame: np.ndarray, _state: np.ndarray, _prompt: str, _obs: np.ndarray) -> np.ndarray:
        return rng.uniform(-1.0, 1.0, size=(1, 4)).astype(np.float32)

    return act
