#!/usr/bin/env bash
# The user's loop on the simulated arm, closed: a scripted operator (the expert, driving
# `evo1 record`'s services from a process of its own) is recorded by `evo1 record` through DDS;
# `evo1 train` fine-tunes the shipped policy on what it wrote (stage 2 only); sim-eval scores the
# result and the shipped policy side by side on the same 50 validation placements (docs/recording.md).
# Resumable: a step whose output exists is skipped. About 20 minutes on 2 CPU cores (recording 4.5,
# fine-tuning 9.5, each evaluation 2).
#
#   scripts/reproduce/record_loop.sh [OUT] [PLACEMENTS] [STEPS]   # default runs/record_loop 40 1000
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
out=${1:-runs/record_loop}
placements=${2:-40}
steps=${3:-1000}
evo1=.venv/bin/evo1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
bash scripts/setup.sh
step() { echo "[record_loop] $*"; }
mkdir -p "$out"
# 1. Placements 3000 on (none of them trained on by the shipped policy), each once per cube.
[ -f "$out/demos.done" ] || {
    step "recording $placements placements x 3 cubes through evo1 record"
    rm -rf "$out/demos"
    $evo1 sim-record --out "$out/demos" --episodes "$placements" --seed-start 3000 --every-target --through-recorder
    touch "$out/demos.done"
}
# 2. Fine-tune the shipped policy (stage 2) on them.
[ -f "$out/finetuned/final/model.safetensors" ] || {
    step "fine-tuning sim_touch for $steps steps"
    $evo1 train config/train/train_sim.yaml model.init_checkpoint=sim_touch model.internvl_hf= "train.stages=[2]" \
        train.stage2_steps="$steps" train.lr=1e-4 train.warmup_steps=50 "data.bags=[\"$out/demos/episode_*\"]" \
        output="$out/finetuned"
}
# 3. Both policies on the same 50 validation placements.
for name in finetuned shipped; do
    checkpoint=$out/finetuned/final
    [ "$name" = shipped ] && checkpoint=sim_touch
    [ -f "$out/eval_$name/sim_eval.json" ] || $evo1 sim-eval --checkpoint "$checkpoint" --split validation \
        --episodes 50 --out "$out/eval_$name"
done
.venv/bin/python - "$out" <<'PY'
import json, sys
out = sys.argv[1]
rates = {n: json.load(open(f"{out}/eval_{n}/sim_eval.json"))["success_rate"] for n in ("finetuned", "shipped")}
print(f"[record_loop] validation success: fine-tuned on evo1 record's bags {rates['finetuned']:.0%}, "
      f"shipped {rates['shipped']:.0%} ({(rates['finetuned'] - rates['shipped']) * 100:+.0f} points)")
PY
