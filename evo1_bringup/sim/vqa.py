"""Questions and answers about the simulator's scenes, for the backbone's vision-language
pretraining (`evo1 pretrain-vlm`, evo1_policy.training.vlm_pretrain). Rendered on the fly from seeds, no
bags: a scene takes a few milliseconds, so millions are cheap.

A scene: one to three of the cubes on the table (placed as episodes place them), the arm at an
episode's start pose or part of the way along the expert's reach toward one of them (so the arm
covers the table as it does in demonstrations), seen by the policy's camera at its resolution.

Answer words, in the arm's frame (it looks along +x; its left is +y):
- a cell: "near"/"far" (x, split at the middle of the placement area) then "left"/"middle"/"right"
  (y, thirds), e.g. "far left";
- colours, "one"/"two"/"three", "yes"/"no", "none".

Question kinds (the report gives accuracy per kind):
- where:     "where is the red cube" -> a cell
- touch:     "touch the red" -> a spot: one letter naming a cell of a finer grid (4 rows x 6
             columns of about 4 x 7 cm, "a" near left .. "x" far right). The policy's instruction
             "touch the red cube" starts with exactly these tokens, and in a causal language model
             the colour word's hidden state depends on nothing after it: pretraining this question
             puts the named cube's place in the very hidden state the action head later reads. The
             answer is one token so that all of it is predicted from that hidden state (the second
             word of "far left" would be predicted from the position of "far").
- colour_at: "what colour is the cube on the left" -> a colour (the leftmost of those on the table)
- count:     "how many cubes" -> a number word
- left_of:   "is the red cube left of the blue cube" -> yes/no
- what_at:   "which cube is far left" -> a colour, or "none"
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from evo1_policy.data.vqa import VQAItem, VQASet
from evo1_policy.images import resize_square

from .expert import ReachExpert
from .scene import CUBE_COLORS, PLACEMENT_HIGH, PLACEMENT_LOW, Placement, Scene, random_placement, start_pose

ROWS = ("near", "far")
COLUMNS = ("left", "middle", "right")
NUMBERS = ("one", "two", "three")
KINDS = ("where", "touch", "colour_at", "count", "left_of", "what_at")
# Seeds of the scenes (far from the episodes' 0.., 1000.. and evaluation's 100000..)
TRAIN_SEED_START = 2_000_000
HELD_OUT_SEED_START = 3_000_000
OFF_TABLE = np.array([5.0, 5.0])  # where a cube that is not in the scene goes
# Questions whose answer a few millimetres would flip are not asked (CLEVR rejects ambiguous
# relations the same way): a cube's cell only when its centre is this far from every cell edge,
# a left/right order only when the cubes are this far apart sideways.
MARGIN = 0.01
SPOT_ROWS, SPOT_COLUMNS = 4, 6
SPOT_LETTERS = "abcdefghijklmnopqrstuvwx"  # one Qwen2 token each
SPOT_MARGIN = 0.005  # the fine cells are small: half a centimetre from their edges


def cell_of(xy: np.ndarray) -> tuple[str, str]:
    """(row, column) words of a table position."""
    fraction = (np.asarray(xy, dtype=np.float64) - PLACEMENT_LOW) / (PLACEMENT_HIGH - PLACEMENT_LOW)
    row = ROWS[int(fraction[0] >= 0.5)]
    column = COLUMNS[2 - int(np.clip(fraction[1] * 3, 0, 2))]  # +y is the arm's left
    return row, column


def cell_words(xy: np.ndarray) -> str:
    return " ".join(cell_of(xy))


def spot_of(xy: np.ndarray) -> str | None:
    """The fine cell's letter of a table position, row by row from near left; None when the
    position lies within SPOT_MARGIN of a fine cell's edge (or off the placement area)."""
    fraction = (np.asarray(xy, dtype=np.float64) - PLACEMENT_LOW) / (PLACEMENT_HIGH - PLACEMENT_LOW)
    scaled = np.array([fraction[0] * SPOT_ROWS, (1 - fraction[1]) * SPOT_COLUMNS])  # +y is the arm's left
    cell = np.floor(scaled).astype(int)
    if np.any(cell < 0) or cell[0] >= SPOT_ROWS or cell[1] >= SPOT_COLUMNS:
        return None
    edge_distance = np.minimum(scaled - cell, cell + 1 - scaled) / np.array([SPOT_ROWS, SPOT_COLUMNS])
    if np.any(edge_distance * (PLACEMENT_HIGH - PLACEMENT_LOW) < SPOT_MARGIN):
        return None
    return SPOT_LETTERS[cell[0] * SPOT_COLUMNS + cell[1]]


