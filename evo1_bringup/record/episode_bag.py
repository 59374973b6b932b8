"""One recorded episode as one ROS 2 bag (mcap), whole or not at all.

A bag is written in the hidden `.partial/` folder beside the episodes and moved to `episode_NNNN`
only after rosbags has closed it (index and metadata.yaml written), so a folder with an episode's
name is always a complete bag: an interrupted episode leaves at most `.partial/episode_NNNN`,
which the next run removes.
The episode's metadata (task, success, start and end, arm config, suite version, counts) lives
in the bag's own metadata.yaml as `custom_data` with keys `evo1.*`, where `ros2 bag info` shows
it and any reader of rosbag2 metadata finds it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rosbags.rosbag2 import StoragePlugin, Writer

from evo1_policy.data.rosbag import typestore

PARTIAL_FOLDER = ".partial"
EPISODE_PREFIX = "episode_"
METADATA_PREFIX = "evo1."


@dataclass(frozen=True)
class Stream:
    """A recorded topic: our key for it, the topic as the bag names it, and its type."""

    key: str
    topic: str
    msgtype: str  # "sensor_msgs/msg/Image"


def header_stamp_ns(raw: bytes | memoryview) -> int:
    """The header stamp (integer nanoseconds, exact) of a serialized message that starts with
    std_msgs/Header (Image, CompressedImage, JointState, JointTrajectory), read without
    deserializing: 4 bytes of CDR encapsulation (byte 1 says the byte order), then int32 sec and
    uint32 nanosec. 0 when the message has none."""
    if len(raw) < 12:
        return 0
    order = "<" if raw[1] == 1 else ">"
    sec, nanosec = struct.unpack_from(order + "iI", raw, 4)
    return sec * 1_000_000_000 + nanosec


def episode_name(index: int) -> str:
    return f"{EPISODE_PREFIX}{index:04d}"


def saved_episodes(folder: Path) -> list[Path]:
    """The complete episode bags in `folder`, in episode order."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith(EPISODE_PREFIX)]
    return sorted(p for p in found if p.name[len(EPISODE_PREFIX) :].isdigit())


def next_index(folder: Path) -> int:
    """1 in an empty folder; after a resumed run, one past the highest saved episode."""
    saved = saved_episodes(folder)
    return int(saved[-1].name[len(EPISODE_PREFIX) :]) + 1 if saved else 1


def remove_partials(folder: Path) -> list[Path]:
    """Remove what an interrupted run left half-written (never a complete episode); returns them."""
    staging = folder / PARTIAL_FOLDER
    if not staging.is_dir():
        return []
    partials = sorted(staging.iterdir())
    shutil.rmtree(staging)
    return partials


def read_metadata(bag: Path) -> dict[str, str]:
    """The `evo1.*` custom data of a bag, without the prefix."""
    info = yaml.safe_load((bag / "metadata.yaml").read_text()) or {}
    custom = info.get("rosbag2_bagfile_information", {}).get("custom_data") or {}
    return {k[len(METADATA_PREFIX) :]: str(v) for k, v in custom.items() if k.startswith(METADATA_PREFIX)}


def update_metadata(bag: Path, updates: dict[str, str]) -> None:
    """Change custom data of a saved bag (e.g. success marked during the reset after it); the
    file is replaced in one rename, so a reader sees the old or the new one, never half of it."""
    path = bag / "metadata.yaml"
    info = yaml.safe_load(path.read_text())
    section = info["rosbag2_bagfile_information"]
    custom = dict(section.get("custom_data") or {})
    custom.update({METADATA_PREFIX + k: str(v) for k, v in updates.items()})
    section["custom_data"] = custom
    staged = bag / ".metadata.yaml.new"
    staged.write_text(yaml.safe_dump(info, sort_keys=False))
    os.replace(staged, path)


class EpisodeBag:
    """An episode being written: raw CDR bytes in, one mcap bag out (or nothing, if discarded)."""

    def __init__(self, folder: Path, index: int, streams: list[Stream], metadata: dict[str, str], store: Any = None):
        """store: a rosbags typestore (made once by the caller: building one takes tens of ms)."""
        folder.mkdir(parents=True, exist_ok=True)
        self.final = folder / episode_name(index)
        self.partial = folder / PARTIAL_FOLDER / episode_name(index)  # same name: the mcap file is named after it
        if self.final.exists():
            raise FileExistsError(f"{self.final} exists: episodes are never overwritten")
        if self.partial.exists():
            shutil.rmtree(self.partial)
        self.partial.parent.mkdir(exist_ok=True)
        self.metadata = dict(metadata)
        self.counts: Counter[str] = Counter()
        self._writer = Writer(self.partial, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        store = store or typestore()
        self._connections = {
            s.key: self._writer.add_connection(f"/{s.topic.lstrip('/')}", s.msgtype, typestore=store) for s in streams
        }

    def write(self, key: str, stamp_ns: int, raw: bytes | memoryview) -> None:
        """One message at its header stamp (the bag's log time is the stamp, as sim-record writes)."""
        self._writer.write(self._connections[key], stamp_ns, bytes(raw))
        self.counts[key] += 1

    def finish(self, metadata: dict[str, str]) -> Path:
        """Close, then rename into place: from here on the episode exists, complete."""
        self.metadata.update(metadata)
        for key, value in self.metadata.items():
            self._writer.set_custom_data(METADATA_PREFIX + key, str(value))
        self._writer.close()
        for path in self.partial.iterdir():  # the data on disk before the name says "complete"
            _sync(path)
        os.replace(self.partial, self.final)
        _sync(self.final.parent)
        self._remove_staging()
        return self.final

    def discard(self) -> None:
        try:
            self._writer.abort()
        finally:
            shutil.rmtree(self.partial, ignore_errors=True)
            self._remove_staging()

    def _remove_staging(self) -> None:
        with contextlib.suppress(OSError):
            self.partial.parent.rmdir()  # only when empty


def _sync(path: Path) -> None:
    """fsync a file or a folder (a folder: its entries, e.g. a rename), so a power cut keeps it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
