"""Parameter counts (`evo1 info`) and inference speed/memory (`evo1 bench`)."""

from __future__ import annotations

import gc
import resource
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import Evo1Config, preset
from ..guidance import ChunkGuidance
from ..model import Evo1Model
from ..policy import Evo1Policy


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_counts(model: Evo1Model) -> dict[str, int]:
    vlm = model.embedder.model
    head = model.action_head
    lm = vlm.language_model
    counts = {
        "vision_tower": _count(vlm.vision_tower),
        "projector": _count(vlm.multi_modal_projector),
        "language_model.embeddings": _count(lm.embed_tokens),
        "language_model.layers": _count(lm) - _count(lm.embed_tokens),
        "action_head.state_encoder": _count(head.state_encoder),
        "action_head.action_encoder": _count(head.action_encoder),
        "action_head.blocks": _count(head.transformer_blocks),
        "action_head.decoder": _count(head.norm_out) + _count(head.seq_pool_proj) + _count(head.mlp_head),
    }
    counts["total"] = _count(model)
    return counts


def meta_model(config: Evo1Config) -> Evo1Model:
    """The model's structure without memory: parameters on the meta device."""
    with torch.device("meta"):
        return Evo1Model(config)


def info(
    config_name: str | None = None, checkpoint: str | None = None, dataset_key: str | None = None
) -> dict[str, Any]:
    if checkpoint:
        from ..checkpoint import load_checkpoint

        # Loaded for real, so a corrupt file is found here and not on the robot.
        model, normalizer, _, report = load_checkpoint(checkpoint, dataset_key=dataset_key)
        c = model.config
        return {
            "preset": c.preset,
            "parameters": parameter_counts(model),
            "tokens_per_view": c.tokens_per_view,
            "checkpoint": {
                "load": report.summary(),
                "format": report.format,
                "era": c.era,
                "step": report.step,
                "normalization": normalizer.mode,
                "normalization_convention": normalizer.convention,
                "state_dim": normalizer.state_dim,
                "action_dim": normalizer.action_dim,
                "view_slots": c.max_views if c.fixed_view_slots else "one per camera",
                "dataset_keys": report.dataset_keys,
                "denoising_steps": c.num_inference_steps,
                "time_index": f"int(t * {c.head.time_index_scale})",
                "head_heads": c.head.num_heads,
                "missing_view": c.missing_view_fill,
                "head_attends_padding": c.head_attends_padding,
                "masked_positions_in_lm": "zero (flash-attention)" if c.zero_masked_attention else "attend (SDPA)",
                "image_resize": c.image_resize,
            },
        }
    config = preset(config_name or "evo1-0.77b")
    counts = parameter_counts(meta_model(config))
    return {"preset": config.preset, "parameters": counts, "tokens_per_view": config.tokens_per_view}


def format_info(result: dict[str, Any]) -> str:
    lines = [f"{result['preset']}  ({result['tokens_per_view']} visual tokens per view)"]
    if "checkpoint" in result:
        c = result["checkpoint"]
        step = "unknown" if c["step"] is None else c["step"]
        keys = ", ".join(f"{arm}: {', '.join(d) or '(one dataset)'}" for arm, d in c["dataset_keys"].items())
        lines += [
            f"  {c['load']}",
            f"  format {c['format']}, era {c['era']}, step {step}",
            f"  normalisation {c['normalization']} ({c['normalization_convention']} arithmetic), "
            f"{c['state_dim']} state / {c['action_dim']} action dims",
            f"  dataset keys: {keys or '(single entry)'}",
            f"  view slots: {c['view_slots']}; missing view: {c['missing_view']}; resize: {c['image_resize']}",
            f"  {c['denoising_steps']} Euler steps, time row {c['time_index']}, {c['head_heads']} head attention heads",
            f"  head attends padding: {c['head_attends_padding']}; masked positions in the LM: "
            f"{c['masked_positions_in_lm']}",
        ]
    for name, n in result["parameters"].items():
        lines.append(f"  {name:<28} {n:>14,d}  {n / 1e6:9.2f} M")
    return "\n".join(lines)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


PROMPT = "pick up the red cube and place it in the bowl"
SAME_SEED = 12345  # the chunk every path computes for the side-by-side difference


def _stats(timings: list[dict[str, float]]) -> dict[str, Any]:
    totals = [t["total_ms"] for t in timings]
    return {
        "ms_p50": _percentile(totals, 50),
        "ms_p95": _percentile(totals, 95),
        "ms_p99": _percentile(totals, 99),
        "chunks_per_s": 1000.0 / statistics.median(totals),
        "stage_ms_p50": {k: _percentile([t[k] for t in timings], 50) for k in timings[0] if k != "total_ms"},
    }


