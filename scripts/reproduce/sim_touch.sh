#!/usr/bin/env bash
# Rebuild models/sim_touch from a bare checkout with the committed configs and seeds (docs/sim.md,
# "Reproducing the shipped policy"). Resumable: a step whose output exists is skipped, so run it
# again after an interruption (long steps: run it under nohup). About 2.5 hours on 2 CPU cores.
#
#   scripts/reproduce/sim_touch.sh [OUT]        # OUT: where the model goes (default runs/reproduce/sim_touch)
#
# It ends by scoring the rebuilt model on the validation seeds. The report seeds (the README's
# figures) are for a model that ships: run `evo1 sim-eval --split report ...` once, on that one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
out=${1:-runs/reproduce/sim_touch}
evo1=.venv/bin/evo1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
bash scripts/setup.sh

step() { echo "[reproduce sim_touch] $*"; }
# 1. Expert demonstrations through the simulator's topics (seeds 0-399 with their own targets;
#    1000-1179 once per cube), two recorders in parallel. Each part is recorded into DIR.partial and
#    moved to DIR when whole, so an interrupted part is recorded again, never half used.
record() {  # record DIR ARGS...: one part, skipped when DIR is already whole
    local dir=$1; shift
    [ -d "$dir" ] && return 0
    rm -rf "$dir.partial"
    step "recording $dir: $*"
    $evo1 sim-record --out "$dir.partial" "$@" > "$dir.log" 2>&1
    mv "$dir.partial" "$dir"
}
mkdir -p data/sim_demos_all
record data/sim_demos --episodes 400 --seed-start 0 &
first=$!
for part in a:1000 b:1060 c:1120; do
    record "data/sim_demos_all/${part%%:*}" --episodes 60 --seed-start "${part##*:}" --every-target
done
wait "$first"
# 2. Stage 0: the backbone answers questions about simulator scenes (config/train/pretrain_vlm_sim.yaml).
[ -f runs/vlm_sim/final/model.safetensors ] || { step "stage 0"; $evo1 pretrain-vlm config/train/pretrain_vlm_sim.yaml; }
# 3. Stages 1 and 2 from it (config/train/train_sim.yaml).
#    Resumed from the newest saved step (every train.save_every steps) after an interruption.
if [ ! -f runs/sim_touch/final/model.safetensors ]; then
    latest=$(ls -d runs/sim_touch/stage*/step_* runs/sim_touch/stage1/final 2>/dev/null | sort -V | tail -n 1 || true)
    step "stages 1 and 2${latest:+ (resuming from $latest)}"
    $evo1 train config/train/train_sim.yaml ${latest:+--resume "$latest"}
fi
# 4. The shipped form: bfloat16, the bundled tokenizer, the recipe named in its metadata.
[ -f "$out/model.safetensors" ] || $evo1 convert runs/sim_touch/final "$out" --bf16 --bundled-tokenizer \
    --recipe scripts/reproduce/sim_touch.sh
# 5. Its figures on the validation seeds (200000 up), told the right cube and another one.
$evo1 sim-eval --checkpoint "$out" --split validation --episodes 50 --wrong-instruction both --out "$out-eval"
