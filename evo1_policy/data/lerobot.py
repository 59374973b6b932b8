"""LeRobot datasets (format v2.1 and v3.0: parquet + mp4 + meta/) <-> Episodes, with pyarrow and PyAV.

v2.1: one parquet and one mp4 per camera per episode; meta/episodes.jsonl, meta/tasks.jsonl and
meta/episodes_stats.jsonl.
v3.0: many episodes per parquet and per mp4; meta/episodes/chunk-*/file-*.parquet says where each
episode lies (row range, video file and time span) and holds its stats (`stats/<feature>/<stat>`);
meta/tasks.parquet keeps the task string as the table's (pandas) index, as LeRobot reads it.
Both: meta/stats.json (min, max, mean, std, count and the 1/10/50/90/99 % quantiles per feature;
images per channel in [0, 1]), which LeRobot's normaliser needs. The written datasets are checked
with LeRobot's own loader, normaliser and aggregation (test/test_lerobot_compat.py).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .episode import DatasetError, Episode
from .video import read_frames, write_mp4

STATE_KEY, ACTION_KEY = "observation.state", "action"
IMAGE_PREFIX = "observation.images."
CHUNKS_SIZE = 1000
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}  # LeRobot's
DATA_FILES_SIZE_IN_MB, VIDEO_FILES_SIZE_IN_MB = 100, 200  # LeRobot's defaults for v3.0 files
IMAGE_STATS_FRAMES = 100  # frames per episode sampled for the image stats


# ---------------------------------------------------------------------------------------- reading


def read_lerobot(root: str | Path, image_size: int | None = None) -> list[Episode]:
    root = Path(root)
    info_path = root / "meta" / "info.json"
    if not info_path.is_file():
        raise DatasetError(f"{root}: not a LeRobot dataset (meta/info.json is missing)")
    info = json.loads(info_path.read_text())
    version = str(info.get("codebase_version", ""))
    features = info.get("features", {})
    for key in (STATE_KEY, ACTION_KEY):
        if key not in features:
            raise DatasetError(f"{root}: feature '{key}' missing; the dataset has {sorted(features)}")
    video_keys = [k for k, f in features.items() if f.get("dtype") == "video"]
    if not video_keys:
        raise DatasetError(f"{root}: no video features (images stored in parquet are not supported)")
    if version.startswith("v2"):
        rows = _episodes_v2(root, info, video_keys)
    elif version.startswith("v3"):
        rows = _episodes_v3(root, info, video_keys)
    else:
        raise DatasetError(f"{root}: codebase_version {version!r} unsupported (v2.1 and v3.0 are)")
    names = {key: _names(features[key]) for key in (STATE_KEY, ACTION_KEY)}
    return [_episode(root, info, row, video_keys, names, image_size) for row in rows]


def _names(feature: dict[str, Any]) -> list[str]:
    names = feature.get("names")
    if isinstance(names, dict):
        names = next(iter(names.values()), [])
    return [str(n) for n in names] if isinstance(names, list) else []


def _episodes_v2(root: Path, info: dict[str, Any], video_keys: list[str]) -> list[dict[str, Any]]:
    tasks = {}
    for line in (root / "meta" / "tasks.jsonl").read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            tasks[entry["task_index"]] = entry["task"]
    rows = []
    for line in (root / "meta" / "episodes.jsonl").read_text().splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        e = entry["episode_index"]
        chunk = e // info.get("chunks_size", CHUNKS_SIZE)
        rows.append(
            {
                "episode_index": e,
                "tasks": entry.get("tasks", []),
                "length": entry["length"],
                "data": root / info["data_path"].format(episode_chunk=chunk, episode_index=e),
                "videos": {
                    k: (root / info["video_path"].format(episode_chunk=chunk, video_key=k, episode_index=e), 0.0)
                    for k in video_keys
                },
                "task_names": tasks,
            }
        )
    return rows


def _episodes_v3(root: Path, info: dict[str, Any], video_keys: list[str]) -> list[dict[str, Any]]:
    files = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    if not files:
        raise DatasetError(f"{root}: meta/episodes/chunk-*/file-*.parquet missing")
    table = pa.concat_tables([pq.read_table(f) for f in files]).to_pylist()
    tasks_table = pq.read_table(root / "meta" / "tasks.parquet").to_pylist()
    tasks = {r["task_index"]: r.get("task", r.get("__index_level_0__")) for r in tasks_table}
    rows = []
    for entry in table:
        path = root / info["data_path"].format(
            chunk_index=entry["data/chunk_index"], file_index=entry["data/file_index"]
        )
        videos = {}
        for k in video_keys:
            video = root / info["video_path"].format(
                video_key=k, chunk_index=entry[f"videos/{k}/chunk_index"], file_index=entry[f"videos/{k}/file_index"]
            )
            videos[k] = (video, float(entry[f"videos/{k}/from_timestamp"]))
        rows.append(
            {
                "episode_index": entry["episode_index"],
                "tasks": entry.get("tasks") or [],
                "length": entry["length"],
                "data": path,
                "videos": videos,
                "task_names": tasks,
            }
        )
    return rows


def _episode(
    root: Path,
    info: dict[str, Any],
    row: dict[str, Any],
    video_keys: list[str],
    names: dict[str, list[str]],
    image_size: int | None,
) -> Episode:
    e = row["episode_index"]
    where = f"{root}, episode {e}"
    if not row["data"].is_file():
        raise DatasetError(f"{where}: data file {row['data']} missing")
    table = pq.read_table(row["data"])
    episode_column = table.column("episode_index").to_numpy()
    data = table.filter(pa.array(episode_column == e)).to_pydict()
    length = len(data["episode_index"])
    if length != row["length"]:
        raise DatasetError(f"{where}: {length} rows in {row['data'].name}, meta says {row['length']}")
    order = np.argsort(np.asarray(data["frame_index"]))
    states = np.asarray(data[STATE_KEY], dtype=np.float64)[order]
    actions = np.asarray(data[ACTION_KEY], dtype=np.float64)[order]
    task = row["tasks"][0] if row["tasks"] else row["task_names"].get(data["task_index"][0], "")
    fps = float(info["fps"])
    images = [
        read_frames(path, start, length, fps, where, key, image_size) for key, (path, start) in row["videos"].items()
    ]
    return Episode(
        source=str(root),
        index=int(e),
        instruction=str(task),
        fps=fps,
        camera_names=[k.removeprefix(IMAGE_PREFIX) for k in video_keys],
        images=images,
        states=states,
        actions=actions,
        state_names=names[STATE_KEY],
        action_names=names[ACTION_KEY],
        timestamps=np.asarray(data["timestamp"], dtype=np.float64)[order],
    )


# ---------------------------------------------------------------------------------------- writing


def _stats(values: np.ndarray, image: bool = False) -> dict[str, Any]:
    """LeRobot's statistics of a feature: (N, D) values per dimension, or (N, H, W, 3) uint8 frames
    per channel in [0, 1] with shape (3, 1, 1)."""
    if image:
        values = values.reshape(-1, 3).astype(np.float64) / 255.0
    values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    out = {
        "min": values.min(0),
        "max": values.max(0),
        "mean": values.mean(0),
        "std": values.std(0),
        "count": np.array([len(values)]),
    } | {name: np.quantile(values, q, axis=0) for name, q in QUANTILES.items()}
    shape = (3, 1, 1) if image else (-1,)
    return {k: (v.reshape(shape) if k != "count" else v).tolist() for k, v in out.items()}


def _episode_stats(episode: Episode, first_index: int, task_index: int) -> dict[str, dict[str, Any]]:
    n = episode.length
    stats = {
        STATE_KEY: _stats(episode.states),
        ACTION_KEY: _stats(episode.actions),
        "timestamp": _stats((np.arange(n) / episode.fps)[:, None]),
        "frame_index": _stats(np.arange(n)[:, None]),
        "episode_index": _stats(np.full((n, 1), episode.index)),
        "index": _stats(np.arange(first_index, first_index + n)[:, None]),
        "task_index": _stats(np.full((n, 1), task_index)),
    }
    for name, images in zip(episode.camera_names, episode.images, strict=True):
        picked = images[np.linspace(0, n - 1, min(n, IMAGE_STATS_FRAMES)).round().astype(int)]
        stats[IMAGE_PREFIX + name] = _stats(picked, image=True)
    return stats


def _dataset_stats(episodes: list[Episode], per_episode: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Pooled over every frame (images over the sampled frames), so quantiles are exact."""
    pooled = {
        STATE_KEY: _stats(np.concatenate([e.states for e in episodes])),
        ACTION_KEY: _stats(np.concatenate([e.actions for e in episodes])),
    }
    for key in per_episode[0]:
        if key in pooled:
            continue
        if key.startswith(IMAGE_PREFIX):
            camera = episodes[0].camera_names.index(key.removeprefix(IMAGE_PREFIX))
            frames = [
                e.images[camera][np.linspace(0, e.length - 1, min(e.length, IMAGE_STATS_FRAMES)).round().astype(int)]
                for e in episodes
            ]
            pooled[key] = _stats(np.concatenate(frames), image=True)
        else:  # the index columns: min/max/mean/std pooled from the episodes' own
            parts = [s[key] for s in per_episode]
            counts = np.array([p["count"][0] for p in parts], dtype=np.float64)
            means = np.array([p["mean"][0] for p in parts])
            mean = float((means * counts).sum() / counts.sum())
            variance = float((((np.array([p["std"][0] for p in parts]) ** 2) + (means - mean) ** 2) * counts).sum())
            pooled[key] = {
                "min": [min(p["min"][0] for p in parts)],
                "max": [max(p["max"][0] for p in parts)],
                "mean": [mean],
                "std": [float(np.sqrt(variance / counts.sum()))],
                "count": [int(counts.sum())],
            } | {q: [float(np.median([p[q][0] for p in parts]))] for q in QUANTILES}
    return pooled


