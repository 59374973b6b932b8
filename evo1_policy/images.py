"""Image decoding and preprocessing, shared by the live node, the bag readers and the model API.

Everything becomes RGB uint8 (H, W, 3) first, by the encoding it was sent with, then is resized
to the model's square input and normalised with ImageNet statistics. ROS messages are read by
their fields only (rclpy and rosbags messages alike), so no cv_bridge is needed.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

_CHANNELS = {"rgb8": 3, "bgr8": 3, "mono8": 1, "8UC1": 1, "8UC3": 3, "rgba8": 4, "bgra8": 4}
SUPPORTED_ENCODINGS = tuple(_CHANNELS)
# A compressed frame may declare at most this many pixels (an 8K camera has 33 M): a few kilobytes
# of PNG can declare gigapixels, and decoding them would take the node's memory (OpenCV's own
# limit is 2^30 pixels, 3 GB of RGB).
MAX_COMPRESSED_PIXELS = 40_000_000
JPEG_START, PNG_START = b"\xff\xd8", b"\x89PNG\r\n\x1a\n"  # what every JPEG and PNG file begins with


class ImageError(ValueError):
    """An image the policy cannot use; the message names the problem."""


def to_rgb(pixels: np.ndarray, encoding: str) -> np.ndarray:
    """An (H, W[, C]) uint8 array in `encoding` -> contiguous RGB uint8 (H, W, 3)."""
    if encoding not in _CHANNELS:
        raise ImageError(f"image encoding {encoding!r} unsupported; expected one of {', '.join(SUPPORTED_ENCODINGS)}")
    if pixels.dtype != np.uint8:
        raise ImageError(f"image dtype {pixels.dtype} unsupported; expected uint8 ({encoding})")
    channels = _CHANNELS[encoding]
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] != channels:
        raise ImageError(f"image of shape {pixels.shape} does not match encoding {encoding!r} ({channels} channels)")
    if channels == 1:
        return np.ascontiguousarray(np.repeat(pixels, 3, axis=2))
    if encoding in ("bgr8", "bgra8"):
        return np.ascontiguousarray(pixels[:, :, 2::-1])
    return np.ascontiguousarray(pixels[:, :, :3])


def as_rgb(image: np.ndarray) -> np.ndarray:
    """An array handed to the model API: RGB (H, W, 3), grayscale (H, W) or (H, W, 1), or RGBA (H, W, 4)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ImageError(f"image dtype {image.dtype} unsupported; expected uint8 RGB (H, W, 3)")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return to_rgb(image, "mono8")
    if image.ndim == 3 and image.shape[2] == 4:
        return to_rgb(image, "rgba8")
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ImageError(f"image of shape {image.shape} unsupported; expected uint8 RGB (H, W, 3)")


def header_problem(msg: Any) -> tuple[str, str] | None:
    """(cause, detail) when an Image or CompressedImage (any object with its fields) cannot be
    decoded by its header alone; None otherwise. The one home of these rules: the live node runs
    it in its callbacks (cheap), the decoders below before decoding."""
    if hasattr(msg, "format"):  # CompressedImage
        fmt = str(msg.format)
        if not any(kind in fmt.lower() for kind in ("jpeg", "jpg", "png")):
            return "unsupported format", f"compressed format {fmt[:40]!r} unsupported; expected jpeg or png"
        if not len(msg.data):
            return "empty image", "empty compressed image"
        head = bytes(msg.data[:65536])
        if not head.startswith((JPEG_START, PNG_START)):  # judged at once, not only when the worker decodes it
            detail = (
                f"compressed image ({fmt[:40]}, {len(msg.data)} bytes) could not be decoded: neither JPEG nor PNG data"
            )
            return "undecodable image", detail
        size = compressed_size(head)
        if size is not None and size[0] * size[1] > MAX_COMPRESSED_PIXELS:
            detail = f"compressed image declares {size[0]}x{size[1]} pixels (max {MAX_COMPRESSED_PIXELS})"
            return "image too large", detail
        return None
    height, width, step, encoding = int(msg.height), int(msg.width), int(msg.step), str(msg.encoding)
    if encoding not in _CHANNELS:
        expected = ", ".join(SUPPORTED_ENCODINGS)
        return "unsupported encoding", f"encoding {encoding[:40]!r} unsupported; expected one of {expected}"
    if height <= 0 or width <= 0:
        return "empty image", f"image size {width}x{height} is empty"
    if step < width * _CHANNELS[encoding] or len(msg.data) < step * height:
        detail = f"image data {len(msg.data)} bytes, expected {step * height} for {width}x{height} {encoding}"
        return "image size mismatch", f"{detail} with step {step} (too short)"
    return None


