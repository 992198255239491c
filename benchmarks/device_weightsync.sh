#!/usr/bin/env bash
# Issue 15 (weight syncs) on the 2-GPU machine, in one call: build the extension, then the CUDA
# tests of the run-based hash, the NCCL tests under torchrun, and the benchmark. Logs and the
# benchmark's JSON go to $OUT. Steps can be picked: bash benchmarks/device_weightsync.sh
# [build] [cuda] [nccl] [bench]  (all four by default). Each step has its own time limit and
# none runs past 470 s from the start (SENTRY_DEADLINE_S), so the call stays within 8 minutes. BLAKE3 references need b3sum: carry a copy in .gpubin/
# (mkdir -p .gpubin && cp "$(command -v b3sum)" .gpubin/), or the BLAKE3 cases are skipped.
set -o pipefail
export PATH="$PWD/.gpubin:$PATH"
OUT=${OUT:-/tmp/sentry-out}
mkdir -p "$OUT"
source benchmarks/device_env.sh
export MAX_JOBS=${MAX_JOBS:-16} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} PYTHONUNBUFFERED=1
steps=${*:-build cuda nccl bench}
deadline=$(( $(date +%s) + ${SENTRY_DEADLINE_S:-470} ))
limit() {  # the step's own limit, or what is left before the deadline if less
  local left=$(( deadline - $(date +%s) ))
  (( left < $1 )) && echo $(( left > 1 ? left : 1 )) || echo "$1"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
echo "b3sum: $(command -v b3sum || echo 'not found: BLAKE3 reference cases skip')"
for step in $steps; do
  start=$(date +%s)
  case $step in
    build)
      timeout $(limit 300) python3 -m pip install --no-build-isolation --no-index -e . >"$OUT/build.log" 2>&1 ||
        { tail -40 "$OUT/build.log"; exit 1; } ;;
    cuda)  # single-process CUDA tests: hash_runs / finish_runs / hash_subtrees vs references
      timeout $(limit 90) python3 -m pytest -q -rs -m cuda tests/test_syncplan.py tests/test_subtrees.py 2>&1 |
        tee "$OUT/cuda_tests.log" | tail -5 ;;
    nccl)  # the weight-sync checks on NCCL, both ranks running the same tests
      timeout $(limit 100) torchrun --nproc-per-node=2 -m pytest -q -rs -p no:cacheprovider \
        tests/test_weightsync_nccl.py 2>&1 | tee "$OUT/nccl_tests.log" | grep -E "passed|failed|error|skipped" ;;
    bench)
      timeout $(limit 180) torchrun --nproc-per-node=2 benchmarks/bench_weightsync.py \
        --json "$OUT/bench_weightsync.json" 2>&1 | tee "$OUT/bench_weightsync.log" | grep -v "^W" ;;
    *) echo "unknown step $step"; exit 2 ;;
  esac
  echo "$step: $(( $(date +%s) - start )) s"
done
