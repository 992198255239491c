#!/usr/bin/env bash
# Issue 15 (weight syncs) on the 2-GPU machine, in one call: build the extension, then the CUDA
# tests of the run-based hash, the NCCL tests under torchrun, and the benchmark. Logs and the
# benchmark's JSON go to $OUT. Steps can be picked: bash benchmarks/device_weightsync.sh
# [build] [cuda] [nccl] [bench]  (all four by default).
set -o pipefail
OUT=${OUT:-/tmp/sentry-out}
mkdir -p "$OUT"
export MAX_JOBS=${MAX_JOBS:-16} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} PYTHONUNBUFFERED=1
steps=${*:-build cuda nccl bench}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
for step in $steps; do
  start=$(date +%s)
  case $step in
    build)
      python3 -m pip install --no-build-isolation --no-index -e . >"$OUT/build.log" 2>&1 ||
        { tail -40 "$OUT/build.log"; exit 1; } ;;
    cuda)  # single-process CUDA tests: hash_runs / finish_runs / hash_subtrees vs references
      python3 -m pytest -q -rs -m cuda tests/test_syncplan.py tests/test_subtrees.py 2>&1 |
        tee "$OUT/cuda_tests.log" | tail -5 ;;
    nccl)  # the weight-sync checks on NCCL, both ranks running the same tests
      timeout 500 torchrun --nproc-per-node=2 -m pytest -q -rs -p no:cacheprovider \
        tests/test_weightsync_nccl.py 2>&1 | tee "$OUT/nccl_tests.log" | grep -E "passed|failed|error|skipped" ;;
    bench)
      timeout 500 torchrun --nproc-per-node=2 benchmarks/bench_weightsync.py \
        --json "$OUT/bench_weightsync.json" 2>&1 | tee "$OUT/bench_weightsync.log" | grep -v "^W" ;;
    *) echo "unknown step $step"; exit 2 ;;
  esac
  echo "$step: $(( $(date +%s) - start )) s"
done
