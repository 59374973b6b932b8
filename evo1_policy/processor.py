"""Robot-unit observations <-> model tensors: images, state, instruction in; actions out.

The one place where inputs are validated; every error names the problem.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .config import Evo1Config
from .images import as_rgb, normalize_image
from .model import ModelInputs
from .normalize import Normalizer
from .tokenizer import PromptTokenizer


@dataclass
class Observation:
    """What the robot sees and knows at one instant, in robot units.

    images: one entry per camera slot, RGB uint8 (H, W, 3) (grayscale and RGBA are converted;
    convert BGR with images.to_rgb); None for a missing view.
    """

    images: Sequence[np.ndarray | None]
    state: np.ndarray
    instruction: str


class Processor:
    def __init__(self, config: Evo1Config, tokenizer: PromptTokenizer, normalizer: Normalizer):
        if normalizer.state_dim > config.max_state_dim or normalizer.action_dim > config.max_action_dim:
            raise ValueError(
                f"normaliser has {normalizer.state_dim} state / {normalizer.action_dim} action dims; "
                f"the model takes at most {config.max_state_dim} / {config.max_action_dim}"
            )
        self.config = config
        self.tokenizer = tokenizer
        self.normalizer = normalizer

    @property
    def state_dim(self) -> int:
        return self.normalizer.state_dim

    @property
    def action_dim(self) -> int:
        return self.normalizer.action_dim

    def check_state(self, state: np.ndarray) -> np.ndarray:
        state = np.asarray(state, dtype=np.float64)
        if state.shape != (self.state_dim,):
            raise ValueError(f"state has shape {state.shape}; this checkpoint expects ({self.state_dim},)")
        if not np.isfinite(state).all():
            bad = np.flatnonzero(~np.isfinite(state)).tolist()
            raise ValueError(f"state contains NaN or inf at dims {bad}")
        return state

    def check_instruction(self, instruction: str, views: int) -> None:
        """Raise ValueError if the prompt for this instruction and number of views would not fit
        (the tokenizer's rule, counted in tokens, not characters)."""
        c = self.config
        views = c.max_views if c.fixed_view_slots else views
        self.tokenizer.batch([instruction], views, c.tokens_per_view, None, c.max_text_length, c.instruction_first)

    def _images(self, images: Sequence[np.ndarray | None], views: int) -> tuple[np.ndarray, np.ndarray]:
        if len(images) != views:
            raise ValueError(f"observation has {len(images)} camera slots; the batch has {views}")
        size = self.config.vision.image_size
        pixels = np.zeros((views, 3, size, size), dtype=np.float32)
        present = np.zeros(views, dtype=bool)
        for i, image in enumerate(images):
            if image is not None:
                c = self.config
                pixels[i] = normalize_image(as_rgb(image), size, c.image_resize, c.image_normalize_dtype)
                present[i] = True
        if not present.any():
            raise ValueError("every camera view is missing: at least one image is needed")
        return pixels, present

    def inputs(self, observations: Sequence[Observation]) -> ModelInputs:
        if not observations:
            raise ValueError("no observations given")
        views = len(observations[0].images)
        if not 1 <= views <= self.config.max_views:
            raise ValueError(f"{views} camera views given; Evo-1 takes 1 to {self.config.max_views}")
        if self.config.fixed_view_slots and views < self.config.max_views:
            # the reference's prompt always has every slot; the cameras it lacks are missing views
            empty = [None] * (self.config.max_views - views)
            observations = [Observation([*o.images, *empty], o.state, o.instruction) for o in observations]
            views = self.config.max_views
        instructions = []
        for obs in observations:
            if not isinstance(obs.instruction, str) or not obs.instruction.strip():
                raise ValueError("instruction is empty: say what the robot should do")
            instructions.append(obs.instruction)
        pixels, present = zip(*(self._images(obs.images, views) for obs in observations), strict=True)
        states = np.stack([self.check_state(obs.state) for obs in observations])
        state = np.full((len(observations), self.config.max_state_dim), self.normalizer.state_padding, dtype=np.float32)
        state[:, : self.state_dim] = self.normalizer.normalize(states, "state")
        action_mask = np.zeros((len(observations), self.config.max_action_dim), dtype=bool)
        action_mask[:, : self.action_dim] = True
        pad_to = self.config.max_text_length if self.config.pad_to_max_length else None
        c = self.config
        ids, text_mask = self.tokenizer.batch(
            instructions, views, c.tokens_per_view, pad_to, c.max_text_length, c.instruction_first
        )
        return ModelInputs(
            pixel_values=torch.from_numpy(np.stack(pixels)),
            view_mask=torch.from_numpy(np.stack(present)),
            input_ids=ids,
            text_mask=text_mask,
            state=torch.from_numpy(state),
            action_mask=torch.from_numpy(action_mask),
        )

    def model_actions(self, actions: np.ndarray, states: np.ndarray) -> torch.Tensor:
        """Robot-unit absolute chunks (B, H, A) -> normalised, padded (B, H, max_action_dim)."""
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape[-1] != self.action_dim:
            raise ValueError(f"actions have {actions.shape[-1]} dims; this checkpoint expects {self.action_dim}")
        normalized = self.normalizer.normalize(self.normalizer.to_model_actions(actions, states), "action")
        out = np.zeros((*actions.shape[:-1], self.config.max_action_dim), dtype=np.float32)
        out[..., : self.action_dim] = normalized
        return torch.from_numpy(out)

    def robot_actions(self, actions: torch.Tensor, states: np.ndarray) -> np.ndarray:
        """Normalised, padded (B, H, max_action_dim) -> robot-unit absolute chunks (B, H, A)."""
        real = actions[..., : self.action_dim].float().cpu().numpy()
        return self.normalizer.from_model_actions(self.normalizer.denormalize(real, "action"), states)
