#!/usr/bin/env bash
# The verified loader on the GPU machine, in one call: build, the loader's tests (CUDA ones
# included), then benchmarks/bench_load.py (GPT-2-XL-shaped fp32, 6.55 GB in 3 shards, warm and
# cold, next to safetensors, fastsafetensors, runai-model-streamer and the reference tool).
# Logs and the benchmark's JSON go to $OUT.
#
# The peers' wheels travel in .whl/ (fastsafetensors 0.5.0, runai-model-streamer 0.17.1,
# model-signing 1.1.1), simdjson in .devdeps/ (benchmarks/device_env.sh).
#   bash benchmarks/device_load.sh            # all of it
#   SENTRY_SKIP_TESTS=1 bash benchmarks/device_load.sh
set -o pipefail
OUT=${OUT:-/tmp/sentry-out}
mkdir -p "$OUT"
export MAX_JOBS=${MAX_JOBS:-16} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
nproc | sed 's/^/cpus: /'

source benchmarks/device_env.sh

start=$(date +%s)
python3 -m pip install --no-build-isolation --no-index -e . >"$OUT/build.log" 2>&1 \
  || { tail -40 "$OUT/build.log"; exit 1; }
echo "build: $(( $(date +%s) - start )) s"

if [ -z "${SENTRY_SKIP_TESTS:-}" ]; then
  python3 -m pytest -q -rs tests/test_loader.py 2>&1 | tee "$OUT/pytest.log" | tail -15
fi

start=$(date +%s)
timeout 480 python3 benchmarks/bench_load.py --device cuda --cold --cold-reps 3 --sweep --json "$OUT/bench_load.json" \
  ${SENTRY_BENCH_ARGS:-} 2>&1 | tee "$OUT/bench_load.log"
echo "benchmark: $(( $(date +%s) - start )) s"
