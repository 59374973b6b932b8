"""mp4 files with PyAV: writing RGB frames (datasets, episode videos, evaluation clips) and reading
the frames at given times back."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..images import resize_square
from .episode import DatasetError


def write_mp4(path: Path, frames: list[np.ndarray], fps: float, lossless: bool) -> None:
    """RGB frames as an H.264 mp4: `lossless` keeps the exact pixels (libx264rgb, crf 0), else
    what LeRobot itself writes for sharing (yuv420p, crf 23)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        if lossless:  # exact RGB: readers see the very pixels that were recorded
            stream = container.add_stream("libx264rgb", rate=Fraction(fps).limit_denominator(1000))
            stream.pix_fmt, stream.options = "rgb24", {"crf": "0", "preset": "ultrafast"}
        else:  # what LeRobot itself writes for sharing
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
            stream.pix_fmt, stream.options = "yuv420p", {"crf": "23", "g": "2"}
        stream.width, stream.height = width, height
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


def read_frames(
    path: Path, start: float, length: int, fps: float, where: str, key: str, image_size: int | None
) -> np.ndarray:
    """The `length` frames from `start` seconds on (nearest frame to start + i / fps)."""
    if not path.is_file():
        raise DatasetError(f"{where}: video {path} for '{key}' missing")
    wanted = start + np.arange(length) / fps
    frames: list[np.ndarray | None] = [None] * length
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                t = float(frame.time) if frame.time is not None else 0.0
                i = round((t - start) * fps)
                if 0 <= i < length and abs(t - wanted[i]) < 0.5 / fps and frames[i] is None:
                    rgb = frame.to_ndarray(format="rgb24")
                    frames[i] = resize_square(rgb, image_size) if image_size else rgb
                if t > wanted[-1] + 1.0 / fps:
                    break
    except (av.error.FFmpegError, OSError) as error:
        raise DatasetError(f"{where}: video {path.name} unreadable ({error})") from None
    missing = [i for i, f in enumerate(frames) if f is None]
    if missing:
        raise DatasetError(f"{where}, frame {missing[0]}: no frame in {path.name} at {wanted[missing[0]]:.3f} s")
    return np.stack(frames)
