"""The reference's Meta-World evaluation protocol (MINT-SJTU/Evo-1, MetaWorld_evaluation/), as data.

Everything here is a fact about how the released `Evo1_MetaWorld` checkpoint is scored: the camera
and the image chain, the 8-value state, the prompts and the task order, the episode rules and the
difficulty groups. docs/metaworld.md has the table (reference setting, ours, where). No torch and
no metaworld import: the table is checked by a fast test against the installed simulator.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SUITE = "Meta-World/MT50"  # the reference builds all 50 environments, then picks tasks by index
SEED = 4042  # gym.make_vec(seed=...) and reset(seed=SEED + episode): the reference's, for reported figures
VALIDATION_SEED = 2042  # ours, for choosing checkpoints and recipes (recording uses 0)
SPLITS = {"validation": VALIDATION_SEED, "report": SEED}
CAMERA = "corner2"
RENDER_SIZE = 480  # metaworld's default render width and height; the reference does not set them
CROP_KEEP = 2 / 3  # centre crop after the 180 degree turn (corner cameras render upside down)
IMAGE_SIZE = 448  # the crop is resized to this, OpenCV bilinear, before it is sent
STATE_DIMS = 8  # obs[:8]: hand xyz, gripper opening, first object's xyz, first quaternion value
ACTION_DIMS = 4  # chunk[i][:4]: hand delta xyz and gripper effort, clipped to [-1, 1]
EXECUTE_STEPS = 15  # actions executed from each chunk before the next observation
EPISODES = 10  # per task
MAX_STEPS = 400  # per episode; success is info["success"] after any step
CHUNK = 50  # the released model's chunk length
GROUPS = ("easy", "medium", "hard", "very_hard")


@dataclass(frozen=True)
class Task:
    index: int  # position in metaworld's MT50 (and the reference's tasks.jsonl line)
    env_name: str  # metaworld's name
    label: str  # the reference's slug for it (five differ from metaworld's names)
    group: str
    prompt: str  # the instruction the released checkpoint was trained and is scored with


def _task(index: int, env_name: str, group: str, prompt: str, label: str = "") -> Task:
    return Task(index, env_name, label or env_name, group, prompt)


# In metaworld's MT50 order (gym.make_vec("Meta-World/MT50").envs[index]).
TASKS: tuple[Task, ...] = (
    _task(0, "assembly-v3", "hard", "Pick up a nut and place it onto a peg", "nut-assembly-v3"),
    _task(1, "basketball-v3", "medium", "Dunk the basketball into the basket"),
    _task(2, "bin-picking-v3", "medium", "Grasp the puck from one bin and place it into another bin"),
    _task(3, "box-close-v3", "medium", "Grasp the cover and close the box with it"),
    _task(4, "button-press-topdown-v3", "easy", "Press a button from the top"),
    _task(5, "button-press-topdown-wall-v3", "easy", "Bypass a wall and press a button from the top"),
    _task(6, "button-press-v3", "easy", "Press a button"),
    _task(7, "button-press-wall-v3", "easy", "Bypass a wall and press a button"),
    _task(8, "coffee-button-v3", "easy", "Push a button on the coffee machine"),
    _task(9, "coffee-pull-v3", "medium", "Pull a mug from a coffee machine"),
    _task(10, "coffee-push-v3", "medium", "Push a mug under a coffee machine"),
    _task(11, "dial-turn-v3", "easy", "Rotate a dial 180 degrees"),
    _task(12, "disassemble-v3", "very_hard", "Pick a nut out of a peg", "nut-disassemble-v3"),
    _task(13, "door-close-v3", "easy", "Close a door with a revolving joint"),
    _task(14, "door-lock-v3", "easy", "Lock the door by rotating the lock clockwise"),
    _task(15, "door-open-v3", "easy", "Open a door with a revolving joint", "door-v3"),
    _task(16, "door-unlock-v3", "easy", "Unlock the door by rotating the lock counter-clockwise"),
    _task(17, "hand-insert-v3", "hard", "Insert the gripper into a hole"),
    _task(18, "drawer-close-v3", "easy", "Push and close a drawer"),
    _task(19, "drawer-open-v3", "easy", "Open a drawer"),
    _task(20, "faucet-open-v3", "easy", "Rotate the faucet counter-clockwise"),
    _task(21, "faucet-close-v3", "easy", "Rotate the faucet clockwise"),
    _task(22, "hammer-v3", "medium", "Hammer a screw on the wall"),
    _task(23, "handle-press-side-v3", "easy", "Press a handle down sideways"),
    _task(24, "handle-press-v3", "easy", "Press a handle down"),
    _task(25, "handle-pull-side-v3", "easy", "Pull a handle up sideways"),
    _task(26, "handle-pull-v3", "easy", "Pull a handle up"),
    _task(27, "lever-pull-v3", "easy", "Pull a lever down 90 degrees"),
    _task(28, "pick-place-wall-v3", "very_hard", "Pick a puck, bypass a wall and place the puck"),
    _task(29, "pick-out-of-hole-v3", "hard", "Pick up a puck from a hole"),
    _task(30, "pick-place-v3", "hard", "Pick and place a puck to a goal"),
    _task(31, "plate-slide-v3", "easy", "Slide a plate into a cabinet"),
    _task(32, "plate-slide-side-v3", "easy", "Slide a plate into a cabinet sideways"),
    _task(33, "plate-slide-back-v3", "easy", "Get a plate from the cabinet"),
    _task(34, "plate-slide-back-side-v3", "easy", "Get a plate from the cabinet sideways"),
    _task(35, "peg-insert-side-v3", "medium", "Insert a peg sideways", "peg-insertion-side-v3"),
    _task(36, "peg-unplug-side-v3", "easy", "Unplug a peg sideways"),
    _task(37, "soccer-v3", "medium", "Kick a soccer into the goal"),
    _task(38, "stick-push-v3", "very_hard", "Grasp a stick and push a box using the stick"),
    _task(39, "stick-pull-v3", "very_hard", "Grasp a stick and pull a box with the stick"),
    _task(40, "push-v3", "hard", "Push the puck to a goal"),
    _task(41, "push-wall-v3", "medium", "Bypass a wall and push a puck to a goal"),
    _task(42, "push-back-v3", "hard", "Push the puck back to a goal"),
    _task(43, "reach-v3", "easy", "Reach a goal position"),
    _task(44, "reach-wall-v3", "easy", "Bypass a wall and reach a goal"),
    _task(45, "shelf-place-v3", "very_hard", "Pick and place a puck onto a shelf"),
    _task(46, "sweep-into-v3", "medium", "Sweep a puck into a hole", "sweep-into-goal-v3"),
    _task(47, "sweep-v3", "medium", "Sweep a puck off the table"),
    _task(48, "window-open-v3", "easy", "Push and open a window"),
    _task(49, "window-close-v3", "easy", "Push and close a window"),
)
BY_NAME = {t.env_name: t for t in TASKS} | {t.label: t for t in TASKS}

MT10 = (
    "reach-v3",
    "push-v3",
    "pick-place-v3",
    "door-open-v3",
    "drawer-open-v3",
    "drawer-close-v3",
    "button-press-topdown-v3",
    "peg-insert-side-v3",
    "window-open-v3",
    "window-close-v3",
)


def select_tasks(spec: str) -> list[Task]:
    """MT50, MT10, a group name (easy, medium, hard, very_hard) or comma-separated task names, in
    the reference's evaluation order: by group (easy first), then by MT50 index."""
    spec = spec.strip()
    if spec.upper() == "MT50":
        chosen = list(TASKS)
    elif spec.upper() == "MT10":
        chosen = [BY_NAME[name] for name in MT10]
    elif spec in GROUPS:
        chosen = [t for t in TASKS if t.group == spec]
    else:
        names = [n.strip() for n in spec.split(",") if n.strip()]
        unknown = [n for n in names if n not in BY_NAME]
        if unknown or not names:
            raise ValueError(
                f"unknown Meta-World task(s) {unknown or spec!r}: use MT50, MT10, one of {', '.join(GROUPS)}, "
                "or metaworld names such as reach-v3,push-v3"
            )
        chosen = list({BY_NAME[n].index: BY_NAME[n] for n in names}.values())
    return sorted(chosen, key=lambda t: (GROUPS.index(t.group), t.index))