def clear_of_cell_edges(xy: np.ndarray, margin: float = MARGIN) -> bool:
    """Whether a position's cell is unambiguous: at least `margin` from every inner cell edge."""
    low, high = PLACEMENT_LOW, PLACEMENT_HIGH
    x_edge = (low[0] + high[0]) / 2
    y_edges = low[1] + (high[1] - low[1]) * np.array([1 / 3, 2 / 3])
    return abs(xy[0] - x_edge) >= margin and bool(np.all(np.abs(xy[1] - y_edges) >= margin))


def scene_layout(seed: int, cube_counts: tuple[float, float, float]) -> tuple[Placement, list[str], np.ndarray, int]:
    """The placement (all three cubes, as an episode of this seed), the colours shown, the start
    pose, and how many expert steps the arm has taken toward a shown cube (0: at the start)."""
    rng = np.random.default_rng([seed, 7])
    placement = random_placement(seed)
    count = 1 + int(rng.choice(3, p=np.asarray(cube_counts) / sum(cube_counts)))
    shown = sorted(rng.choice(list(CUBE_COLORS), size=count, replace=False).tolist())
    steps = int(rng.integers(0, 40)) if rng.random() < 0.6 else 0
    target = shown[int(rng.integers(len(shown)))]
    return Placement(placement.cubes, target), shown, start_pose(seed), steps


def questions(placement: Placement, shown: list[str], rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """(kind, question, answer) about one scene: every shown colour's place, asked both ways, and
    one question of each other kind."""
    cubes = {c: placement.cubes[c] for c in shown}
    out: list[tuple[str, str, str]] = []
    for colour, xy in cubes.items():
        if clear_of_cell_edges(xy):
            out.append(("where", f"where is the {colour} cube", cell_words(xy)))
        spot = spot_of(xy)
        if spot is not None:
            out.append(("touch", f"touch the {colour}", spot))
    out.append(("count", "how many cubes", NUMBERS[len(shown) - 1]))
    by_y = sorted(shown, key=lambda c: -cubes[c][1])  # leftmost first
    sides = {2: ("left", "right"), 3: ("left", "middle", "right")}.get(len(shown))
    sideways_gaps = -np.diff([cubes[c][1] for c in by_y])
    if sides and sideways_gaps.min() >= 2 * MARGIN:
        k = int(rng.integers(len(sides)))
        out.append(("colour_at", f"what colour is the cube on the {sides[k]}", by_y[k]))
        a, b = rng.choice(shown, size=2, replace=False).tolist()
        out.append(("left_of", f"is the {a} cube left of the {b} cube", "yes" if cubes[a][1] > cubes[b][1] else "no"))
    if not all(clear_of_cell_edges(xy) for xy in cubes.values()):
        return out  # "which cube is in this cell" needs every cube's cell to be clear
    occupied = {cell_words(xy): c for c, xy in cubes.items()}
    if rng.random() < 0.5:
        cell = list(occupied)[int(rng.integers(len(occupied)))]
    else:
        cell = f"{ROWS[int(rng.integers(2))]} {COLUMNS[int(rng.integers(3))]}"
    out.append(("what_at", f"which cube is {cell}", occupied.get(cell, "none")))
    return out


def render_vqa_set(
    seeds: Iterable[int],
    image_size: int,
    camera: str = "front",
    render_size: int = 224,
    cube_counts: tuple[float, float, float] = (0.2, 0.2, 0.6),
) -> VQASet:
    """Scenes from `seeds`, rendered as the simulated camera sends them (render_size) and resized
    as the policy resizes them (image_size), with their questions."""
    scene = Scene([camera], render_size, render_size)
    scratch = Scene([camera], render_size, render_size)  # the expert's own copy for its IK
    images, items = [], []
    try:
        for index, seed in enumerate(seeds):
            placement, shown, pose, steps = scene_layout(seed, cube_counts)
            if steps:
                expert = ReachExpert(scratch, placement, pose, dt=0.05)
                pose = expert.plan(steps)[-1]
            on_table = {c: (xy if c in shown else OFF_TABLE + i) for i, (c, xy) in enumerate(placement.cubes.items())}
            scene.place(Placement(on_table, placement.target))
            scene.pose(pose)
            images.append(resize_square(scene.render(camera), image_size)[None])
            rng = np.random.default_rng([seed, 8])
            items += [VQAItem(index, q, a, kind) for kind, q, a in questions(placement, shown, rng)]
    finally:
        scene.close()
        scratch.close()
    return VQASet(np.stack(images), items)
