#!/usr/bin/env bash
# Runs every test: GoogleTest through ctest (C++ core, C++ API, CUDA compile check), then
# pytest (GPU tests skip without a GPU). Run scripts/setup.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
mkdir -p build
cmake -S . -B build/cmake "${generator[@]}" -DCMAKE_BUILD_TYPE=Release >build/cmake-configure.log 2>&1 \
  || { cat build/cmake-configure.log; exit 1; }
cmake --build build/cmake -j"${MAX_JOBS:-2}"
ctest --test-dir build/cmake --output-on-failure
python3 -m pytest -q tests "$@"
