"""The policy node's inference worker: one thread that runs the model on a snapshot of the
latest inputs whenever the control loop asks, and hands the chunk back.

The hand-off is one request slot and one result slot, both guarded by the node's lock (so the
control loop and the callbacks see one consistent state). A chunk computed for a situation that
has since changed (a new instruction, a reset, a stale input) carries an old generation and is
dropped on arrival. The worker outlives any failure: a bad frame or an input the model refuses
skips that observation; anything else (a CUDA error, a bug) is logged once and retried after a
pause that doubles with each consecutive failure.
"""

from __future__ import annotations

import collections
import os
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sensor_msgs.msg import CompressedImage

from evo1_policy.chunking import Request
from evo1_policy.images import ImageError, decode_compressed_msg, decode_image_msg
from evo1_policy.normalize import Normalizer
from evo1_policy.policy import Evo1Policy

from .arm_config import ArmConfig
from .paths import checkpoint_path

MAX_DETAIL = 300  # characters of a rejected input's detail kept for the status


@dataclass
class Stamped:
    value: Any
    received: float  # time.monotonic() at arrival
    stamp: float  # header stamp in seconds (0 if none)
    received_ros: float = 0.0  # the node's ROS clock at arrival, seconds (the time base of trajectories)
    velocity: Any = None  # a joint state's measured velocities (np.ndarray), None when it gave none


@dataclass
class Snapshot:
    """The inputs one chunk is computed from, taken together under the lock."""

    images: list[Any]
    positions: np.ndarray
    instruction: str
    tick: int
    oldest_stamp: float
    received: float  # monotonic arrival of the newest camera frame used


@dataclass
class Result:
    chunk: np.ndarray
    snapshot: Snapshot
    latency: float
    generation: int


def describe(error: BaseException) -> str:
    """One line for any error: the checkpoint loaders already name the file; anything else also
    gets its type, since 'CUDA out of memory' or a KeyError alone says too little."""
    text = " ".join(str(error).split()) or repr(error)
    return text if isinstance(error, (ValueError, FileNotFoundError)) else f"{type(error).__name__}: {text}"


class InferenceWorker:
    """`predict(snapshot, request)` runs the model; `take_snapshot(tick)` reads the inputs (called
    with the lock held; None while one is missing); `reject(cause, detail)` counts a failure."""

    def __init__(
        self,
        lock: threading.Lock,
        take_snapshot: Callable[[int], Snapshot | None],
        predict: Callable[[Snapshot, Request], np.ndarray],
        reject: Callable[[str, str], None],
        log_error: Callable[[str], None],
    ) -> None:
        self.wake = threading.Condition(lock)
        self._lock = lock
        self._take_snapshot, self._predict, self._reject, self._log_error = take_snapshot, predict, reject, log_error
        self.request: Request | None = None
        self.in_flight_since: float | None = None  # monotonic start of the running inference
        self.result: Result | None = None
        self.generation = 0
        self.latencies: collections.deque[float] = collections.deque(maxlen=20)
        self.count = 0
        self.failure = ""  # the last failed inference ("" after a success)
        self._stopping = False
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- called by the node (lock held)
    def ask(self, request: Request) -> None:
        self.request = request
        self.wake.notify_all()

    def drop(self) -> None:
        """Forget the request and any result; a chunk still in flight is discarded on arrival."""
        self.generation += 1
        self.result = None
        self.request = None

    def take_result(self) -> Result | None:
        result, self.result = self.result, None
        return result

    @property
    def idle(self) -> bool:
        return self.request is None and self.in_flight_since is None

    def latency_estimate(self, default: float) -> float:
        """p90 of the recent latencies; the first (cold start) is not representative, so until
        others exist, `default` (one control period)."""
        recent = list(self.latencies)[1:] if len(self.latencies) > 1 else []
        return float(np.percentile(recent, 90)) if recent else default

    # ---------------------------------------------------------------- the thread
    def start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="evo1-inference", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._stopping = True
            self.wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None

    def _next(self) -> tuple[Request, int, Snapshot | None] | None:
        """Wait for a request; None when stopping."""
        with self._lock:
            while not self._stopping and self.request is None:
                self.wake.wait(timeout=0.5)
            if self._stopping:
                return None
            snapshot = self._take_snapshot(self.request.tick)
            if snapshot is None:
                self.request = None
            else:
                self.in_flight_since = time.monotonic()
            return self.request, self.generation, snapshot

    def _loop(self) -> None:
        failures = 0  # consecutive unexpected failures: each doubles the pause before the next try
        while (job := self._next()) is not None:
            request, generation, snapshot = job
            if snapshot is None:
                continue
            start = time.monotonic()
            chunk, cause, error = None, "", ""
            try:
                chunk = self._predict(snapshot, request)
            except ImageError as exc:  # a bad frame: this observation is skipped
                cause, error = str(exc).split(":")[0] + ": undecodable image", str(exc)
            except ValueError as exc:  # an input the model refuses
                cause, error = "inference input refused", f"inference input: {exc}"
            except Exception as exc:  # noqa: BLE001 - the worker must outlive anything (CUDA OOM, a bug)
                cause, error = f"inference failed: {type(exc).__name__}", describe(exc)
                failures += 1
                if failures == 1:
                    self._log_error(f"inference failed:\n{traceback.format_exc()}")
            finally:
                latency = time.monotonic() - start
                with self._lock:
                    self.in_flight_since = None
                    self.request = None
                    if chunk is not None and generation == self.generation:
                        self.result = Result(chunk, snapshot, latency, generation)
                    self.latencies.append(latency)
                    self.count += 1
                    self.failure = error
            if not error:
                failures = 0
                continue
            self._reject(cause, error)
            if failures:
                pause = min(0.1 * 2 ** (failures - 1), 5.0)
                with self._lock:
                    self.wake.wait_for(lambda: self._stopping, timeout=pause)