def compile_modes(spec: str) -> list[str]:
    """ "off,graphs" -> ["off", "graphs"], each checked."""
    from ..config import COMPILE_MODES

    modes = [m.strip() for m in spec.split(",") if m.strip()]
    bad = [m for m in modes if m not in COMPILE_MODES]
    if bad or not modes:
        raise ValueError(f"--compile {spec!r}: choose from {list(COMPILE_MODES)}, comma-separated")
    return modes


def bench(
    config_name: str | None = None,
    checkpoint: str | None = None,
    device: str = "cpu",
    dtype: str | None = None,
    steps: int | None = None,
    views: int = 1,
    repeats: int = 20,
    warmup: int = 3,
    uncached_repeats: int | None = None,
    image_size: tuple[int, int] = (480, 640),
    dataset_key: str | None = None,
    compile: str = "off",
    guided: bool = False,
    threads: int = 0,
) -> dict[str, Any]:
    """Milliseconds per chunk (p50/p95/p99) after warm-up for each inference path in `compile`,
    plain and, with `guided`, RTC-guided; the paths share one model and take turns call by call, so
    a busy machine's drift falls on all of them alike and their ratio holds. Also each path's
    warm-up (capture, compilation) time, its peak memory, and its largest difference from the first
    path's chunk for the same noise; and the prefix cache off as a reference (eager only)."""
    modes = compile_modes(compile)
    if threads > 0:
        torch.set_num_threads(threads)
    if checkpoint:
        first = Evo1Policy.from_checkpoint(checkpoint, device=device, dtype=dtype, dataset_key=dataset_key)
    else:
        first = Evo1Policy.from_preset(config_name or "evo1-tiny", 7, 7, device=device, dtype=dtype)
    return _bench_policy(first, modes, steps, views, repeats, warmup, uncached_repeats, image_size, guided)


