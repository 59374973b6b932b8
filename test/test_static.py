"""Static-shape inference (evo1_policy/static.py): the same chunks as the eager sampler, nothing
inside the captured code that reads a tensor back to the host, and the switch's fallbacks."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from evo1_policy.guidance import ChunkGuidance
from evo1_policy.model import Guidance
from evo1_policy.policy import Evo1Policy
from evo1_policy.processor import Observation
from evo1_policy.static import (
    BUCKET,
    ShapeKey,
    StaticPaths,
    StaticSampler,
    bucket_length,
    pad_inputs,
    positions_on_host,
)

STEPS = 6


@pytest.fixture(scope="module")
def policy() -> Evo1Policy:
    return Evo1Policy.from_preset("evo1-tiny", 7, 7, device="cpu", seed=3)


def _observations(views: int) -> list[Observation]:
    rng = np.random.default_rng(5)
    frames = [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(views)]
    # a missing view in the second sample, and prompts of different lengths (padding inside the batch)
    return [
        Observation(frames, rng.normal(size=7), "pick up the red cube"),
        Observation([frames[0], None][:views], rng.normal(size=7), "put the green cube on the blue one, gently"),
    ]


def _guidance(policy: Evo1Policy, batch: int) -> Guidance:
    rng = np.random.default_rng(9)
    target = torch.from_numpy(rng.uniform(-1, 1, (batch, policy.config.horizon, policy.config.max_action_dim)))
    weights = torch.zeros(batch, policy.config.horizon)
    weights[:, :6] = 1.0
    weights[:, 6:10] = torch.linspace(0.8, 0.2, 4)
    return Guidance(target.float(), weights, max_weight=5.0)


def _static_chunk(policy: Evo1Policy, observations: list[Observation], guidance: Guidance | None, seed: int):
    inputs = policy.processor.inputs(observations)
    length = bucket_length(inputs.input_ids.shape[1], None, False)
    sampler = StaticSampler(policy.model, ShapeKey(len(observations), 2, length, STEPS, guidance is not None))
    noise = torch.rand(sampler.noise.shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    sampler.load(pad_inputs(inputs, length), positions_on_host(inputs, policy.config.tokens_per_view), noise, guidance)
    sampler.run_prefix()
    return sampler, sampler.run_denoise(), inputs


@pytest.mark.parametrize("guided", [False, True], ids=["plain", "guided"])
def test_static_shapes_give_the_eager_chunk(policy: Evo1Policy, guided: bool) -> None:
    observations = _observations(2)
    guidance = _guidance(policy, 2) if guided else None
    sampler, static, inputs = _static_chunk(policy, observations, guidance, seed=11)
    assert sampler.key.length > inputs.input_ids.shape[1], "the bucket should pad the prompt (masked tokens)"
    assert sampler.key.length % BUCKET == 0
    eager = policy.model.sample_actions(inputs, STEPS, torch.Generator().manual_seed(11), guidance)
    assert torch.allclose(static, eager, atol=1e-5), float((static - eager).abs().max())
    # the sampler is reusable: other inputs through the same buffers give their own eager chunk
    other = [Observation(o.images, -o.state, "touch the blue cube") for o in observations]
    inputs2 = policy.processor.inputs(other)
    noise = torch.rand(sampler.noise.shape, generator=torch.Generator().manual_seed(12)) * 2 - 1
    positions = positions_on_host(inputs2, policy.config.tokens_per_view)
    sampler.load(pad_inputs(inputs2, sampler.key.length), positions, noise, guidance)
    sampler.run_prefix()
    again = sampler.run_denoise()
    eager2 = policy.model.sample_actions(inputs2, STEPS, torch.Generator().manual_seed(12), guidance)
    assert torch.allclose(again, eager2, atol=1e-5) and not torch.allclose(again, eager, atol=1e-3)


def _fullgraph(fn) -> None:
    torch._dynamo.reset()
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        torch.compile(fn, fullgraph=True, backend="eager")()


def test_nothing_inside_the_captured_code_reads_back_to_the_host(policy: Evo1Policy) -> None:
    """What a CUDA graph holds must never synchronise with the host (.item(), a data-dependent
    branch or shape). Dynamo's full-graph tracing refuses exactly those, so it checks on the CPU
    what capture would refuse on a GPU: the prefix, the plain loop and the guided loop."""
    for guidance in (None, _guidance(policy, 2)):
        sampler, _, _ = _static_chunk(policy, _observations(2), guidance, seed=1)
        _fullgraph(sampler._prefix)
        _fullgraph(sampler._denoise)
    # the instrument itself: a host read is refused
    x = torch.ones(3)

    def reads_back() -> None:
        if x.sum().item() > 1:
            x.mul_(2)

    with pytest.raises(Exception, match=r"item|Unsupported|data-dependent"):
        _fullgraph(reads_back)
    torch._dynamo.reset()


def test_a_failed_capture_runs_eagerly_and_says_so(policy: Evo1Policy) -> None:
    with pytest.raises(ValueError, match="needs CUDA"):
        policy.set_compile("graphs")  # asked for directly: refused with the reason
    paths = StaticPaths(policy.model, "graphs")  # reached anyway (e.g. a device without graphs)
    key = ShapeKey(1, 1, 64, STEPS, False)
    assert paths.sampler(key) is None and paths.sampler(key) is None
    assert paths.description.startswith("eager (graphs failed: ValueError") and "CUDA" in paths.description
    with pytest.raises(ValueError, match="compile mode 'fast' unknown"):
        policy.set_compile("fast")


@pytest.mark.slow
def test_compiled_chunks_equal_eager_ones(policy: Evo1Policy) -> None:
    """torch.compile on the CPU (inductor): the policy's own API, plain and RTC-guided."""
    rng = np.random.default_rng(2)
    images, state = [rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)], rng.normal(size=7)
    request = ChunkGuidance(rng.normal(size=(8, 7)), np.linspace(1, 0, 8))
    policy.set_compile("off")
    eager = [policy.predict_chunk(images, state, "stack the cubes", STEPS, seed=4, guidance=g) for g in (None, request)]
    policy.set_compile("compile")
    try:
        assert policy.warm_up(1, "stack the cubes", STEPS) > 0
        assert policy.inference_path == "compile"
        chunks = [
            policy.predict_chunk(images, state, "stack the cubes", STEPS, seed=4, guidance=g) for g in (None, request)
        ]
    finally:
        policy.set_compile("off")
    for got, want in zip(chunks, eager, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-4)
    assert not np.allclose(eager[0], eager[1], atol=1e-3), "guidance should change the chunk"


def test_benchmark_commands_import_without_ros_mujoco_or_metaworld() -> None:
    """scripts/gpu_check.sh runs `evo1 bench` and `evo1 bench-train` on a GPU image with torch,
    transformers and common packages only: neither may import rclpy, MuJoCo, metaworld, rosbags
    or PyAV (none is on that image)."""
    script = textwrap.dedent(
        """
        import sys
        class Refuse:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("rclpy", "mujoco", "metaworld", "gymnasium", "evo1_msgs", "rosbags", "av"):
                    raise ImportError(f"{name} is not on a bare GPU machine")
        sys.meta_path.insert(0, Refuse())
        from evo1_bringup.cli import main
        assert main(["bench", "--config", "evo1-tiny", "--steps", "2", "--repeats", "1", "--warmup", "0",
                     "--uncached-repeats", "0", "--guided"]) == 0
        assert main(["bench-train", "--config", "evo1-tiny", "--batch", "2", "--steps", "1", "--stages", "2"]) == 0
        print("IMPORTS-OK")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "IMPORTS-OK" in done.stdout, done.stdout[-2000:] + done.stderr[-3000:]