def load_policy(config: ArmConfig) -> Evo1Policy:
    """The policy the config names: a checkpoint, or (demos/tests) an untrained preset."""
    m = config.model
    dtype = m.dtype or None
    if m.checkpoint:
        return Evo1Policy.from_checkpoint(
            checkpoint_path(m.checkpoint), device=m.device, dtype=dtype, dataset_key=m.dataset_key or None
        )
    if m.preset:
        dims = len(config.action_names)
        normalizer = Normalizer.from_limits(config.lower, config.upper, config.action_names)
        return Evo1Policy.from_preset(m.preset, dims, dims, device=m.device, dtype=dtype, normalizer=normalizer)
    raise ValueError("model.checkpoint is empty (and no model.preset): say which policy to run")


def check_fits(policy: Evo1Policy, config: ArmConfig) -> None:
    """The policy must fit the arm config: its dims, horizon and views (one clear error if not)."""
    if policy.action_dim != len(config.action_names) or policy.state_dim != len(config.action_names):
        raise ValueError(
            f"checkpoint has {policy.state_dim} state / {policy.action_dim} action dims but the arm config "
            f"names {len(config.action_names)} ({config.action_names})"
        )
    if config.control.execute_steps > policy.config.horizon:
        raise ValueError(
            f"control.execute_steps {config.control.execute_steps} exceeds the model's horizon {policy.config.horizon}"
        )
    if len(config.cameras.names) > policy.config.max_views:
        raise ValueError(f"{len(config.cameras.names)} cameras but the model takes {policy.config.max_views}")


def warm_up(policy: Evo1Policy, config: ArmConfig, logger: Any) -> float:
    """Choose the inference path and run it once per shape the node will use (plain chunks, and
    guided ones under rtc), so capture, compilation and lazy initialisation happen at configure
    and the first chunk on the arm is not slow. A capture that fails leaves that shape eager, said
    once. On the CPU, torch gets the cores less one (the control loop keeps one). Returns seconds."""
    if policy.device.type == "cpu":
        import torch

        torch.set_num_threads(config.model.threads or max(1, (os.cpu_count() or 2) - 1))
    mode = config.model.compile
    if mode == "graphs" and policy.device.type != "cuda":
        logger.warning(f"model.compile 'graphs' needs CUDA; the policy runs on {policy.device}: eager")
        mode = "off"
    policy.set_compile(mode)
    seconds = policy.warm_up(
        len(config.cameras.names), steps=config.model.steps or None, guided=config.control.merge == "rtc"
    )
    path = policy.inference_path
    if mode != "off" and path != mode:
        logger.warning(f"model.compile '{mode}' could not be used, running {path}")
    logger.info(f"inference path: {path}; warm-up took {seconds:.2f} s")
    return seconds


def instruction_problem(text: str, policy: Evo1Policy, cameras: int) -> tuple[str, str] | None:
    """(cause, detail) when an instruction cannot be used; checked at the topic, so a bad one is
    refused once with its reason instead of failing every inference. (An embedded NUL never
    arrives: ROS 2 cuts strings there when serialising, so `evo1 instruct` refuses it.)"""
    if not text:
        return "empty instruction", "empty instruction"
    if len(text) > 2000:
        return "instruction too long", f"instruction of {len(text)} characters is too long (max 2000)"
    try:
        policy.processor.check_instruction(text, cameras)
    except ValueError as error:
        return "instruction too long", f"instruction refused: {error}"
    return None


def decode_frame(msg: Any, camera: str) -> np.ndarray:
    """An Image or CompressedImage as RGB; an ImageError names the camera."""
    try:
        return decode_compressed_msg(msg) if isinstance(msg, CompressedImage) else decode_image_msg(msg)
    except ImageError as error:
        raise ImageError(f"camera '{camera}': {error}") from None
