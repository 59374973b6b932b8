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
#    1000-1179 once per cube), three recorders in parallel.
[ -d data/sim_demos ] || { step "recording 400 demonstrations"; $evo1 sim-record --out data/sim_demos --episodes 400 --seed-start 0; }
for part in a:1000 b:1060 c:1120; do
    name=${part%%:*} seed=${part##*:}
    [ -d "data/sim_demos_all/$name" ] || {
        step "recording 60 placements x 3 cubes from seed $seed"
        $evo1 sim-record --out "data/sim_demos_all/$name" --episodes 60 --seed-start "$seed" --every-target
    }
done
# 2. Stage 0: the backbone answers questions about simulator scenes (config/train/pretrain_vlm_sim.yaml).
[ -f runs/vlm_sim/final/model.safetensors ] || { step "stage 0"; $evo1 pretrain-vlm config/train/pretrain_vlm_sim.yaml; }
# 3. Stages 1 and 2 from it (config/train/train_sim.yaml).
[ -f runs/sim_touch/final/model.safetensors ] || { step "stages 1 and 2"; $evo1 train config/train/train_sim.yaml; }
# 4. The shipped form: bfloat16, the bundled tokenizer, the recipe named in its metadata.
[ -f "$out/model.safetensors" ] || $evo1 convert runs/sim_touch/final "$out" --bf16 --bundled-tokenizer \
    --recipe scripts/reproduce/sim_touch.sh
# 5. Its figures on the validation seeds (200000 up), told the right cube and another one.
$evo1 sim-eval --checkpoint "$out" --split validation --episodes 50 --wrong-instruction both --out "$out-eval"
