#!/usr/bin/env bash
# The main job: set up (if needed), then bring up the simulated arm (MuJoCo) and the policy node
# with the shipped policy, run 6 scored episodes ("touch the red cube", ...) and print their
# results; videos and frame strips of the first 3 go to runs/bringup/. Arguments go to
# `evo1 bringup` (e.g. scripts/run.sh --episodes 20, or --duration 60 --instruction "touch the blue cube").
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup.sh"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}
if [ $# -eq 0 ]; then
    set -- --episodes 6 --videos runs/bringup
fi
exec "$ROOT/.venv/bin/evo1" bringup "$@"
