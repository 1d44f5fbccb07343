#!/usr/bin/env bash
# Build and install the structvpr_msgs interface package with plain CMake (colcon is not on
# PyPI). Usage: build_msgs.sh VENV INSTALL_PREFIX
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$(cd "$1" && pwd)
mkdir -p "$2"
PREFIX=$(cd "$2" && pwd)
BUILD=$ROOT/build/structvpr_msgs
py=$VENV/bin/python

command -v cmake >/dev/null || { echo "[setup] error: cmake is required to build structvpr_msgs (apt-get install cmake)" >&2; exit 1; }

if [ -z "${ROS_DISTRO:-}" ]; then
  # The Kilted wheels' exported CMake files name the include directories of the machine they
  # were built on; point them at this interpreter's headers and numpy's.
  py_inc=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  np_inc=$("$py" -c 'import numpy; print(numpy.get_include())')
  [ -f "$py_inc/Python.h" ] || { echo "[setup] error: Python headers missing in $py_inc (install python3.11-dev)" >&2; exit 1; }
  { grep -rlZ --include='*.cmake' '/opt/python/cp311-cp311' "$VENV/share" 2>/dev/null || true; } \
    | xargs -0 -r sed -i \
        -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$np_inc#g" \
        -e "s#/opt/python/cp311-cp311/include/python3.11#$py_inc#g"
  prefix_path=$VENV
  export PATH=$VENV/bin:$PATH
  export AMENT_PREFIX_PATH=$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}
else
  prefix_path=${CMAKE_PREFIX_PATH:-/opt/ros/$ROS_DISTRO}
fi

generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
rm -rf "$BUILD"
mkdir -p "$BUILD"
cmake -S "$ROOT/structvpr_msgs" -B "$BUILD" "${generator[@]}" \
  -DCMAKE_PREFIX_PATH="$prefix_path" -DPython3_EXECUTABLE="$py" \
  -DBUILD_TESTING=OFF -DCMAKE_INSTALL_PREFIX="$PREFIX" -DCMAKE_BUILD_TYPE=Release > "$BUILD.log" 2>&1 \
  || { tail -n 30 "$BUILD.log" >&2; echo "[setup] error: configuring structvpr_msgs failed (log: $BUILD.log)" >&2; exit 1; }
cmake --build "$BUILD" -j 2 >> "$BUILD.log" 2>&1 \
  || { tail -n 30 "$BUILD.log" >&2; echo "[setup] error: building structvpr_msgs failed (log: $BUILD.log)" >&2; exit 1; }
cmake --install "$BUILD" >> "$BUILD.log" 2>&1