def compressed_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) a PNG or JPEG declares in its header, read without decoding; None when the
    header is not found (the decoder then decides)."""
    if data.startswith(PNG_START) and len(data) >= 24 and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if not data.startswith(JPEG_START):
        return None
    i = 2
    while i + 9 <= len(data):  # JPEG segments: FF marker, 2-byte length; a start-of-frame holds the size
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return int.from_bytes(data[i + 7 : i + 9], "big"), int.from_bytes(data[i + 5 : i + 7], "big")
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def decode_image_msg(msg: Any) -> np.ndarray:
    """sensor_msgs/Image (any object with its fields) -> RGB uint8 (H, W, 3)."""
    problem = header_problem(msg)
    if problem:
        raise ImageError(problem[1])
    height, width, step, encoding = int(msg.height), int(msg.width), int(msg.step), str(msg.encoding)
    channels = _CHANNELS[encoding]
    data = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, np.ndarray) else msg.data, dtype=np.uint8)
    rows = data[: step * height].reshape(height, step)[:, : width * channels]
    return to_rgb(rows.reshape(height, width, channels), encoding)


def decode_compressed_msg(msg: Any) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg or png) -> RGB uint8 (H, W, 3)."""
    problem = header_problem(msg)
    if problem and problem[0] != "empty image":  # an empty one fails below, as undecodable
        raise ImageError(problem[1])
    buffer = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, np.ndarray) else msg.data, dtype=np.uint8)
    bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR) if buffer.size else None
    if bgr is None:
        raise ImageError(f"compressed image ({msg.format}, {buffer.size} bytes) could not be decoded")
    return to_rgb(bgr, "bgr8")


def resize_square(rgb: np.ndarray, size: int, method: str = "area") -> np.ndarray:
    """Resize to size x size (no crop: the reference stretches).

    "area": OpenCV's area filter when shrinking (anti-aliased), bicubic when enlarging.
    "bicubic": Pillow's bicubic, anti-aliased when shrinking: the reference's training transform
    (torchvision's Resize on a PIL image calls exactly this).
    """
    if rgb.shape[0] == size and rgb.shape[1] == size:
        return rgb
    if method == "bicubic":
        from PIL import Image  # only for reference-mode checkpoints

        return np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BICUBIC))
    if method != "area":
        raise ValueError(f"unknown resize method {method!r}; expected 'area' or 'bicubic'")
    shrinking = rgb.shape[0] > size or rgb.shape[1] > size
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def round_to_bfloat16(x: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest bfloat16 (ties to even), kept as float32: the result
    of a bfloat16 tensor operation, computed without torch."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (bits + (((bits >> 16) & 1) + np.uint32(0x7FFF))) & np.uint32(0xFFFF0000)
    return rounded.view(np.float32)


def normalize_image(rgb: np.ndarray, size: int, resize: str = "area", dtype: str = "float32") -> np.ndarray:
    """RGB uint8 (H, W, 3) -> float32 (3, size, size), ImageNet-normalised. With dtype "bfloat16"
    every step is rounded as the reference's `evo1-flash` and LeRobot compute it in bfloat16."""
    pixels = resize_square(rgb, size, resize).astype(np.float32) / np.float32(255.0)
    if dtype == "bfloat16":
        bf16 = round_to_bfloat16
        normalized = bf16(bf16(bf16(pixels) - bf16(IMAGENET_MEAN)) / bf16(IMAGENET_STD))
    else:
        normalized = (pixels - IMAGENET_MEAN) / IMAGENET_STD
    return normalized.transpose(2, 0, 1)