def _check_same_layout(episodes: list[Episode]) -> None:
    """Every episode needs the first one's cameras, image sizes and dims: LeRobot stores one shape
    per feature (stretching frames to fit would silently distort them)."""
    first = episodes[0]
    for e in episodes[1:]:
        where = f"episode {e.index} ({e.source})"
        if e.camera_names != first.camera_names:
            raise DatasetError(f"{where} has cameras {e.camera_names}; the first episode has {first.camera_names}")
        for name, mine, theirs in zip(e.camera_names, e.images, first.images, strict=True):
            if mine.shape[1:] != theirs.shape[1:]:
                raise DatasetError(
                    f"{where}: camera '{name}' frames are {mine.shape[2]}x{mine.shape[1]}, the first episode's "
                    f"{theirs.shape[2]}x{theirs.shape[1]}: one dataset holds one image size per camera "
                    "(resize when recording, or write separate datasets)"
                )
        for what, mine, theirs in (("state", e.states, first.states), ("action", e.actions, first.actions)):
            if mine.shape[1] != theirs.shape[1]:
                raise DatasetError(f"{where} has {mine.shape[1]} {what} dims; the first episode {theirs.shape[1]}")
        if e.fps != first.fps:
            raise DatasetError(f"{where} runs at {e.fps} fps; the first episode at {first.fps}")


