"""The simulated arm's seed ranges, with no simulator import (the CLI reads them for its defaults,
on machines without MuJoCo too). A seed fixes an episode's cube placements and start pose."""

from __future__ import annotations

EVAL_SEED_START = 100_000  # evaluation placements: seeds far from the training ones (0, 1, 2, ...)
