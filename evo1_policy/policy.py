"""Evo1Policy: the one inference API used by the ROS node, the evaluators and the benchmark.

    policy = Evo1Policy.from_checkpoint("checkpoints/sim_arm", device="cpu")
    chunk = policy.predict_chunk([front_rgb, wrist_rgb], joint_positions, "touch the red cube")
    # chunk: (horizon, action_dim) float64, robot units, absolute

Timings of the last call are in `policy.last_timing` (milliseconds per stage).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import InitVar, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .checkpoint import LoadReport, load_checkpoint, save_checkpoint
from .config import COMPILE_MODES, Evo1Config, preset
from .devices import resolve_device, resolve_dtype
from .guidance import ChunkGuidance
from .model import Evo1Model, Guidance, ModelInputs, building_in
from .normalize import Normalizer
from .processor import Observation, Processor
from .static import ShapeKey, StaticPaths, StaticSampler, bucket_length, pad_inputs, positions_on_host
from .tokenizer import PromptTokenizer


@dataclass
class Evo1Policy:
    model: Evo1Model
    processor: Processor
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    use_prefix_cache: bool = True
    load_report: LoadReport | None = None
    last_timing: dict[str, float] = field(default_factory=dict)
    compile: InitVar[str] = "off"

    def __post_init__(self, compile: str) -> None:
        self.model.to(device=self.device, dtype=self.dtype).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._static: StaticPaths | None = None
        self.set_compile(compile)

    @property
    def config(self) -> Evo1Config:
        return self.model.config

    @property
    def action_dim(self) -> int:
        return self.processor.action_dim

    @property
    def state_dim(self) -> int:
        return self.processor.state_dim

    @classmethod
    def from_checkpoint(
        cls,
        folder: str | Path,
        device: str = "auto",
        dtype: str | None = None,
        allow_partial: bool = False,
        dataset_key: str | None = None,
        **kwargs,
    ) -> Evo1Policy:
        """Any supported checkpoint folder; `dataset_key` picks the norm stats of one dataset when
        the checkpoint holds several (the reference's RoboTwin release holds 50)."""
        model, normalizer, tokenizer, report = load_checkpoint(
            folder, allow_partial=allow_partial, dataset_key=dataset_key
        )
        dev = resolve_device(device)
        return cls(
            model,
            Processor(model.config, tokenizer, normalizer),
            dev,
            resolve_dtype(dtype, dev),
            load_report=report,
            **kwargs,
        )

    @classmethod
    def from_preset(
        cls,
        name: str,
        state_dim: int,
        action_dim: int,
        device: str = "auto",
        dtype: str | None = None,
        seed: int = 0,
        normalizer: Normalizer | None = None,
        **kwargs,
    ) -> Evo1Policy:
        """A randomly initialised policy (seeded): for benchmarks, tests and as a training start."""
        torch.manual_seed(seed)
        config = preset(name)
        dev = resolve_device(device)
        normalizer = normalizer or Normalizer.identity(state_dim, action_dim)
        processor = Processor(config, PromptTokenizer.from_dir(), normalizer)
        torch_dtype = resolve_dtype(dtype, dev)
        with building_in(torch_dtype):
            model = Evo1Model(config)
        return cls(model, processor, dev, torch_dtype, **kwargs)

    def save(self, folder: str | Path, metadata: dict[str, str] | None = None) -> Path:
        return save_checkpoint(folder, self.model, self.processor.normalizer, self.processor.tokenizer, metadata)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # ------------------------------------------------------------------ static, captured paths
    def set_compile(self, mode: str) -> None:
        """How chunks run: "off" (eager), "graphs" (CUDA graphs over static shapes), "compile"
        (torch.compile over static shapes). Shapes are captured on first use or by warm_up()."""
        if mode not in COMPILE_MODES:
            raise ValueError(f"compile mode {mode!r} unknown; choose one of {list(COMPILE_MODES)}")
        if mode == "graphs" and self.device.type != "cuda":
            raise ValueError(f"compile mode 'graphs' needs CUDA; the policy runs on {self.device}")
        self._static = None if mode == "off" else StaticPaths(self.model, mode)

    @property
    def inference_path(self) -> str:
        """What runs now, in words: "eager", "graphs", "compile", or "eager (graphs failed: ...)"."""
        return "eager" if self._static is None else self._static.description

    def warm_up(self, views: int, instruction: str = "warm up", steps: int | None = None, guided: bool = True) -> float:
        """Run (and capture or compile) the shapes a node will use, so its first chunk is not slow:
        plain and, with `guided`, RTC-guided chunks for `views` cameras and this instruction's
        prompt bucket. Returns the seconds it took."""
        start = time.perf_counter()
        rng = np.random.default_rng(0)
        size = self.config.vision.image_size
        images = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(views)]
        state = np.zeros(self.state_dim)
        # a captured shape's second call is its first replay; eager needs one call to initialise lazily
        for _ in range(2 if self._static is not None else 1):
            self.predict_chunk(images, state, instruction, steps=steps, seed=0)
            if guided:
                actions = np.zeros((self.config.horizon // 2, self.action_dim))
                request = ChunkGuidance(actions, np.ones(len(actions)))
                self.predict_chunk(images, state, instruction, steps=steps, seed=0, guidance=request)
        return time.perf_counter() - start

    def _static_sampler(self, inputs: ModelInputs, steps: int, guided: bool) -> StaticSampler | None:
        if self._static is None or not self.use_prefix_cache:
            return None
        c = self.config
        pad_to = c.max_text_length if c.pad_to_max_length else None
        length = bucket_length(inputs.input_ids.shape[1], pad_to, c.head_attends_padding)
        key = ShapeKey(len(inputs.action_mask), inputs.view_mask.shape[1], length, steps, guided)
        return self._static.sampler(key)

    # ------------------------------------------------------------------ inference
    def predict_chunks(
        self,
        observations: Sequence[Observation],
        steps: int | None = None,
        seed: int | None = None,
        guidance: Sequence[ChunkGuidance | None] | None = None,
    ) -> np.ndarray:
        """A batch of observations -> chunks (B, horizon, action_dim), robot units, absolute."""
        start = time.perf_counter()
        steps = steps or self.config.num_inference_steps
        host_inputs = self.processor.inputs(observations)
        states = np.stack([np.asarray(o.state, dtype=np.float64) for o in observations])
        model_guidance = self._guidance(guidance, states) if guidance is not None else None
        generator = torch.Generator(device=self.device).manual_seed(seed) if seed is not None else None
        static = self._static_sampler(host_inputs, steps, model_guidance is not None)
        if static is not None:
            positions = positions_on_host(host_inputs, self.config.tokens_per_view)
            static.load(
                pad_inputs(host_inputs, static.key.length),
                positions,
                self._noise(host_inputs, generator),
                model_guidance,
            )
            self._sync()
            prepared = time.perf_counter()
            static.run_prefix()
            self._sync()
            encoded = time.perf_counter()
            actions = static.run_denoise()
        else:
            inputs = host_inputs.to(self.device)
            inputs.pixel_values = inputs.pixel_values.to(self.dtype)
            self._sync()
            prepared = time.perf_counter()
            with torch.inference_mode(model_guidance is None):
                kv = self.model.encode_prefix(inputs) if self.use_prefix_cache else None
                self._sync()
                encoded = time.perf_counter()
                actions = self.model.sample_actions(
                    inputs, steps, generator, model_guidance, kv=kv, reuse_prefix=self.use_prefix_cache
                )
        self._sync()
        sampled = time.perf_counter()
        chunks = self.processor.robot_actions(actions, states)
        done = time.perf_counter()
        self.last_timing = {
            "preprocess_ms": (prepared - start) * 1e3,
            "prefix_ms": (encoded - prepared) * 1e3,
            "denoise_ms": (sampled - encoded) * 1e3,
            "postprocess_ms": (done - sampled) * 1e3,
            "total_ms": (done - start) * 1e3,
        }
        return chunks

    def _noise(self, inputs: ModelInputs, generator: torch.Generator | None) -> torch.Tensor:
        """The sampler's starting noise, drawn by the same call as Evo1Model.sample_actions draws it."""
        shape = (len(inputs.action_mask), self.config.horizon, self.config.max_action_dim)
        return torch.rand(shape, generator=generator, device=self.device) * 2 - 1

    def predict_chunk(
        self,
        images: Sequence[np.ndarray | None],
        state: np.ndarray,
        instruction: str,
        steps: int | None = None,
        seed: int | None = None,
        guidance: ChunkGuidance | None = None,
    ) -> np.ndarray:
        """One observation -> one chunk (horizon, action_dim). A None image is a missing view."""
        observation = Observation(list(images), np.asarray(state), instruction)
        return self.predict_chunks([observation], steps, seed, None if guidance is None else [guidance])[0]

    def _guidance(self, guidance: Sequence[ChunkGuidance | None], states: np.ndarray) -> Guidance:
        horizon = self.config.horizon
        target = np.zeros((len(guidance), horizon, self.action_dim))
        weights = np.zeros((len(guidance), horizon), dtype=np.float32)
        max_weight = 0.0
        for i, g in enumerate(guidance):
            if g is None:
                continue
            actions, w = np.asarray(g.actions, dtype=np.float64), np.asarray(g.weights, dtype=np.float32)
            if actions.ndim != 2 or actions.shape[1] != self.action_dim or len(actions) != len(w) or len(w) > horizon:
                raise ValueError(
                    f"guidance must be (K, {self.action_dim}) actions with K <= {horizon} weights; "
                    f"got actions {actions.shape}, weights {w.shape}"
                )
            if not (np.isfinite(actions).all() and np.isfinite(w).all()):
                raise ValueError("guidance contains NaN or inf")
            target[i, : len(actions)] = actions
            weights[i, : len(w)] = np.clip(w, 0.0, 1.0)
            max_weight = max(max_weight, g.max_weight)
        normalized = self.processor.model_actions(target, states)  # already padded to max_action_dim
        return Guidance(normalized.to(self.device), torch.from_numpy(weights).to(self.device), max_weight)
