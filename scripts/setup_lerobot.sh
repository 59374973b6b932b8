#!/usr/bin/env bash
# A separate venv with LeRobot 0.4.4, used only by test/test_lerobot_compat.py to check the
# datasets `evo1 bag2dataset` writes with LeRobot's own loader, normaliser and aggregation.
# Separate because LeRobot pins torch < 2.11 and torchvision < 0.26: here it gets the local CPU
# torch 2.13 and PyPI's torchvision 0.28 (a CUDA build whose C ops cannot load next to a CPU
# torch; a sitecustomize declares the two ops torchvision needs at import, and LeRobot's dataset
# code uses none of them). Video decoding inside LeRobot needs torchvision's or torchcodec's
# native parts, which PyPI has only as CUDA builds, so frames are not decoded there (our reader
# decodes the same mp4 files with PyAV, tested in test_data.py).
#
# Idempotent (.venv-lerobot/.ready). On failure it writes the reason to .venv-lerobot/.failed,
# which the test reports as its skip reason; CI prints it loudly.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv-lerobot"
PYTHON=${PYTHON:-python3}
SPEC="torch==2.13.0 torchvision==0.28.0 datasets>=4,<5 huggingface-hub>=0.34.2,<0.36 pandas av>=15,<16 \
jsonlines draccus==0.10.0 packaging<26 termcolor deepdiff einops tqdm pyarrow accelerate>=1.10,<2 \
gymnasium>=1.1.1,<2 pyserial>=3.5,<4 pynput>=1.7.7,<1.9 | lerobot==0.4.4"
want=$(echo "$SPEC" | cat - "$0" | sha256sum | cut -d' ' -f1)
[ -f "$VENV/.ready" ] && [ "$(cat "$VENV/.ready")" = "$want" ] && exit 0

fail() {
    echo "$*" > "$VENV/.failed"
    echo "evo1 setup_lerobot: $* (test_lerobot_compat.py will be skipped with this reason)" >&2
    exit 0
}
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV" || { mkdir -p "$VENV"; fail "could not create a venv with $PYTHON"; }
echo "evo1 setup_lerobot: installing LeRobot 0.4.4 into .venv-lerobot (test-only)"
pip=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
# shellcheck disable=SC2086
"${pip[@]}" ${SPEC%%|*} >"$VENV/pip.log" 2>&1 || fail "pip could not install LeRobot's dependencies (see .venv-lerobot/pip.log)"
"${pip[@]}" --no-deps ${SPEC##*|} >>"$VENV/pip.log" 2>&1 || fail "pip could not install lerobot==0.4.4 (see .venv-lerobot/pip.log)"
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cat > "$site/sitecustomize.py" <<'PY'
# Written by scripts/setup_lerobot.sh: the CUDA build of torchvision cannot load its C ops next to
# the CPU torch; declaring the two ops it registers fake kernels for at import lets it import.
import torch

for _name in ("nms", "qnms"):
    torch.library.define(f"torchvision::{_name}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
PY
"$VENV/bin/python" -c "from lerobot.datasets.lerobot_dataset import LeRobotDataset" >>"$VENV/pip.log" 2>&1 \
    || fail "lerobot installed but does not import (see .venv-lerobot/pip.log)"
echo "$want" > "$VENV/.ready"