def _tasks_table(tasks: list[str]) -> pa.Table:
    """meta/tasks.parquet as pandas writes a frame indexed by the task string (LeRobot reads it
    with pandas.read_parquet and looks tasks up by that index)."""
    table = pa.table({"task_index": pa.array(range(len(tasks)), type=pa.int64()), "task": tasks})
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [
            {"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object", "metadata": None}
        ],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def _flat_stats(stats: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {f"stats/{feature}/{name}": value for feature, d in stats.items() for name, value in d.items()}


def _features(episode: Episode, fps: float, lossless: bool) -> dict[str, Any]:
    features: dict[str, Any] = {
        STATE_KEY: {"dtype": "float32", "shape": [episode.states.shape[1]], "names": episode.state_names or None},
        ACTION_KEY: {"dtype": "float32", "shape": [episode.actions.shape[1]], "names": episode.action_names or None},
    }
    for name, images in zip(episode.camera_names, episode.images, strict=True):
        features[IMAGE_PREFIX + name] = {
            "dtype": "video",
            "shape": list(images.shape[1:]),
            "names": ["height", "width", "channels"],
            "info": {
                "video.height": int(images.shape[1]),
                "video.width": int(images.shape[2]),
                "video.channels": int(images.shape[3]),
                "video.fps": fps,
                "video.codec": "h264",
                "video.pix_fmt": "rgb24" if lossless else "yuv420p",
                "video.is_depth_map": False,
                "has_audio": False,
            },
        }
    for key, dtype in (
        ("timestamp", "float32"),
        ("frame_index", "int64"),
        ("episode_index", "int64"),
        ("index", "int64"),
        ("task_index", "int64"),
    ):
        features[key] = {"dtype": dtype, "shape": [1], "names": None}
    return features


def _frame_table(episode: Episode, first_index: int, task_index: int) -> pa.Table:
    n = episode.length
    fps = episode.fps
    return pa.table(
        {
            STATE_KEY: pa.array(episode.states.astype(np.float32).tolist(), type=pa.list_(pa.float32())),
            ACTION_KEY: pa.array(episode.actions.astype(np.float32).tolist(), type=pa.list_(pa.float32())),
            "timestamp": pa.array((np.arange(n) / fps).astype(np.float32)),
            "frame_index": pa.array(np.arange(n, dtype=np.int64)),
            "episode_index": pa.array(np.full(n, episode.index, dtype=np.int64)),
            "index": pa.array(np.arange(first_index, first_index + n, dtype=np.int64)),
            "task_index": pa.array(np.full(n, task_index, dtype=np.int64)),
        }
    )


def check_output(root: str | Path, overwrite: bool) -> bool:
    """True when `root` holds something (a file, or a non-empty folder) that writing would replace;
    an error unless `overwrite`. Writers call it before any slow work."""
    root = Path(root)
    occupied = root.exists() and (not root.is_dir() or any(root.iterdir()))
    if occupied and not overwrite:
        raise DatasetError(f"{root} exists and is not empty: pick another --out, or pass --overwrite to replace it")
    return occupied


def write_lerobot(
    root: str | Path,
    episodes: list[Episode],
    version: str = "v3.0",
    lossless: bool = False,
    robot_type: str = "",
    overwrite: bool = False,
) -> Path:
    """Write episodes (renumbered 0..N-1) as a LeRobot dataset of the given format version. An
    existing non-empty folder is an error unless `overwrite`, which removes it first."""
    root = Path(root)
    if not episodes:
        raise DatasetError("no episodes to write")
    if check_output(root, overwrite):
        shutil.rmtree(root) if root.is_dir() else root.unlink()
    if version not in ("v2.1", "v3.0"):
        raise DatasetError(f"format version {version!r} unsupported; write v2.1 or v3.0")
    _check_same_layout(episodes)
    fps: float | int = int(episodes[0].fps) if float(episodes[0].fps).is_integer() else episodes[0].fps
    tasks = sorted({e.instruction for e in episodes})
    task_index = {t: i for i, t in enumerate(tasks)}
    episodes = [Episode(**{**e.__dict__, "index": i}) for i, e in enumerate(episodes)]
    total = sum(e.length for e in episodes)
    firsts = np.concatenate([[0], np.cumsum([e.length for e in episodes])[:-1]]).tolist()
    episode_stats = [_episode_stats(e, f, task_index[e.instruction]) for e, f in zip(episodes, firsts, strict=True)]
    info: dict[str, Any] = {
        "codebase_version": version,
        "robot_type": robot_type,
        "fps": fps,
        "total_episodes": len(episodes),
        "total_frames": total,
        "total_tasks": len(tasks),
        "chunks_size": CHUNKS_SIZE,
        "splits": {"train": f"0:{len(episodes)}"},
        "features": _features(episodes[0], fps, lossless),
    }
    (root / "meta").mkdir(parents=True, exist_ok=True)
    layout = Layout(root, episodes, tasks, episode_stats, fps, lossless)
    (_write_v21 if version == "v2.1" else _write_v30)(layout, info)
    (root / "meta" / "stats.json").write_text(json.dumps(_dataset_stats(episodes, episode_stats), indent=2) + "\n")
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    return root


@dataclass
class Layout:
    """What both format versions write from: the folder, the renumbered episodes, the task list
    (its order is task_index), each episode's stats, the frame rate and the video codec choice."""

    root: Path
    episodes: list[Episode]
    tasks: list[str]
    episode_stats: list[dict[str, dict[str, Any]]]
    fps: float
    lossless: bool

    def task_index(self, episode: Episode) -> int:
        return self.tasks.index(episode.instruction)


def _write_v21(layout: Layout, info: dict[str, Any]) -> None:
    """One parquet and one mp4 per camera per episode; the meta/*.jsonl files."""
    root, episodes, fps = layout.root, layout.episodes, layout.fps
    info["data_path"] = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
    info["video_path"] = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
    info["total_chunks"] = 1
    first = 0
    lines = []
    for e in episodes:
        data = root / info["data_path"].format(episode_chunk=0, episode_index=e.index)
        data.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(_frame_table(e, first, layout.task_index(e)), data)
        for name, images in zip(e.camera_names, e.images, strict=True):
            video = info["video_path"].format(episode_chunk=0, video_key=IMAGE_PREFIX + name, episode_index=e.index)
            write_mp4(root / video, list(images), fps, layout.lossless)
        lines.append(json.dumps({"episode_index": e.index, "tasks": [e.instruction], "length": e.length}))
        first += e.length
    (root / "meta" / "episodes.jsonl").write_text("\n".join(lines) + "\n")
    stats_lines = [
        json.dumps({"episode_index": e.index, "stats": st})
        for e, st in zip(episodes, layout.episode_stats, strict=True)
    ]
    (root / "meta" / "episodes_stats.jsonl").write_text("\n".join(stats_lines) + "\n")
    (root / "meta" / "tasks.jsonl").write_text(
        "\n".join(json.dumps({"task_index": i, "task": t}) for i, t in enumerate(layout.tasks)) + "\n"
    )


def _write_v30(layout: Layout, info: dict[str, Any]) -> None:
    """Every episode in one parquet and one mp4 per camera; meta/episodes/ says where each lies."""
    root, episodes, fps = layout.root, layout.episodes, layout.fps
    info["data_path"] = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    info["video_path"] = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    info["data_files_size_in_mb"] = DATA_FILES_SIZE_IN_MB
    info["video_files_size_in_mb"] = VIDEO_FILES_SIZE_IN_MB
    data = root / info["data_path"].format(chunk_index=0, file_index=0)
    data.parent.mkdir(parents=True, exist_ok=True)
    tables, meta, first = [], [], 0
    for e, stats in zip(episodes, layout.episode_stats, strict=True):
        tables.append(_frame_table(e, first, layout.task_index(e)))
        row = {
            "episode_index": e.index,
            "tasks": [e.instruction],
            "length": e.length,
            "data/chunk_index": 0,
            "data/file_index": 0,
            "dataset_from_index": first,
            "dataset_to_index": first + e.length,
            "meta/episodes/chunk_index": 0,
            "meta/episodes/file_index": 0,
        }
        for name in e.camera_names:
            key = IMAGE_PREFIX + name
            row |= {
                f"videos/{key}/chunk_index": 0,
                f"videos/{key}/file_index": 0,
                f"videos/{key}/from_timestamp": first / fps,
                f"videos/{key}/to_timestamp": (first + e.length) / fps,
            }
        meta.append(row | _flat_stats(stats))
        first += e.length
    pq.write_table(pa.concat_tables(tables), data)
    for c, name in enumerate(episodes[0].camera_names):
        video = root / info["video_path"].format(video_key=IMAGE_PREFIX + name, chunk_index=0, file_index=0)
        write_mp4(video, [frame for e in episodes for frame in e.images[c]], fps, layout.lossless)
    episodes_file = root / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    episodes_file.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(meta), episodes_file)
    pq.write_table(_tasks_table(layout.tasks), root / "meta" / "tasks.parquet")
