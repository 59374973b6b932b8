"""Chunk execution: timing of requests, skipped steps, and smooth boundaries between chunks."""

from __future__ import annotations

import numpy as np
import pytest

from evo1_bringup.safety import Limits, check_chunk, finite_difference_velocities, safe_path
from evo1_policy.chunking import ChunkExecutor

HORIZON, DT = 50, 0.05


def recorded_chunks(count: int, seed: int = 0) -> list[np.ndarray]:
    """Chunks as successive calls of a trained model give them: one smooth motion, but each call
    a little off from the last (a per-chunk offset) and a little noisy. Chunk k plans ticks
    from its observation tick onwards; its observation tick is filled in by the executor run."""
    rng = np.random.default_rng(seed)
    return [(rng.normal(0, 0.04, 3), rng.normal(0, 0.002, (HORIZON, 3))) for _ in range(count)]


def motion(ticks: np.ndarray) -> np.ndarray:
    t = ticks[:, None] * DT
    return 0.6 * np.sin(t * np.array([1.0, 1.5, 2.0]) + np.array([0.0, 1.0, 2.0]))


def run(
    merge: str, delay: int, chunk_source, ticks: int = 400, execute_steps: int = 20
) -> tuple[np.ndarray, list[int], list[np.ndarray]]:
    """Drive the executor tick by tick with an inference delay; return the executed actions,
    the ticks at which chunks were merged, and the chunks as produced."""
    executor = ChunkExecutor(execute_steps=execute_steps, merge=merge, blend_steps=8, request_margin_steps=1)
    executed, merges, produced, pending = [], [], [], None
    for tick in range(ticks):
        if pending is not None and tick >= pending[0]:
            executor.merge(pending[1], pending[2], tick)
            merges.append(tick)
            pending = None
        if pending is None and executor.needs_chunk(tick, delay * DT, DT):
            request = executor.request(tick, delay * DT, DT)
            chunk = chunk_source(tick, request, len(produced))
            produced.append(chunk)
            pending = (tick + delay, chunk, tick)
        upcoming = executor.upcoming(tick, 1)
        if len(upcoming):
            executed.append(upcoming[0])
    return np.array(executed), merges, produced


def boundary_and_inside_jumps(executed: np.ndarray, merges: list[int], produced: list[np.ndarray], first_tick: int):
    steps = np.abs(np.diff(executed, axis=0)).max(axis=1)
    near = set()
    for m in merges[1:]:
        near.update(range(m - first_tick - 1, m - first_tick + 9))  # the splice and the blend after it
    boundary = max(steps[i] for i in near if 0 <= i < len(steps))
    inside = max(np.abs(np.diff(c, axis=0)).max() for c in produced)
    return boundary, inside


def synthetic_source(chunks):
    def source(tick, request, index):
        offset, noise = chunks[index]
        return motion(np.arange(tick + 1, tick + 1 + HORIZON)) + offset + noise

    return source


@pytest.mark.parametrize("delay", [2, 5])
def test_blend_keeps_boundary_jumps_within_inside_jumps(delay: int) -> None:
    chunks = recorded_chunks(60)
    executed, merges, produced = run("blend", delay, synthetic_source(chunks))
    boundary, inside = boundary_and_inside_jumps(executed, merges, produced, first_tick=delay)
    assert len(merges) > 10
    assert boundary <= inside, f"boundary jump {boundary:.4f} > largest jump inside chunks {inside:.4f}"
    # Without merging, the same chunks jump at the boundaries: the check above can fail.
    executed, merges, produced = run("latest_only", delay, synthetic_source(chunks))
    boundary_latest, inside = boundary_and_inside_jumps(executed, merges, produced, first_tick=delay)
    assert boundary_latest > inside


def test_real_time_chunking_with_the_model_keeps_boundaries_smooth(tiny_policy) -> None:
    """The tiny model's chunks, denoised with guidance toward the committed actions."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)

    def source(tick, request, index):
        chunk = tiny_policy.predict_chunk([image], np.zeros(7), "wave", seed=index, guidance=request.guidance)
        return chunk[:, :3]

    def unguided(tick, request, index):
        return tiny_policy.predict_chunk([image], np.zeros(7), "wave", seed=index)[:, :3]

    rtc_executed, rtc_merges, rtc_chunks = run("rtc", 3, _padded(source), ticks=200, execute_steps=8)
    boundary, inside = boundary_and_inside_jumps(rtc_executed, rtc_merges, rtc_chunks, first_tick=3)
    assert boundary <= inside, f"boundary {boundary:.4f} > inside {inside:.4f}"
    latest_executed, latest_merges, latest_chunks = run("latest_only", 3, _padded(unguided), ticks=200, execute_steps=8)
    latest_boundary, _ = boundary_and_inside_jumps(latest_executed, latest_merges, latest_chunks, first_tick=3)
    assert boundary < latest_boundary


def _padded(source):
    """The executor plans 7 dims for the model; the guidance it builds has those dims."""

    def wrapped(tick, request, index):
        if request.guidance is not None:
            actions = request.guidance.actions
            request.guidance.actions = np.hstack([actions, np.zeros((len(actions), 7 - actions.shape[1]))])
        return source(tick, request, index)

    return wrapped


def test_elapsed_steps_are_skipped_and_requests_come_early() -> None:
    executor = ChunkExecutor(execute_steps=20, merge="latest_only", request_margin_steps=2)
    assert executor.needs_chunk(0, 0.2, DT)  # nothing planned
    chunk = np.arange(HORIZON, dtype=float)[:, None]
    skipped = executor.merge(chunk, observation_tick=10, now_tick=14)
    assert skipped == 4  # actions for ticks 11..14 already passed
    np.testing.assert_array_equal(executor.upcoming(14, 3)[:, 0], [4, 5, 6])
    # 0.2 s latency = 4 steps; with a 2-step margin the next request goes out at 20 - 6 = 14 executed.
    assert not executor.needs_chunk(10 + 12, 0.2, DT)
    assert executor.needs_chunk(10 + 14, 0.2, DT)
    assert executor.planned(10 + HORIZON) == 0


def test_safety_clamps_and_checks() -> None:
    limits = Limits.of([-1, -1], [1, 1], [1.0, 2.0], DT)  # 0.05 and 0.1 per step
    times = np.arange(1, 4) * DT
    path = safe_path(np.array([[5.0, -5.0], [5.0, -5.0], [0.0, 0.0]]), np.zeros(2), times, limits)
    np.testing.assert_allclose(path, [[0.05, -0.1], [0.1, -0.2], [0.05, -0.1]])
    velocities = finite_difference_velocities(path, np.zeros(2), times)
    assert np.all(velocities[-1] == 0) and np.all(np.abs(velocities) <= [1.0, 2.0])
    assert check_chunk(np.array([[0.0, np.nan]]), limits, 0.1) == ("NaN or inf", "model output contains NaN or inf")
    assert check_chunk(np.array([[1.2, 0.0]]), limits, 0.1)[0] == "beyond joint limits"
    assert check_chunk(np.array([[1.05, 0.0]]), limits, 0.1) is None


def test_the_chunk_executor_does_not_load_torch() -> None:
    """Pure logic: importing it (and the safety rules) must not pull in torch or transformers."""
    import subprocess
    import sys

    code = (
        "import sys, evo1_policy.chunking, evo1_bringup.safety; "
        "print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert run.stdout.strip() == "[]"
