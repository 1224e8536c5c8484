#!/usr/bin/env bash
# The whole GPU benchmark in ONE device call (ours and the original code, same machine, same run), < 9 minutes.
#
#   device tool:  command "bash bench/gpu_all.sh", carry [".bench_refs"]
#
# Needs python3 with a CUDA torch, safetensors, pillow, numpy (no gradio, no dlib, no network). The reference
# repositories travel in .bench_refs/ (git-ignored, see bench/README.md); without them only our side runs.
# Writes <OUT>/<gpu>.json, .md, .png and <gpu>_logs/ (OUT: the device tool's output folder, else bench/results),
# and prints a compact table last. Every part has its own time budget inside bench.run; the whole run is also
# capped here, and whatever finished is in the JSON/MD even when the cap is hit.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT_ROOT=${OUT:-bench/results}
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
case "$gpu" in
  *H200*) NAME=${BENCH_NAME:-h200} ;;
  *H100*) NAME=${BENCH_NAME:-h100} ;;
  *) NAME=${BENCH_NAME:-gpu} ;;
esac
DEST="$OUT_ROOT/$NAME"   # -> $OUT/<gpu>.json, .md, .png and <gpu>_logs/
mkdir -p "$OUT_ROOT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}  # build the reference ops for Hopper only
export MAX_JOBS=${MAX_JOBS:-4}                              # per background build (three run at once)
export BENCH_EXT_DIR=${BENCH_EXT_DIR:-/tmp/bench_torch_ext}
echo "== $(date -u +%FT%TZ) gpu: ${gpu:-none}; python: $($PY -V 2>&1); $(nvcc --version 2>/dev/null | tail -1)"
$PY - <<'EOF'
import torch, importlib.util as u
print("torch", torch.__version__, "cuda", torch.version.cuda, "device", torch.cuda.get_device_name(0))
print("missing modules:", [m for m in ("safetensors", "PIL", "numpy", "matplotlib", "ninja") if u.find_spec(m) is None])
EOF
ls .bench_refs 2>/dev/null | sed 's/^/reference repo: /' || echo "no .bench_refs: references skipped"

timeout -k 15 "${BENCH_TIMEOUT:-525}" $PY -m bench.run --device cuda --out "$DEST" --budget "${BENCH_BUDGET:-480}" "$@"
rc=$?
[ $rc -eq 124 ] && echo "bench.run hit the ${BENCH_TIMEOUT:-525} s cap; the JSON/MD hold every part that finished"
echo "== compact table (from $DEST.json)"
$PY -m bench.report "$DEST.json" 2>&1 | tail -45
exit $rc
