"""Run by LeRobot's own Python (.venv-lerobot) from test_lerobot_compat.py: open datasets that
`evo1 bag2dataset` wrote with LeRobot 0.4.4 itself, and print what LeRobot sees as JSON.

    python test/lerobot_check.py DATASET_A DATASET_B AGGREGATE_OUT
    python test/lerobot_check.py --one DATASET
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from lerobot.configs.types import FeatureType, NormalizationMode, PolicyFeature
from lerobot.datasets.aggregate import aggregate_datasets
from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata
from lerobot.processor.normalize_processor import NormalizerProcessorStep

if sys.argv[1] == "--one":  # one dataset (what `evo1 record --format lerobot` wrote): what LeRobot sees
    root = Path(sys.argv[2])
    meta = LeRobotDatasetMetadata("local/one", root=root)
    dataset = LeRobotDataset("local/one", root=root, video_backend="pyav")
    last = dataset.hf_dataset[len(dataset.hf_dataset) - 1]
    print(json.dumps({
        "episodes": meta.total_episodes, "frames": meta.total_frames, "rows": len(dataset.hf_dataset),
        "tasks": list(meta.tasks.index), "fps": meta.fps, "features": sorted(meta.features),
        "last_episode_index": int(last["episode_index"]),
    }))  # fmt: skip
    sys.exit(0)
first, second, out = (Path(p) for p in sys.argv[1:4])
meta = LeRobotDatasetMetadata("local/first", root=first)
dataset = LeRobotDataset("local/first", root=first, video_backend="pyav")
rows = [dataset.hf_dataset[i] for i in (0, len(dataset.hf_dataset) - 1)]
# What LeRobotDataset.__getitem__ puts under "task" (its frames need a video decoder, see the test)
tasks = [meta.tasks.iloc[int(row["task_index"])].name for row in rows]

state_dim = meta.features["observation.state"]["shape"][0]
normalizer = NormalizerProcessorStep.from_lerobot_dataset(
    dataset,
    {"observation.state": PolicyFeature(type=FeatureType.STATE, shape=(state_dim,))},
    {FeatureType.STATE: NormalizationMode.MIN_MAX},
)
state = rows[0]["observation.state"][None]
normalized = normalizer._normalize_observation({"observation.state": state}, inverse=False)["observation.state"]

aggregate_datasets(["local/first", "local/second"], "local/both", roots=[first, second], aggr_root=out)
both = LeRobotDatasetMetadata("local/both", root=out)
print(
    json.dumps(
        {
            "fps": meta.fps,
            "tasks": tasks,
            "task_table": list(meta.tasks.index),
            "stats_keys": sorted(meta.stats or {}),
            "state_min": np.asarray(meta.stats["observation.state"]["min"]).tolist(),
            "state_max": np.asarray(meta.stats["observation.state"]["max"]).tolist(),
            "image_mean_shape": list(np.asarray(meta.stats["observation.images.front"]["mean"]).shape),
            "state": state[0].tolist(),
            "normalized_state": torch.as_tensor(normalized)[0].tolist(),
            "aggregated": {
                "episodes": both.total_episodes,
                "frames": both.total_frames,
                "tasks": list(both.tasks.index),
            },
        }
    )
)
