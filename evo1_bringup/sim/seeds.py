"""The simulated arm's seed ranges, with no simulator import (the CLI reads them for its defaults,
on machines without MuJoCo too). A seed fixes an episode's cube placements and start pose.

Three ranges that never meet (docs/sim.md, "Seeds"): demonstrations are recorded from 0 up;
models and recipes are chosen on the validation range; a shipped model's figures are measured on
the report range, once.
"""

from __future__ import annotations

TRAIN_SEED_START = 0  # sim-record's demonstrations: 0, 1, 2, ...
VALIDATION_SEED_START = 200_000  # choosing between checkpoints, recipes and settings
EVAL_SEED_START = 100_000  # the report range: the figures a shipped model states
SPLITS = {"validation": VALIDATION_SEED_START, "report": EVAL_SEED_START}
