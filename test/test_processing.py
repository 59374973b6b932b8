"""Normalisation, action spaces, image decoding and the errors bad input gets."""

from __future__ import annotations

import types

import cv2
import numpy as np
import pytest

from evo1_policy.images import (
    ImageError,
    as_rgb,
    compressed_size,
    decode_compressed_msg,
    decode_image_msg,
    header_problem,
    normalize_image,
)
from evo1_policy.normalize import Normalizer, Stats
from evo1_policy.policy import Evo1Policy

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("mode", ["bounds", "bounds_q99", "normal"])
def test_normalisation_round_trip(mode: str) -> None:
    states = RNG.normal(size=(200, 3)) * [1, 5, 0.1]
    actions = RNG.normal(size=(200, 4, 3)) * [2, 1, 3]
    norm = Normalizer.fit(states, actions, mode=mode)
    inside = states[(states >= norm.state.q01).all(1) & (states <= norm.state.q99).all(1)]
    back = norm.denormalize(norm.normalize(inside, "state"), "state")
    np.testing.assert_allclose(back, inside, atol=1e-6)


def test_bounds_formula_clamping_and_zero_range() -> None:
    stats = Stats.of(np.array([[0.0, 2.0, 5.0], [4.0, 2.0, 7.0]]))
    norm = Normalizer(stats, stats)
    y = norm.normalize(np.array([[1.0, 2.0, 100.0]]), "state")
    # 2 * (x - min) / (max - min) - 1; a zero-range dim maps to 0; out of range clamps to 1.
    np.testing.assert_allclose(y, [[-0.5, 0.0, 1.0]], atol=1e-6)
    np.testing.assert_allclose(norm.denormalize(np.array([[-0.5, 0.3, 1.0]]), "state"), [[1.0, 2.0, 7.0]], atol=1e-6)


def test_delta_actions_keep_gripper_absolute() -> None:
    states = RNG.normal(size=(10, 3))
    actions = states[:, None, :] + RNG.normal(size=(10, 5, 3)) * 0.01
    actions[..., 2] = 0.8  # gripper command
    norm = Normalizer.fit(states, actions, action_space="delta", absolute_dims=[2])
    model_space = norm.to_model_actions(actions, states)
    assert np.abs(model_space[..., :2]).max() < 0.1  # deltas are small
    np.testing.assert_allclose(model_space[..., 2], 0.8)  # gripper untouched
    np.testing.assert_allclose(norm.from_model_actions(model_space, states), actions, atol=1e-12)


def test_reference_norm_stats_layouts() -> None:
    leaf = {"observation.state": {"min": [0, 0], "max": [1, 2]}, "action": {"min": [0], "max": [3]}}
    assert Normalizer.from_dict({"xarm": leaf}).action.max.tolist() == [3.0]
    assert Normalizer.from_dict({"xarm": {"pick": leaf}}).state.max.tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="several arms"):
        Normalizer.from_dict({"a": leaf, "b": leaf})
    with pytest.raises(ValueError, match="no arm 'c'"):
        Normalizer.from_dict({"a": leaf, "b": leaf}, arm="c")


def _image_msg(pixels: np.ndarray, encoding: str, pad: int = 0) -> types.SimpleNamespace:
    height, width = pixels.shape[:2]
    rows = pixels.reshape(height, -1)
    padded = np.zeros((height, rows.shape[1] + pad), dtype=np.uint8)
    padded[:, : rows.shape[1]] = rows
    return types.SimpleNamespace(
        height=height, width=width, encoding=encoding, step=padded.shape[1], data=padded.tobytes()
    )


