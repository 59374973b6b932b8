#!/usr/bin/env bash
# The fuzzer's phases on each arm and controller kind (docs/safety.md, "Arms that lag, get pushed,
# or start on receipt"): one `evo1 fuzz-node` run per cell, its JSON in docs/bench/fuzz/, and one
# markdown row per cell on stdout.
#
#   scripts/fuzz_matrix.sh [SECONDS] [ARMS] [CONTROLLERS] [PHASES]
#   scripts/fuzz_matrix.sh 300 "sim_arm xarm6" "stamp receipt" "steady lag push lag+push"   # the issue's
#   BUSY=2 scripts/fuzz_matrix.sh 60                                                       # with 2 busy loops
#
# A cell that exists already is not run again (delete its JSON to rerun): the matrix resumes.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
seconds=${1:-60}
arms=${2:-"sim_arm xarm6"}
controllers=${3:-"stamp receipt"}
phases=${4:-"steady lag push lag+push"}
out=docs/bench/fuzz
logs=${TMPDIR:-/tmp}/evo1-fuzz-matrix  # each run's printout, for a failed cell
mkdir -p "$out" "$logs"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

busy_pids=()
for _ in $(seq 1 "${BUSY:-0}"); do
    (while :; do :; done) &
    busy_pids+=($!)
done
trap 'for p in "${busy_pids[@]}"; do kill "$p" 2>/dev/null; done' EXIT

echo "| arm | controller | phase | s | busy | trajectories | beyond the limit | largest first step | pushes -> holds | first points not judged |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for arm in $arms; do
    for controller in $controllers; do
        for phase in $phases; do
            json="$out/$arm-$controller-${phase/+/-}-${seconds}s${BUSY:+-busy$BUSY}.json"
            if [ ! -f "$json" ]; then
                extra=()
                [[ $phase == *lag* ]] && extra+=(--lag 0.05)
                [[ $phase == *push* ]] && extra+=(--pushes)
                .venv/bin/evo1 fuzz-node --arm-config "$arm" --controller "$controller" --duration "$seconds" \
                    "${extra[@]}" --json "$json" > "$logs/$(basename "${json%.json}").log" 2>&1
            fi
            .venv/bin/python - "$json" "$arm" "$controller" "$phase" "${BUSY:-0}" <<'EOF'
import json, sys
path, arm, controller, phase, busy = sys.argv[1:]
try:
    r = json.load(open(path))
except (OSError, ValueError):
    print(f"| {arm} | {controller} | {phase} | - | {busy} | no result (the run's log is in $TMPDIR/evo1-fuzz-matrix) | | | | |")
    raise SystemExit
print(f"| {arm} | {controller} | {phase} | {r['seconds']:.0f} | {busy} | {r['trajectories']} | {r['violations']} "
      f"| {r['worst_first_step_of_velocity_limit']:.0%} | {r['pushes']} -> {r['off_trajectory_holds']} "
      f"| {r['unjudged_after_push']} |")
EOF
        done
    done
done
