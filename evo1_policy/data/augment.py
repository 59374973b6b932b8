"""Per-image augmentation (the Evo-1 recipe), with OpenCV/numpy instead of torchvision.

Each of: random resized crop (scale 0.95-1.0), rotation (+-5 degrees), colour jitter
(brightness 0.3, contrast 0.4, saturation 0.5, hue 0.08) is applied with probability 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class Augmentation:
    probability: float = 0.5
    crop_scale: tuple[float, float] = (0.95, 1.0)
    rotation_deg: float = 5.0
    brightness: float = 0.3
    contrast: float = 0.4
    saturation: float = 0.5
    hue: float = 0.08

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = image.shape[:2]
        out = image
        if rng.random() < self.probability:
            scale = rng.uniform(*self.crop_scale)
            ch, cw = max(1, round(h * np.sqrt(scale))), max(1, round(w * np.sqrt(scale)))
            y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            out = cv2.resize(out[y : y + ch, x : x + cw], (w, h), interpolation=cv2.INTER_LINEAR)
        if rng.random() < self.probability:
            angle = rng.uniform(-self.rotation_deg, self.rotation_deg)
            matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
            out = cv2.warpAffine(out, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        if rng.random() < self.probability:
            out = self._jitter(out, rng)
        return np.ascontiguousarray(out)

    def _jitter(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = image.astype(np.float32) / 255.0
        x = x * rng.uniform(1 - self.brightness, 1 + self.brightness)
        gray_mean = (x @ np.array([0.299, 0.587, 0.114], np.float32)).mean()
        x = (x - gray_mean) * rng.uniform(1 - self.contrast, 1 + self.contrast) + gray_mean
        gray = (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
        x = (x - gray) * rng.uniform(1 - self.saturation, 1 + self.saturation) + gray
        hsv = cv2.cvtColor(np.clip(x, 0, 1), cv2.COLOR_RGB2HSV)
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(-self.hue, self.hue) * 360.0) % 360.0
        x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        return (np.clip(x, 0, 1) * 255.0 + 0.5).astype(np.uint8)
