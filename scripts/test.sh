#!/usr/bin/env bash
# The test command: set up (if needed), lint, then the whole pytest suite (slow tests included).
# Extra arguments go to pytest (e.g. scripts/test.sh -m "not slow" -x).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/setup.sh
bash scripts/setup_lerobot.sh  # LeRobot in its own venv, for test_lerobot_compat.py only
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/ruff check .
.venv/bin/ruff format --check .
status=0
.venv/bin/python -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "scripts/test.sh: pytest collected no tests: that is a failure" >&2
    exit 1
fi
exit "$status"
