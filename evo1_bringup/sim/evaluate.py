"""`evo1 sim-eval` and `evo1 sim-record`: episodes on the simulated arm, with the simulator and
the policy node in processes of their own, talking ROS 2 over loopback like a real arm stack.

sim-eval scores a checkpoint (success per instruction; with --wrong-instruction, each episode's
instruction names another cube, which shows whether the policy listens). sim-record drives the
simulator with the scripted expert and writes one bag per episode: the demonstrations the
default policy is trained from with `evo1 train`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import rclpy
from rclpy.executors import SingleThreadedExecutor

from ..arm_config import ArmConfig
from ..launch_args import policy_overrides
from ..paths import config_path
from ..process import start_policy_node
from ..record.episode_bag import saved_episodes
from ..record.recorder import RECORDER_NODE
from ..ros_io import isolate_domain
from .episodes import EpisodeRunner, format_summary, summarize
from .scene import CUBE_COLORS
from .seeds import EVAL_SEED_START


def _spawn(module: str, args: list[str], log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with log.open("w") as handle:  # the child keeps its own descriptor
        return subprocess.Popen([sys.executable, "-m", module, *args], stdout=handle, stderr=subprocess.STDOUT, env=env)


def stop_processes(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def run_episodes(
    runner: EpisodeRunner,
    processes: list[tuple[str, subprocess.Popen, Path]],
    timeout: float,
    until: Callable[[], bool] | None = None,
) -> None:
    """Spin the runner until every episode ended (and `until()`, if given); stop early if a
    process died or time ran out."""
    executor = SingleThreadedExecutor()
    executor.add_node(runner)
    deadline = time.monotonic() + timeout
    finished = until or (lambda: runner.done)
    try:
        while not (runner.done and finished()):
            executor.spin_once(timeout_sec=0.05)
            for name, process, log in processes:
                if process.poll() is not None and not (until and finished()):
                    tail = log.read_text()[-2000:]
                    raise RuntimeError(f"the {name} process exited with {process.returncode}; its log ends:\n{tail}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(runner.outcomes)} of {len(runner.seeds)} episodes done after {timeout:.0f} s "
                    f"(runner state: {runner.state}); logs: {', '.join(str(log) for _, _, log in processes)}"
                )
    finally:
        executor.shutdown(timeout_sec=1.0)


def _episode_budget(episodes: int, episode_timeout: float) -> float:
    return 60.0 + episodes * (episode_timeout + 6.0)


def simulator_process(
    arm_yaml: Path, seed: int, episode_timeout: float, out_dir: Path
) -> tuple[str, subprocess.Popen, Path]:
    log = out_dir / "sim.log"
    args = ["--arm-config", str(arm_yaml), "--seed", str(seed), "--episode-timeout", str(episode_timeout)]
    return "simulator", _spawn("evo1_bringup.sim.arm", args, log), log


def recorder_process(arm_yaml: Path, out_dir: Path, episodes: int) -> tuple[str, subprocess.Popen, Path]:
    """`evo1 record` waiting for its services: each episode from ~/start_episode to ~/stop_episode."""
    log = out_dir / "record.log"
    args = ["record", "--arm-config", str(arm_yaml), "--out", str(out_dir), "--episodes", str(episodes)]
    args += ["--task", "set by each ~/start_episode", "--episode-time", "0", "--wait-for-start", "--no-keys"]
    return "recorder", _spawn("evo1_bringup.cli", args, log), log


def _run(
    make_runner: Callable[[], EpisodeRunner],
    processes: list[tuple[str, subprocess.Popen, Path]],
    timeout: float,
    until: Callable[[], bool] | None = None,
) -> EpisodeRunner:
    """Run the episodes in a fresh rclpy context, then stop the processes whatever happened."""
    try:
        with rclpy.init():
            runner = make_runner()
            try:
                run_episodes(runner, processes, timeout, until)
            finally:
                runner.destroy_node()
    finally:
        stop_processes([process for _, process, _ in processes])
    return runner


def sim_eval(
    checkpoint: str,
    episodes: int,
    out: str,
    seed_start: int = EVAL_SEED_START,
    wrong_instruction: bool = False,
    videos: int = 3,
    arm_config: str = "sim_arm",
    device: str = "auto",
    episode_timeout: float = 8.0,
    compile: str = "",
) -> dict[str, Any]:
    arm_yaml = config_path(arm_config)
    config = ArmConfig.from_yaml(arm_yaml)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    seeds = list(range(seed_start, seed_start + episodes))
    isolate_domain()
    policy_log = out_dir / "policy.log"
    overrides = policy_overrides(checkpoint, device, "false", compile)
    processes = [
        simulator_process(arm_yaml, seed_start, episode_timeout, out_dir),
        ("policy node", start_policy_node(arm_yaml, overrides, policy_log), policy_log),
    ]
    label = "wrong instruction: " if wrong_instruction else ""
    runner = _run(
        lambda: EpisodeRunner(config, seeds, "policy", wrong_instruction, video_dir=out_dir / "videos", videos=videos),
        processes,
        _episode_budget(episodes, episode_timeout),
    )
    summary = summarize(runner.outcomes)
    summary.update(checkpoint=checkpoint, wrong_instruction=wrong_instruction, seeds=[seeds[0], seeds[-1]])
    (out_dir / "sim_eval.json").write_text(json.dumps(summary, indent=2))
    print(format_summary(summary, label))
    print(f"[sim] results: {out_dir / 'sim_eval.json'}; videos and frames: {out_dir / 'videos'}")
    return summary


def sim_record(
    out: str,
    episodes: int,
    seed_start: int = 0,
    arm_config: str = "sim_arm",
    episode_timeout: float = 8.0,
    every_target: bool = False,
    through_recorder: bool = False,
    direct_copy: str = "",
) -> list[Path]:
    """One bag per episode. every_target: each placement once per cube, so the picture alone
    cannot tell which cube is wanted and only the instruction can (`episodes` placements).
    through_recorder: the bags are written by `evo1 record` (a process of its own, driven through
    its services as an operator's pedal would), not by the runner: the recording path of a real arm.
    direct_copy (with through_recorder): the runner also writes its own bags of the same episodes
    there, so that `evo1 compare-bags` sees the two recording paths of one run."""
    arm_yaml = config_path(arm_config)
    config = ArmConfig.from_yaml(arm_yaml)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    seeds = list(range(seed_start, seed_start + episodes))
    targets = None
    if every_target:
        seeds = [seed for seed in seeds for _ in CUBE_COLORS]
        targets = list(CUBE_COLORS) * episodes
    isolate_domain()
    processes = [simulator_process(arm_yaml, seed_start, episode_timeout, out_dir)]
    until, recorder = None, ""
    if through_recorder:
        processes.append(recorder_process(arm_yaml, out_dir, len(seeds)))
        recorder_exited = processes[-1][1]
        until, recorder = (lambda: recorder_exited.poll() is not None), RECORDER_NODE
    runner = _run(
        lambda: EpisodeRunner(
            config,
            seeds,
            "expert",
            record_dir=(Path(direct_copy) if direct_copy else None) if through_recorder else out_dir,
            targets=targets,
            recorder=recorder,
        ),
        processes,
        _episode_budget(len(seeds), episode_timeout),
        until,
    )
    if through_recorder:
        runner.bags = saved_episodes(out_dir)
        if processes[-1][1].returncode != 0:
            raise RuntimeError(f"evo1 record exited with {processes[-1][1].returncode}: see {processes[-1][2]}")
    summary = summarize(runner.outcomes)
    print(format_summary(summary, "expert: "))
    failed = [o.seed for o in runner.outcomes if not o.success]
    if failed:
        print(f"[sim] the expert failed seeds {failed}: their bags are still written (train skips nothing by itself)")
    print(f"[sim] {len(runner.bags)} bags in {out_dir}")
    return runner.bags