def test_image_messages_decode_to_rgb() -> None:
    rgb = RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode_image_msg(_image_msg(rgb, "rgb8", pad=3)), rgb)
    np.testing.assert_array_equal(decode_image_msg(_image_msg(rgb[:, :, ::-1].copy(), "bgr8")), rgb)
    rgba = np.concatenate([rgb, np.full((6, 5, 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(decode_image_msg(_image_msg(rgba, "rgba8")), rgb)
    mono = rgb[:, :, 0].copy()
    assert decode_image_msg(_image_msg(mono, "mono8")).shape == (6, 5, 3)
    with pytest.raises(ImageError, match="encoding 'yuv422' unsupported"):
        decode_image_msg(_image_msg(rgb, "yuv422"))
    short = _image_msg(rgb, "rgb8")
    short.data = short.data[:-10]
    with pytest.raises(ImageError, match="too short"):
        decode_image_msg(short)


def test_compressed_images_decode() -> None:
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[:, :8, 0] = 255  # left half red
    ok, png = cv2.imencode(".png", rgb[:, :, ::-1])
    assert ok
    decoded = decode_compressed_msg(types.SimpleNamespace(format="png", data=png.tobytes()))
    np.testing.assert_array_equal(decoded, rgb)
    with pytest.raises(ImageError, match="could not be decoded"):
        decode_compressed_msg(types.SimpleNamespace(format="jpeg", data=b"not a jpeg"))


def test_compressed_images_that_declare_gigapixels_are_refused_before_decoding() -> None:
    """A few kilobytes of PNG or JPEG can declare a frame of billions of pixels; its header says
    so, and the node refuses it by that header instead of decoding it into gigabytes."""
    frame = np.zeros((480, 640, 3), np.uint8)
    for ext in (".png", ".jpg"):
        ok, data = cv2.imencode(ext, frame)
        assert ok and compressed_size(data.tobytes()) == (640, 480), ext
        assert header_problem(types.SimpleNamespace(format=ext[1:], data=data.tobytes())) is None
    ok, png = cv2.imencode(".png", frame)
    bomb = bytearray(png.tobytes())
    bomb[16:24] = (60000).to_bytes(4, "big") + (50000).to_bytes(4, "big")  # IHDR width, height
    with pytest.raises(ImageError, match="declares 60000x50000 pixels"):
        decode_compressed_msg(types.SimpleNamespace(format="png", data=bytes(bomb)))
    ok, jpeg = cv2.imencode(".jpg", frame)
    data = jpeg.tobytes()
    sof = next(i for i in range(2, len(data) - 1) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC2))
    bomb = bytearray(data)
    bomb[sof + 5 : sof + 9] = (40000).to_bytes(2, "big") + (40000).to_bytes(2, "big")  # height, width
    assert header_problem(types.SimpleNamespace(format="jpeg", data=bytes(bomb)))[0] == "image too large"


def test_any_size_is_resized_and_normalised() -> None:
    out = normalize_image(RNG.integers(0, 256, (480, 640, 3), dtype=np.uint8), 224)
    assert out.shape == (3, 224, 224) and out.dtype == np.float32
    white = normalize_image(np.full((10, 10, 3), 255, np.uint8), 224)
    np.testing.assert_allclose(white[:, 0, 0], (1 - np.array([0.485, 0.456, 0.406])) / [0.229, 0.224, 0.225], rtol=1e-5)
    assert as_rgb(np.zeros((4, 4), np.uint8)).shape == (4, 4, 3)
    with pytest.raises(ImageError, match="expected uint8 RGB"):
        as_rgb(np.zeros((4, 4, 3), np.float32))


@pytest.mark.parametrize(
    ("images", "state", "instruction", "message"),
    [
        (1, np.zeros(6), "go", r"state has shape \(6,\); this checkpoint expects \(7,\)"),
        (1, np.array([0, 0, np.nan, 0, 0, 0, 0]), "go", r"NaN or inf at dims \[2\]"),
        (1, np.array([0, 0, 0, np.inf, 0, 0, 0]), "go", r"NaN or inf at dims \[3\]"),
        (4, np.zeros(7), "go", "4 camera views given; Evo-1 takes 1 to 3"),
        (1, np.zeros(7), "   ", "instruction is empty"),
        (0, np.zeros(7), "go", "0 camera views given"),
    ],
)
def test_bad_inputs_raise_one_clear_error(
    tiny_policy: Evo1Policy, rgb: np.ndarray, images: int, state: np.ndarray, instruction: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        tiny_policy.predict_chunk([rgb] * images, state, instruction)


def test_all_views_missing_is_an_error(tiny_policy: Evo1Policy) -> None:
    with pytest.raises(ValueError, match="every camera view is missing"):
        tiny_policy.predict_chunk([None, None], np.zeros(7), "go")


def test_overlong_instruction_is_an_error_not_truncated(tiny_policy: Evo1Policy, rgb: np.ndarray) -> None:
    with pytest.raises(ValueError, match="exceeds max_text_length"):
        tiny_policy.predict_chunk([rgb], np.zeros(7), "pick the cube " * 400)