def observation_image(rendered: np.ndarray) -> np.ndarray:
    """A `corner2` render (RENDER_SIZE square, RGB, upside down) -> the 448 x 448 RGB frame the
    reference's client sends: turned 180 degrees, centre-cropped to 2/3, resized bilinearly. (The
    client converts to BGR and the server back to RGB; the model sees RGB.)"""
    rgb = np.ascontiguousarray(np.asarray(rendered, dtype=np.uint8)[::-1, ::-1])
    h, w = rgb.shape[:2]
    new_h, new_w = max(1, round(h * CROP_KEEP)), max(1, round(w * CROP_KEEP))
    y0, x0 = (h - new_h) // 2, (w - new_w) // 2
    crop = np.ascontiguousarray(rgb[y0 : y0 + new_h, x0 : x0 + new_w])
    return cv2.resize(crop, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_LINEAR)


def observation_state(obs: np.ndarray) -> np.ndarray:
    """The first STATE_DIMS values of metaworld's 39-value observation, as float32 (the reference
    sends them as JSON floats from a float32 array)."""
    return np.asarray(obs, dtype=np.float32).ravel()[:STATE_DIMS]


def env_action(action: np.ndarray) -> np.ndarray:
    """The first ACTION_DIMS values of one chunk row, clipped to the action space [-1, 1]."""
    return np.clip(np.asarray(action, dtype=np.float32)[:ACTION_DIMS], -1.0, 1.0)


def group_average(per_group: dict[str, float]) -> float:
    """The paper's "average": the mean of the group rates, not of all episodes. On MT50 all four
    groups are present and this is the reference's formula; a subset averages the groups it has."""
    rates = [per_group[g] for g in GROUPS if g in per_group]
    return float(np.mean(rates)) if rates else 0.0
