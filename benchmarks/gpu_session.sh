#!/usr/bin/env bash
# The GPU checks of the performance issue in one go, for a machine with an NVIDIA GPU,
# CuPy, and PyTorch with CUDA:
#
#     bash benchmarks/gpu_session.sh [OUT_DIR]       # OUT_DIR: $OUT, else ./gpu_out
#
# In order of importance, each under a time limit so that one slow part cannot use up a
# short lease: the test suite on CuPy (the transfer tests and the fused kernels' tests
# included); the issue's GPU target, the DCGAN step at batch 256 against NumPy on the same
# host and PyTorch on the same GPU; the steps at batch 64; the four DCGAN layers; peak
# memory; the plot. Eight files land in OUT_DIR (device.txt, pytest_cupy.log, bench.log,
# step.json, step_more.json, layers.json, memory.json, step_time.png), the files of an
# earlier run there removed first. At most about 9.5 minutes at the default limits (in
# seconds): DEVICE_S=30, TEST_S=240, STEP_S=100, MORE_S=70, LAYERS_S=70, MEMORY_S=30, and
# 20 for the plot. A benchmark writes its JSON when it ends: one stopped at its limit leaves
# only the rows it printed in bench.log. Also: JOBS=8 test processes, PYTEST_ARGS (say, test
# files to run again), PYTHON=python3 (the interpreter with CuPy and PyTorch).
# MNIST and Fashion-MNIST are read from TINYGAN_DATA, else ./.gpudata, ./shared/data or
# ../shared/data; without them the tests that need them skip.
set -uo pipefail
out="${1:-${OUT:-gpu_out}}"
mkdir -p "$out" && out="$(CDPATH='' cd -- "$out" && pwd)" || exit 1  # before the cd below
cd "$(dirname "$0")/.." || exit 1
python="${PYTHON:-python3}"
rm -f "$out"/{device.txt,pytest_cupy.log,bench.log,step.json,step_more.json,layers.json} \
  "$out"/{memory.json,step_time.png}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
for data in "${TINYGAN_DATA:-}" .gpudata shared/data ../shared/data; do
  if [ -n "$data" ] && [ -d "$data" ]; then
    TINYGAN_DATA="$(CDPATH='' cd -- "$data" && pwd)"
    export TINYGAN_DATA
    break
  fi
done

limited() {  # limited SECONDS COMMAND...: stopped at SECONDS, killed 10 s later if need be
  timeout -k 10 "$@"
}

{
  date -u
  limited 15 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm \
    --format=csv
  limited "${DEVICE_S:-30}" "$python" - <<'PY'
import platform
import cupy, numpy
print("python", platform.python_version(), "numpy", numpy.__version__, "cupy", cupy.__version__)
print("gpu", cupy.cuda.runtime.getDeviceProperties(0)["name"].decode())
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.cuda.is_available())
except ImportError:
    print("torch: not installed")
PY
  echo "TINYGAN_DATA=${TINYGAN_DATA:-(none)}"
} 2>&1 | tee "$out/device.txt"

echo "== the test suite on CuPy ==" | tee "$out/pytest_cupy.log"
# shellcheck disable=SC2086  # PYTEST_ARGS: several words
TINYGAN_BACKEND=cupy limited "${TEST_S:-240}" "$python" -m pytest -q -p no:cacheprovider \
  -n "${JOBS:-8}" --durations=20 ${PYTEST_ARGS:-} 2>&1 | tee -a "$out/pytest_cupy.log"
echo "pytest exit status: ${PIPESTATUS[0]} (124: stopped at ${TEST_S:-240} s)" \
  | tee -a "$out/pytest_cupy.log"

run() {  # run LIMIT_S TITLE COMMAND...: one benchmark, its output appended to bench.log
  local limit="$1" title="$2"
  shift 2
  echo "== $title ==" | tee -a "$out/bench.log"
  limited "$limit" "$@" 2>&1 | tee -a "$out/bench.log"
  echo "exit status: ${PIPESTATUS[0]} (124: stopped at $limit s)" | tee -a "$out/bench.log"
}
run "${STEP_S:-100}" "the DCGAN step, batch 256" "$python" benchmarks/bench_step.py \
  --backend cupy --models dcgan --batch 256 --rounds 3 --json "$out/step.json"
run "${MORE_S:-70}" "the steps at batch 64" "$python" benchmarks/bench_step.py --backend cupy \
  --models dcgan gan --batch 64 --rounds 2 --json "$out/step_more.json"
run "${LAYERS_S:-70}" "the DCGAN layers, batch 256" "$python" benchmarks/bench_layers.py \
  --backend cupy --batch 256 --rounds 1 --json "$out/layers.json" --layers \
  "D conv 1->64 28->14" "D conv 64->128 14->7" "G convT 128->64 7->14" "G convT 64->1 14->28"
run "${MEMORY_S:-30}" "peak memory, batch 256" "$python" benchmarks/bench_memory.py \
  --backend cupy --rounds 1 --json "$out/memory.json"
steps=()
for json in "$out/step.json" "$out/step_more.json"; do
  if [ -s "$json" ]; then steps+=("$json"); fi
done
if [ "${#steps[@]}" -gt 0 ]; then
  run 20 "plot" "$python" benchmarks/plot_results.py "$out/step_time.png" "${steps[@]}"
fi
