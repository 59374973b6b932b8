"""An episode: what the robot saw, its state and the commanded action at each control step.

Every reader (bags, LeRobot v2.1/v3) produces these; training windows and evaluation read them.
Images are stored decoded (RGB uint8), each camera as one (T, H, W, 3) array.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class DatasetError(ValueError):
    """Unusable data; the message names the file, the episode and, where it applies, the frame."""


@dataclass
class Episode:
    source: str  # file or folder it came from, for messages
    index: int
    instruction: str
    fps: float
    camera_names: list[str]
    images: list[np.ndarray]  # per camera, (T, H, W, 3) uint8
    states: np.ndarray  # (T, S)
    actions: np.ndarray  # (T, A): the action commanded at each step
    state_names: list[str] = field(default_factory=list)
    action_names: list[str] = field(default_factory=list)
    timestamps: np.ndarray | None = None  # (T,) seconds from the episode start
    start_time: float = 0.0  # the first step's time on the recording's clock (bags: header stamps)
    takeover: np.ndarray | None = None  # (T,) bool: steps an operator had taken over from a policy

    @property
    def length(self) -> int:
        return int(self.states.shape[0])

    def where(self, frame: int | None = None) -> str:
        place = f"{self.source}, episode {self.index}"
        return place if frame is None else f"{place}, frame {frame}"

    def validate(self, horizon: int) -> None:
        t = self.length
        if t == 0:
            raise DatasetError(f"{self.where()}: the episode is empty")
        if t < horizon:
            raise DatasetError(f"{self.where()}: {t} steps, shorter than the action horizon {horizon}")
        if self.actions.shape[0] != t or any(img.shape[0] != t for img in self.images):
            raise DatasetError(f"{self.where()}: states, actions and images have different lengths")
        for name, array in (("state", self.states), ("action", self.actions)):
            bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
            if len(bad):
                raise DatasetError(f"{self.where(int(bad[0]))}: {name} contains NaN or inf")
        if not self.instruction.strip():
            raise DatasetError(f"{self.where()}: no instruction")

    def action_window(self, start: int, horizon: int) -> np.ndarray:
        """Actions start .. start + horizon - 1, padded with the last action past the end."""
        index = np.minimum(np.arange(start, start + horizon), self.length - 1)
        return self.actions[index]


def check_consistent(episodes: list[Episode]) -> None:
    """All episodes must name the same joints and cameras, in the same order."""
    first = episodes[0]
    for episode in episodes[1:]:
        for what in ("state_names", "action_names", "camera_names"):
            ours, theirs = getattr(first, what), getattr(episode, what)
            if ours and theirs and ours != theirs:
                raise DatasetError(f"{episode.where()}: {what} {theirs} differ from {first.where()}'s {ours}")
        if episode.states.shape[1] != first.states.shape[1] or episode.actions.shape[1] != first.actions.shape[1]:
            raise DatasetError(f"{episode.where()}: state/action dims differ from {first.where()}")
