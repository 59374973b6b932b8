"""`evo1 record`: demonstrations on any arm, one episode per bag, driven by keys or services.

The phases: (waiting) -> recording -> reset -> recording -> ... -> done. An episode ends after
`episode_time` (0: when told), is saved whole (episode_bag.py) and followed by `reset_time` for
putting the scene back; `wait_for_start` makes every episode wait for "next" instead. Before
anything is written, the checks: every camera and the joint states publish, the joint states
name the arm's joints, stamps are on this machine's clock, rates reach the dataset's, the disk
has room. Ctrl-C drops the episode that is recording (a demonstration cut at a random moment is
not one) and keeps every saved one; `q` keeps it.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..arm_config import ArmConfig
from ..paths import PACKAGE
from .episode_bag import EpisodeBag, Stream, next_index, read_metadata, saved_episodes, update_metadata
from .recorder import INSTRUCTION_KEY, RecorderNode
from .takeover import Takeover

PHASES = ("waiting", "recording", "reset", "done")
FORMATS = ("bag", "lerobot")
MIN_FREE_BYTES = 1 << 30  # below this before an episode, always warn


class RecordError(RuntimeError):
    """A problem found before or while recording, named once; nothing half-written stays."""


@dataclass
class RecordOptions:
    out: Path
    task: str
    episodes: int = 10
    episode_time: float = 60.0  # seconds; 0: until "next" (a key or ~/stop_episode)
    reset_time: float = 10.0
    fps: float = 0.0  # the rate each stream must reach and the dataset's; 0: the arm's control rate
    wait_for_start: bool = False  # every episode starts on "next" (a key or ~/start_episode)
    format: str = "bag"
    topic_timeout: float = 5.0  # seconds the checks wait for each topic's first message
    pre_roll: float = 0.5  # seconds kept before a start, for ~/start_episode with a start stamp
    max_clock_offset: float = 1.0  # seconds between a header stamp and this machine's clock
    keys: bool = True
    takeovers: bool = False  # the takeover / release controls (a policy node runs: takeover.py)
    policy_node: str = "evo1_policy_node"
    action_source: str = "command"  # --format lerobot: the commands, or the next joint state
    arm_config: str = ""  # the name or path it was loaded from (metadata)


@dataclass
class RecordedEpisode:
    path: Path
    task: str
    success: str  # "true", "false" or "unknown"
    duration: float
    counts: dict[str, int]
    dropped: dict[str, int]


@dataclass
class Session:
    """The phases and the controls. Every control (key, service, timer) goes through `handle`."""

    config: ArmConfig
    options: RecordOptions
    folder: Path  # the episode bags
    streams: list[Stream]
    node: RecorderNode | None = None
    phase: str = "waiting"
    phase_since: float = field(default_factory=time.monotonic)
    index: int = 1  # the next episode's number in the folder (continues after earlier runs)
    saved: list[RecordedEpisode] = field(default_factory=list)  # this run's
    task: str = ""
    outcome: str = "unknown"
    dropped_at_start: dict[str, int] = field(default_factory=dict)
    cpu_at_start: float = 0.0
    start_ns: int = 0
    takeover: Takeover | None = None
    log: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        from evo1_policy.data.rosbag import typestore

        self.index = next_index(self.folder)
        self.store = typestore()

    # ------------------------------------------------------------------ controls
    def handle(self, control: str, task: str = "", since: float = 0.0) -> tuple[bool, str, int]:
        """One control; returns (accepted, what happened or why not, the episode it applied to)."""
        if control == "next":
            control = "stop_episode" if self.phase == "recording" else "start_episode"
        if control == "toggle_takeover":
            control = "release" if self.takeover is not None and self.takeover.active else "takeover"
        action = {
            "start_episode": lambda task: self._start(task, since),
            "stop_episode": self._stop,
            "rerecord": self._rerecord,
            "mark_success": lambda _: self._mark("true"),
            "mark_failure": lambda _: self._mark("false"),
            "finish": self._finish,
            "takeover": lambda _: self._switch(True),
            "release": lambda _: self._switch(False),
        }.get(control)
        if action is None:
            return False, f"unknown control {control!r}", self.index
        ok, message = action(task)
        self.say(message if ok else f"{control} refused: {message}")
        return ok, message, self.index if self.phase == "recording" else self.index - 1

    def tick(self) -> None:
        """Timers: the end of an episode and of a reset; the first start."""
        elapsed = time.monotonic() - self.phase_since
        if self.phase == "recording" and 0 < self.options.episode_time <= elapsed:
            self.handle("stop_episode")
        elif self.phase in ("waiting", "reset") and not self.options.wait_for_start:  # noqa: SIM102
            if self.phase == "waiting" or elapsed >= self.options.reset_time:  # the first one starts at once
                self.handle("start_episode")

    def interrupt(self) -> None:
        """Ctrl-C or SIGTERM: drop the running episode, keep the saved ones, stop."""
        if self.phase == "recording":
            self._drop_running("interrupted")
        self._enter("done")

    # ------------------------------------------------------------------ the actions
    def _start(self, task: str, since: float = 0.0) -> tuple[bool, str]:
        if self.phase == "recording":
            return False, f"episode {self.index} is recording: stop it first"
        if self.phase == "done":
            return False, "the recording has finished"
        self._warn_disk()
        self.task, self.outcome = task or self.options.task, "unknown"
        bag = EpisodeBag(self.folder, self.index, self.streams, self._metadata(), self.store)
        self.start_ns = self.node.start_bag(bag, self.task, since)
        bag.metadata["start"] = stamp_text(self.start_ns)
        self.dropped_at_start = {k: s.dropped for k, s in self.node.stats.items()}
        self.cpu_at_start = time.process_time()  # all of this process's threads
        self._enter("recording")
        self.node.publish_event("start", self.index, self.task)
        return True, f"episode {self.index} ({len(self.saved) + 1}/{self.options.episodes}): recording {self.task!r}"

    def _stop(self, _: str) -> tuple[bool, str]:
        if self.phase != "recording":
            return False, "no episode is recording"
        bag = self.node.take_bag()
        end = self.node.now_ns()
        duration = end * 1e-9 - float(bag.metadata["start"])
        counts = {k: bag.counts[k] for k in self.node.stats}
        dropped = {k: s.dropped - self.dropped_at_start.get(k, 0) for k, s in self.node.stats.items() if s.is_camera}
        path = bag.finish(
            {
                "end": stamp_text(end),
                "duration": f"{duration:.3f}",
                "success": self.outcome,
                "counts": json.dumps(counts),
                "dropped_frames": json.dumps(dropped),
                "cpu_cores": f"{(time.process_time() - self.cpu_at_start) / max(duration, 1e-6):.3f}",
                "takeovers": json.dumps(self.takeover.within(self.start_ns, end) if self.takeover else []),
            }
        )
        self.saved.append(RecordedEpisode(path, self.task, self.outcome, duration, counts, dropped))
        self.node.publish_event("end", self.index, self.task, self.outcome == "true", duration)
        self.index += 1
        if counts.get("commands", 0) == 0:
            topic = self.config.command_topic
            self.say(
                f"warning: episode {self.index - 1} has no commands on {topic}: "
                "train from it with --action-source next-state"
            )
        if sum(dropped.values()):
            self.say(
                f"warning: episode {self.index - 1} lost {dropped} camera frames on the way (gaps in their stamps); "
                "large images over Fast DDS's default transports: FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA for the "
                "camera drivers and evo1 record (docs/recording.md)"
            )
        self._after_episode()
        return True, f"saved {path} ({duration:.1f} s, {_counts_text(counts)}, success: {self.outcome})"

    def _rerecord(self, _: str) -> tuple[bool, str]:
        if self.phase == "recording":
            self._drop_running("to be recorded again")
            self._enter("reset")
            return True, f"episode {self.index} dropped: it is recorded again after the reset"
        if not self.saved or self.phase == "done":
            return False, "no episode of this run to record again"
        last = self.saved.pop()
        shutil.rmtree(last.path)
        self.index -= 1
        self.node.publish_event("discard", self.index, last.task)
        self._enter("reset")
        return True, f"episode {self.index} ({last.path}) removed: it is recorded again after the reset"

    def _mark(self, success: str) -> tuple[bool, str]:
        if self.phase == "recording":
            self.outcome = success
            return True, f"episode {self.index} marked success: {success}"
        if not self.saved:
            return False, "no episode to mark"
        last = self.saved[-1]
        update_metadata(last.path, {"success": success})
        last.success = success
        return True, f"episode {self.index - 1} ({last.path.name}) marked success: {success}"

    def _switch(self, take: bool) -> tuple[bool, str]:
        if self.takeover is None:
            return False, "takeovers are off: start evo1 record with --takeovers, beside a running policy node"
        announce = lambda event: self.node.publish_event(event, self.index, self.task)  # noqa: E731
        return self.takeover.switch(take, self.say, announce)

    def _finish(self, _: str) -> tuple[bool, str]:
        if self.phase == "recording":
            self._stop("")
        self._enter("done")
        return True, f"finished: {len(self.saved)} episodes saved in this run"

    # ------------------------------------------------------------------ helpers
    def _drop_running(self, why: str) -> None:
        bag = self.node.take_bag()
        if bag is not None:
            bag.discard()
        self.node.publish_event("discard", self.index, self.task)
        self.say(f"episode {self.index} dropped ({why}); nothing of it was kept")

    def _after_episode(self) -> None:
        if len(self.saved) >= self.options.episodes:
            self._enter("done")
        else:
            self._enter("reset")
            self.node.publish_event("reset", self.index, self.task)

    def _enter(self, phase: str) -> None:
        self.phase, self.phase_since = phase, time.monotonic()

    def _metadata(self) -> dict[str, str]:
        from importlib.metadata import PackageNotFoundError, version

        try:
            suite = version(PACKAGE)
        except PackageNotFoundError:
            suite = "unknown"
        config_file = Path(self.options.arm_config)
        return {
            "recorder": "evo1 record",
            "suite_version": suite,
            "episode": str(self.index),
            "task": self.task,
            "success": "unknown",
            "arm_config": self.options.arm_config,
            "arm_config_yaml": config_file.read_text() if config_file.is_file() else "",
            "command_topic": self.config.command_topic,
            "command_type": self.config.record.command_type,
            "fps": str(self.fps),
            "topics": json.dumps({s.key: [s.topic, s.msgtype] for s in self.streams}),
        }

    @property
    def fps(self) -> float:
        return self.options.fps or self.config.control.rate_hz

    def _warn_disk(self) -> None:
        free = shutil.disk_usage(self.folder if self.folder.exists() else self.folder.parent).free
        now = self.node.now()
        rate = sum(s.rate(now) * len(s.latest or b"") for s in self.node.stats.values())  # bytes per second
        needed = rate * (self.options.episode_time or 60.0)
        if free < max(2 * needed, MIN_FREE_BYTES):
            self.say(
                f"warning: {free / 1e9:.1f} GB free in {self.folder}; an episode takes about {needed / 1e9:.2f} GB"
            )

    def say(self, text: str) -> None:
        self.log.append(text)
        print(f"\r\033[K[record] {text}" if sys.stderr.isatty() else f"[record] {text}", file=sys.stderr, flush=True)


def stamp_text(ns: int) -> str:
    """Exact seconds (a float would round a 2026 stamp to a quarter microsecond)."""
    return f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} {n}" for key, n in counts.items() if key != INSTRUCTION_KEY)


def live_line(session: Session) -> str:
    """episode k/N, phase, elapsed, frames per camera, dropped frames, rate."""
    node = session.node
    elapsed = time.monotonic() - session.phase_since
    limit = session.options.episode_time if session.phase == "recording" else session.options.reset_time
    shown = (
        f"{elapsed:5.1f}/{limit:.0f} s" if limit and session.phase in ("recording", "reset") else f"{elapsed:5.1f} s"
    )
    bag = node.bag
    now = node.now()
    cameras = [k for k, s in node.stats.items() if s.is_camera]
    frames = " ".join(f"{k[len('camera_') :]} {bag.counts[k] if bag else 0}" for k in cameras)
    dropped = sum(node.stats[k].dropped - session.dropped_at_start.get(k, 0) for k in cameras) if bag else 0
    rates = " ".join(f"{k[len('camera_') :]} {node.stats[k].rate(now):.1f}" for k in cameras)
    joints = node.stats["joint_states"].rate(now)
    number = min(len(session.saved) + 1, session.options.episodes)
    driver = ""
    if session.takeover is not None:
        driver = " | OPERATOR has the arm" if session.takeover.active else " | policy has the arm"
    return (
        f"episode {number}/{session.options.episodes} {session.phase} {shown} | frames {frames} | "
        f"dropped {dropped} | Hz {rates} joints {joints:.0f}{driver}"
    )


def episode_summary(folder: Path) -> list[dict[str, str]]:
    """Every saved episode's metadata (this run's and earlier ones'), for the summary."""
    return [{"path": str(p), **read_metadata(p)} for p in saved_episodes(folder)]
