"""Static-shape inference: the eager sampler's chunk, with every shape fixed and every buffer
allocated once, so that a chunk can run as captured CUDA graphs or a torch.compile'd program.

Why: on a GPU the eager chunk is launch-bound (docs/benchmarks.md: about 7,000 small kernels,
3-4 ms per denoising step for a head of 8 small blocks). Fixing the shapes lets the VLM prefix be
one graph replay and all Euler steps another.

What is fixed, per `ShapeKey` (batch, views, prompt bucket, steps, guided):
- the prompt is right-padded to a bucket of BUCKET tokens (masked, as the eager path masks a
  batch's shorter prompts; where the head attends padding, the reference's convention, padding
  would change the chunk, so the bucket is the prompt's own length);
- the image placeholders' positions are found on the host before the copy, so the backbone never
  reads a tensor back;
- the time grid (table rows, flow times, RTC's guidance caps) is computed once;
- the noise is drawn exactly as the eager sampler draws it (same generator, same call) and copied
  into the sampler's buffer, so both paths give the same chunk for the same seed.

The rule of each Euler step is Evo1Model.denoise_step, shared with the eager sampler.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .action_head import KeyValues
from .backbone import image_token_positions
from .config import COMPILE_MODES, PAD_ID
from .model import Evo1Model, Guidance, ModelInputs, guidance_cap

BUCKET = 16  # prompt tokens per bucket step: a few masked tokens beside 256 per view
MAX_SAMPLERS = 6  # shapes kept captured at once (views x prompt buckets x plain/guided)
WARMUP_RUNS = 2  # before a capture: lazy initialisation (cuBLAS handles, autotuning) must not be captured

log = logging.getLogger("evo1_policy.static")


@dataclass(frozen=True)
class ShapeKey:
    batch: int
    views: int
    length: int  # prompt tokens after bucketing
    steps: int
    guided: bool


def bucket_length(length: int, pad_to_max: int | None, head_attends_padding: bool) -> int:
    """The prompt length a static sampler is built for."""
    if pad_to_max is not None or head_attends_padding:
        return length  # already at max_text_length, or padding would change what the head sees
    return -(-length // BUCKET) * BUCKET


def pad_inputs(inputs: ModelInputs, length: int) -> ModelInputs:
    """Right-pad the prompt to `length` tokens (PAD_ID, masked)."""
    extra = length - inputs.input_ids.shape[1]
    if extra < 0:
        raise ValueError(f"prompt of {inputs.input_ids.shape[1]} tokens exceeds its bucket of {length}")
    ids = torch.nn.functional.pad(inputs.input_ids, (0, extra), value=PAD_ID)
    mask = torch.nn.functional.pad(inputs.text_mask, (0, extra), value=False)
    return ModelInputs(inputs.pixel_values, inputs.view_mask, ids, mask, inputs.state, inputs.action_mask)


class StaticSampler:
    """One shape's buffers and its runner: eager over static buffers (the reference for the
    captured forms, and what runs when mode is "off"), CUDA graphs, or torch.compile."""

    def __init__(self, model: Evo1Model, key: ShapeKey, mode: str = "off"):
        if mode not in COMPILE_MODES:
            raise ValueError(f"compile mode {mode!r} unknown; choose one of {list(COMPILE_MODES)}")
        if mode == "graphs" and model.device.type != "cuda":
            raise ValueError("compile mode 'graphs' needs a CUDA device (CUDA graphs); use 'compile' or 'off'")
        self.model, self.key, self.mode = model, key, mode
        c, dev = model.config, model.device
        b, v, size = key.batch, key.views, c.vision.image_size
        shape = (b, c.horizon, c.max_action_dim)

        def buffer(*dims: int, dtype: torch.dtype = torch.float32, fill: float = 0) -> torch.Tensor:
            return torch.full(dims, fill, dtype=dtype, device=dev)

        self.inputs = ModelInputs(
            pixel_values=buffer(b, v, 3, size, size, dtype=model.dtype),
            view_mask=buffer(b, v, dtype=torch.bool, fill=True),
            input_ids=buffer(b, key.length, dtype=torch.long, fill=PAD_ID),
            text_mask=buffer(b, key.length, dtype=torch.bool),
            state=buffer(b, c.max_state_dim),
            action_mask=buffer(b, c.max_action_dim, dtype=torch.bool, fill=True),
            image_positions=buffer(b, v * c.tokens_per_view, dtype=torch.long),
        )
        self.noise = buffer(*shape)
        self.guidance = Guidance(buffer(*shape), buffer(b, c.horizon), 0.0) if key.guided else None
        self.max_weight = buffer()  # a 0-dim tensor: RTC's cap changes between calls, the graph does not
        taus = [i / key.steps for i in range(key.steps)]
        with torch.no_grad():
            # the same float64 products as the eager loop, so the same table rows
            grid = torch.tensor(taus, dtype=torch.float64, device=dev)[:, None].expand(-1, b)
            self.time_rows = torch.stack([model.action_head.time_embedding(t) for t in grid])
            self.taus = grid.float()[:, :, None, None]
        self.caps = torch.tensor([guidance_cap(t) for t in taus], dtype=torch.float32, device=dev)
        self.dt = 1.0 / key.steps
        self.kv: KeyValues | None = None
        self.out: torch.Tensor | None = None
        self._velocity_at = None
        self._prefix_fn: Callable[[], None] = self._prefix
        self._denoise_fn: Callable[[], None] = self._denoise
        self.warmup_s = 0.0

    # ------------------------------------------------------------------ the computation
    def _prefix(self) -> None:
        with torch.no_grad():
            self.kv = self.model.encode_prefix(self.inputs)

    def _denoise(self) -> None:
        model, kv, guidance = self.model, self.kv, self.guidance
        shape = self.noise.shape
        with torch.no_grad():
            mask = self.inputs.action_mask[:, None, :].expand(shape).to(torch.float32)
            x = self.noise * mask
            for i in range(self.key.steps):
                scale = None if guidance is None else torch.minimum(self.caps[i], self.max_weight)
                x = model.denoise_step(
                    x, mask, kv, self.time_rows[i], self.taus[i], self.dt, guidance, scale, self._velocity_at
                )
            self.out = x * mask

    # ------------------------------------------------------------------ set-up
    def prepare(self) -> float:
        """Warm up and capture (or compile) for this shape; returns the seconds it took. Raises on
        any failure: the caller falls back to eager."""
        start = time.perf_counter()
        if self.mode == "graphs":
            self._capture()
        elif self.mode == "compile":
            self._compile()
        else:
            self.run_prefix()
            self.run_denoise()
        self._sync()
        self.warmup_s = time.perf_counter() - start
        return self.warmup_s

    def _capture(self) -> None:
        side = torch.cuda.Stream(self.model.device)
        side.wait_stream(torch.cuda.current_stream(self.model.device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):
                self._prefix()
                self._denoise()
        torch.cuda.current_stream(self.model.device).wait_stream(side)
        prefix_graph, denoise_graph = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
        # thread_local: CUDA work of other threads (a node's other callbacks) does not spoil the capture
        with torch.cuda.graph(prefix_graph, capture_error_mode="thread_local"):
            self._prefix()
        with torch.cuda.graph(denoise_graph, pool=prefix_graph.pool(), capture_error_mode="thread_local"):
            self._denoise()  # reads the keys/values the prefix graph writes
        self._prefix_fn, self._denoise_fn = prefix_graph.replay, denoise_graph.replay

    def _compile(self) -> None:
        # The prefix and the head's velocity are compiled; the step loop stays in Python so the
        # guided step's autograd call is outside the compiled code (AOTAutograd compiles its
        # backward). On CUDA, reduce-overhead replays each compiled call as a CUDA graph.
        mode = "reduce-overhead" if self.model.device.type == "cuda" else None
        encode = torch.compile(self.model.encode_prefix, mode=mode, dynamic=False)
        self._velocity_at = torch.compile(self.model.action_head.velocity_at, mode=mode, dynamic=False)

        def prefix() -> None:
            with torch.no_grad():
                self.kv = encode(self.inputs)

        self._prefix_fn = prefix
        for _ in range(WARMUP_RUNS + 1):
            self.run_prefix()
            self.run_denoise()

    # ------------------------------------------------------------------ use
    def load(
        self,
        inputs: ModelInputs,
        image_positions: torch.Tensor,
        noise: torch.Tensor,
        guidance: Guidance | None,
    ) -> None:
        """Copy one call's inputs (host or device tensors of this sampler's shapes) into the buffers."""
        s = self.inputs
        s.pixel_values.copy_(inputs.pixel_values, non_blocking=True)
        s.view_mask.copy_(inputs.view_mask, non_blocking=True)
        s.input_ids.copy_(inputs.input_ids, non_blocking=True)
        s.text_mask.copy_(inputs.text_mask, non_blocking=True)
        s.state.copy_(inputs.state, non_blocking=True)
        s.action_mask.copy_(inputs.action_mask, non_blocking=True)
        s.image_positions.copy_(image_positions, non_blocking=True)
        self.noise.copy_(noise)
        if self.guidance is not None:
            if guidance is None:
                raise ValueError("a guided sampler needs guidance")
            self.guidance.target.copy_(guidance.target)
            self.guidance.weights.copy_(guidance.weights)
            self.max_weight.fill_(guidance.max_weight)

    def run_prefix(self) -> None:
        self._prefix_fn()

    def run_denoise(self) -> torch.Tensor:
        self._denoise_fn()
        return self.out

    def _sync(self) -> None:
        if self.model.device.type == "cuda":
            torch.cuda.synchronize(self.model.device)


class StaticPaths:
    """The static samplers of one policy, one per shape, built on first use (or at warm-up) and
    kept up to MAX_SAMPLERS. A shape whose capture fails runs eagerly from then on, said once."""

    def __init__(self, model: Evo1Model, mode: str):
        if mode not in COMPILE_MODES:
            raise ValueError(f"compile mode {mode!r} unknown; choose one of {list(COMPILE_MODES)}")
        self.model, self.mode = model, mode
        self.samplers: OrderedDict[ShapeKey, StaticSampler] = OrderedDict()
        self.failed: dict[ShapeKey, str] = {}
        self.warmup_s = 0.0

    @property
    def description(self) -> str:
        """What runs: e.g. "graphs", or "eager (graphs failed: ...)"."""
        if self.mode == "off":
            return "eager"
        if self.failed:
            reason = next(iter(self.failed.values()))
            return f"eager ({self.mode} failed: {reason})" if not self.samplers else f"{self.mode}, some shapes eager"
        return self.mode

    def sampler(self, key: ShapeKey) -> StaticSampler | None:
        """The ready sampler for this shape, or None: run eagerly."""
        if key in self.failed:
            return None
        if key in self.samplers:
            self.samplers.move_to_end(key)
            return self.samplers[key]
        try:
            sampler = StaticSampler(self.model, key, self.mode)
            self.warmup_s += sampler.prepare()
        except Exception as error:  # noqa: BLE001 - any capture/compile failure means eager, never a crash
            first_line = (str(error).strip().splitlines() or [""])[0][:200]
            self.failed[key] = f"{type(error).__name__}: {first_line}"
            log.warning("%s failed for %s, running eagerly: %s", self.mode, key, self.failed[key])
            return None
        self.samplers[key] = sampler
        while len(self.samplers) > MAX_SAMPLERS:
            self.samplers.popitem(last=False)
        return sampler


def positions_on_host(inputs: ModelInputs, tokens_per_view: int) -> torch.Tensor:
    """The placeholders' positions, found before anything goes to the device (and checked)."""
    return image_token_positions(inputs.input_ids, inputs.view_mask.shape[1], tokens_per_view)
