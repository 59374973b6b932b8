#!/usr/bin/env bash
# The main job: set up (if needed), then bring up the simulated arm and the policy node, send an
# instruction, run for a while and print what happened. Arguments go to `evo1 bringup`
# (e.g. scripts/run.sh --duration 60 --instruction "touch the blue block").
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup.sh"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}
if [ $# -eq 0 ]; then
    set -- --duration 20 --instruction "touch the red block"
fi
exec "$ROOT/.venv/bin/evo1" bringup "$@"
