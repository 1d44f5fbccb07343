#!/usr/bin/env bash
# A runtime-only environment (no PyTorch) made from scratch, checked, and measured.
#
#   scripts/runtime_env.sh VENV MODEL.onnx [OUT_DIR]
#
# 1. creates VENV (python3.11 -m venv) and installs `pip install ".[runtime]"` plus the ROS 2
#    wheels of requirements-ros.txt (with a real ROS 2 sourced, ROS_DISTRO set: its packages
#    through --system-site-packages instead), builds structvpr_msgs into VENV/ros and writes
#    VENV/ros/setup.bash;
# 2. checks that `import torch` and `import torchvision` fail there;
# 3. runs `structvpr build-map` and `structvpr eval` on datasets/corridor with MODEL.onnx (made
#    beforehand where torch is installed: structvpr export --imagenet --out MODEL.onnx), from
#    outside the checkout so that the installed package runs;
# 4. measures the environment's size (du of VENV: the ROS wheels and their build tools included) and the
#    node's resident memory after FRAMES (default 2000) frames replayed over DDS
#    (scripts/runtime_rss.py, at RATE Hz, default 10).
# Results go to OUT_DIR (default VENV/../runtime-results): summary.txt, rss.json, logs.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${1:?usage: runtime_env.sh VENV MODEL.onnx [OUT_DIR]}
MODEL=$(realpath "${2:?usage: runtime_env.sh VENV MODEL.onnx [OUT_DIR]}")
OUT=${3:-$(dirname "$VENV")/runtime-results}
PY=${PYTHON:-python3.11}
FRAMES=${FRAMES:-2000}
RATE=${RATE:-10}

log() { printf '[runtime] %s\n' "$*"; }
die() { printf '[runtime] error: %s\n' "$*" >&2; exit 1; }
[ -f "$MODEL.json" ] || die "$MODEL.json missing: make the model with 'structvpr export' (where torch is installed)"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
quiet_pip() { grep -v 'is ignored: it is neither' >&2 || true; }

# 1. The environment.
venv_flags=() ros_reqs=()
if [ -n "${ROS_DISTRO:-}" ]; then
  venv_flags+=(--system-site-packages)
else
  ros_reqs+=(-r "$ROOT/requirements-ros.txt")
fi
t0=$(date +%s)
[ -x "$VENV/bin/python" ] || "$PY" -m venv "${venv_flags[@]}" "$VENV"
VENV=$(cd "$VENV" && pwd)
log "installing .[runtime] and the ROS 2 wheels into $VENV"
"$VENV/bin/python" -m pip install --disable-pip-version-check -q "$ROOT[runtime]" "${ros_reqs[@]}" 2> >(quiet_pip)
"$ROOT/scripts/build_msgs.sh" "$VENV" "$VENV/ros"
"$ROOT/scripts/write_setup_bash.sh" "$ROOT" "$VENV" "$VENV/ros"
log "installed in $(($(date +%s) - t0)) s"

# Everything below runs in the new environment, from outside the checkout.
# shellcheck disable=SC1091
(
  unset PYTHONPATH
  source "$VENV/ros/setup.bash"
  cd "$OUT"
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} STRUCTVPR_CACHE=$OUT/cache

  # 2. No torch.
  for m in torch torchvision; do
    if python -c "import $m" 2>/dev/null; then die "$m is importable in $VENV: not a runtime-only environment"; fi
  done
  log "import torch / torchvision: ModuleNotFoundError (as intended)"
  python -c "import structvpr_core, structvpr_ros.vpr_node; print('structvpr from', structvpr_core.__file__)"

  # 3. The commands on Corridor.
  w=$(python -c "import json, sys; print(*json.load(open(sys.argv[1]))['input_size'])" "$MODEL.json")
  set -- $w
  corridor=$ROOT/datasets/corridor
  structvpr build-map --images "$corridor/ref" --out "$OUT/corridor_map" --checkpoint "$MODEL" \
    --size "$1" "$2" --device cpu --overwrite --no-progress > "$OUT/build_map.txt" 2> "$OUT/build_map.log"
  structvpr eval --dataset "$corridor" --checkpoint "$MODEL" --size "$1" "$2" --device cpu --no-progress \
    > "$OUT/eval.txt" 2> "$OUT/eval.log"
  structvpr query --map "$OUT/corridor_map" --checkpoint "$MODEL" "$corridor/query/0000000.jpg" --device cpu \
    > "$OUT/query.txt" 2> "$OUT/query.log"
  cat "$OUT/build_map.txt" "$OUT/eval.txt"

  # 4. Size and the node's memory.
  {
    echo "venv: $VENV"
    echo "du -sh venv: $(du -sh "$VENV" | cut -f1)  ($(du -sm "$VENV" | cut -f1) MB; includes the built structvpr_msgs in ros/)"
    echo "largest site-packages entries:"
    du -sm "$VENV"/lib/python3.11/site-packages/* | sort -n | tail -8
    echo "python -c 'import torch': fails (ModuleNotFoundError)"
  } > "$OUT/size.txt"
  cat "$OUT/size.txt"
  log "node RSS over $FRAMES frames at $RATE Hz (a few minutes)"
  python "$ROOT/scripts/runtime_rss.py" --model "$MODEL" --frames "$FRAMES" --rate "$RATE" --json "$OUT/rss.json" \
    | tee "$OUT/rss.txt"
)
{
  echo "# runtime-only environment, $(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
  cat "$OUT/size.txt" "$OUT/eval.txt" "$OUT/rss.txt"
} > "$OUT/summary.txt"
log "done: $OUT/summary.txt"
