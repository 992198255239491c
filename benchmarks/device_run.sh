#!/usr/bin/env bash
# One call on the GPU machine: build, GPU tests, benchmark; logs under $OUT (device tool).
# Usage: bash benchmarks/device_run.sh [pytest args...]
set -o pipefail
OUT=${OUT:-/tmp/sentry-out}
mkdir -p "$OUT"
export MAX_JOBS=${MAX_JOBS:-16} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} PYTHONUNBUFFERED=1
source benchmarks/device_env.sh
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem,driver_version --format=csv | tee "$OUT/gpu.txt"
start=$(date +%s)
python3 -m pip install --no-build-isolation --no-index -e . >"$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
echo "build: $(( $(date +%s) - start )) s"
# Register, shared-memory and spill report of the kernels.
T=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')
for cu in hash_cuda ecdsa_cuda; do
  nvcc -std=c++20 -arch=sm_90 -O3 --expt-relaxed-constexpr -Xptxas -v -c csrc/ops/cuda/$cu.cu \
    -I csrc -I "$T/include" -I "$T/include/torch/csrc/api/include" -I "$(python3 -c 'import sysconfig;print(sysconfig.get_paths()["include"])')" \
    -o /tmp/$cu.o 2>&1
done >"$OUT/ptxas.txt"
grep -A3 "Compiling entry" "$OUT/ptxas.txt" | grep -E "registers|Compiling|spill" | sed 's/ptxas info    ://' | cut -c1-160
if [ -n "${SENTRY_CTEST:-}" ]; then
  { cmake -S . -B build/cmake -G Ninja -DCMAKE_BUILD_TYPE=Release -DTORCH_CUDA_ARCH_LIST=9.0 &&
    cmake --build build/cmake -j16 && ctest --test-dir build/cmake --output-on-failure; } \
    >"$OUT/ctest.log" 2>&1
  echo "ctest rc=$?"; grep -E "tests passed|tests failed|Skipped|Failed" "$OUT/ctest.log" | tail -5
  # ctest runs the load example on the CPU; here it loads onto the GPU as well.
  e=build/cmake/example_model
  build/cmake/load_model_example $e/model $e/model.sig $e/key.pub cuda >"$OUT/load_example_cuda.log" 2>&1
  echo "load_model_example on cuda: rc=$?"; tail -3 "$OUT/load_example_cuda.log"
fi
if [ -n "${SENTRY_TESTS:-}" ]; then
  python3 -m pytest -q -rs $SENTRY_TESTS 2>&1 | tee "$OUT/pytest.log" | tail -25
fi
if [ -n "${SENTRY_BENCH:-}" ]; then
  python3 benchmarks/bench_hash.py $SENTRY_BENCH --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log"
fi
if [ -n "${SENTRY_VERIFY_BENCH:-}" ]; then  # e.g. SENTRY_VERIFY_BENCH="--reps 50"
  python3 benchmarks/bench_verify.py $SENTRY_VERIFY_BENCH 2>&1 | tee "$OUT/bench_verify.log"
fi
if [ -n "${SENTRY_GUARD_BENCH:-}" ]; then  # e.g. SENTRY_GUARD_BENCH="--device cuda --compile"
  python3 benchmarks/bench_guard.py $SENTRY_GUARD_BENCH --json "$OUT/bench_guard.json" 2>&1 | tee "$OUT/bench_guard.log"
fi
if [ -n "${SENTRY_ECDSA_BENCH:-}" ]; then  # e.g. SENTRY_ECDSA_BENCH="--max-log 20"
  python3 benchmarks/bench_ecdsa.py $SENTRY_ECDSA_BENCH --json "$OUT/bench_ecdsa.json" 2>&1 | tee "$OUT/bench_ecdsa.log"
fi