def _bench_policy(
    first: Evo1Policy,
    modes: list[str],
    steps: int | None,
    views: int,
    repeats: int,
    warmup: int,
    uncached_repeats: int | None,
    image_size: tuple[int, int],
    guided: bool,
) -> dict[str, Any]:
    """bench() once the policy is loaded: the paths on one shared model, then the uncached run."""
    cuda = first.device.type == "cuda"
    weights = torch.cuda.memory_allocated(first.device) if cuda else 0
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (*image_size, 3), dtype=np.uint8) for _ in range(views)]
    state = np.zeros(first.state_dim)
    committed = np.linspace(-0.5, 0.5, first.config.horizon // 2)[:, None].repeat(first.action_dim, axis=1)
    request = ChunkGuidance(committed, np.linspace(1.0, 0.0, len(committed)))
    kinds = {"plain": None, **({"guided": request} if guided else {})}
    result: dict[str, Any] = {
        "preset": first.config.preset,
        "device": str(first.device),
        "device_name": torch.cuda.get_device_name(first.device) if cuda else _cpu_name(),
        "dtype": str(first.dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "views": views,
        "steps": steps or first.config.num_inference_steps,
        "torch": torch.__version__,
        "timing": "paths interleaved call by call",
        "paths": {},
    }
    policies = _warm_paths(first, modes, views, steps, guided, weights, result["paths"])
    for kind, guidance in kinds.items():
        _time_interleaved(policies, kind, guidance, images, state, steps, warmup, repeats, result["paths"])
    for mode in modes:
        entry = result["paths"][mode]
        if guided:
            entry["guided_over_plain"] = entry["guided"]["ms_p50"] / entry["plain"]["ms_p50"]
        if mode != modes[0]:
            entry["speedup_vs_" + modes[0]] = result["paths"][modes[0]]["plain"]["ms_p50"] / entry["plain"]["ms_p50"]
    result["cached"] = result["paths"][modes[0]]["plain"]  # the first path: what older readers expect
    count = repeats if uncached_repeats is None else uncached_repeats
    if count > 0:
        first.use_prefix_cache = False  # eager: the VLM at every denoising step, for comparison
        result["uncached"] = _stats(
            [_timed(first, images, state, steps, i, None) for i in range(warmup + count)][warmup:]
        )
        first.use_prefix_cache = True
    result["peak_memory_mb"] = _peak_memory_mb(first.device)
    result["peak_memory_kind"] = "cuda_max_allocated" if cuda else "process_max_rss"
    return result


def _timed(
    policy: Evo1Policy, images: list, state: np.ndarray, steps: int | None, seed: int, guidance: Any
) -> dict[str, float]:
    policy.predict_chunk(images, state, PROMPT, steps=steps, seed=seed, guidance=guidance)
    return dict(policy.last_timing)


def _warm_paths(
    first: Evo1Policy, modes: list[str], views: int, steps: int | None, guided: bool, weights: int, out: dict
) -> dict[str, Evo1Policy]:
    """One policy per path on the same model, warmed up one at a time, so each path's warm-up and
    memory are its own (written into `out[mode]`)."""
    policies: dict[str, Evo1Policy] = {}
    for mode in modes:
        policy = Evo1Policy(first.model, first.processor, first.device, first.dtype, compile=mode)
        held = _start_peak(policy.device)
        warmup_s = policy.warm_up(views, PROMPT, steps, guided)
        out[mode] = {
            "warmup_s": warmup_s,
            "inference_path": policy.inference_path,
            "peak_memory_mb": _peak_memory_mb(policy.device) - (held - weights) / 2**20,
        }
        policies[mode] = policy
    return policies


def _time_interleaved(
    policies: dict[str, Evo1Policy],
    kind: str,
    guidance: Any,
    images: list,
    state: np.ndarray,
    steps: int | None,
    warmup: int,
    repeats: int,
    out: dict,
) -> None:
    """The paths take turns call by call (a busy machine's drift falls on all alike); then each
    path's chunk for one seed against the first path's (`out[mode][kind]`)."""
    modes = list(policies)
    timings: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    for i in range(warmup + repeats):
        for mode, policy in policies.items():
            timing = _timed(policy, images, state, steps, i, guidance)
            if i >= warmup:
                timings[mode].append(timing)
    reference = None
    for mode, policy in policies.items():
        out[mode][kind] = _stats(timings[mode])
        chunk = policy.predict_chunk(images, state, PROMPT, steps=steps, seed=SAME_SEED, guidance=guidance)
        reference = chunk if reference is None else reference
        out[mode][kind]["max_abs_diff_vs_" + modes[0]] = float(np.abs(chunk - reference).max())


def _start_peak(device: torch.device) -> int:
    """Start a fresh memory peak (CUDA); the bytes already held (other paths' captured graphs)."""
    gc.collect()
    if device.type != "cuda":
        return 0
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"


def format_bench(result: dict[str, Any]) -> str:
    head = (
        f"{result['preset']} on {result['device']} ({result['device_name']}, {result['threads']} threads), "
        f"{result['dtype']}, {result['views']} view(s), {result['steps']} denoising steps"
    )
    lines = [head]
    paths = list(result["paths"])
    for mode, entry in result["paths"].items():
        lines.append(
            f"  path {mode} ({entry['inference_path']}): warm-up {entry['warmup_s']:.1f} s, "
            f"peak memory {entry['peak_memory_mb']:.0f} MiB"
        )
        for kind in ("plain", "guided"):
            if kind not in entry:
                continue
            r = entry[kind]
            stages = ", ".join(f"{k.removesuffix('_ms')} {v:.1f}" for k, v in r["stage_ms_p50"].items())
            diff = r["max_abs_diff_vs_" + paths[0]]
            lines.append(
                f"    {kind:<6} p50 {r['ms_p50']:.1f} ms  p95 {r['ms_p95']:.1f}  p99 {r['ms_p99']:.1f}  "
                f"{r['chunks_per_s']:.1f} chunks/s   [{stages}]"
                + (f"  max |diff| vs {paths[0]} {diff:.2e}" if mode != paths[0] else "")
            )
        extra = [f"guided/plain {entry['guided_over_plain']:.2f}x"] if "guided_over_plain" in entry else []
        if "speedup_vs_" + paths[0] in entry:
            extra.append(f"{entry['speedup_vs_' + paths[0]]:.2f}x faster than {paths[0]} (plain p50)")
        if extra:
            lines.append("    " + "; ".join(extra))
    if "uncached" in result:
        r = result["uncached"]
        lines.append(
            f"  prefix cache off (eager): p50 {r['ms_p50']:.1f} ms  p95 {r['ms_p95']:.1f} ms  "
            f"{r['chunks_per_s']:.1f} chunks/s"
        )
    lines.append(f"  peak memory: {result['peak_memory_mb']:.0f} MiB ({result['peak_memory_kind']})")
    return "\n".join(lines)
