#!/usr/bin/env bash
# Sets up a fresh Debian machine (root) for Sentry and builds it in place. Idempotent, and
# skips what is done: a second run on a built, unchanged checkout takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd -P)  # as setup.py and pip see it

packages="libssl-dev libgtest-dev libsimdjson-dev b3sum cmake"
missing=$(for p in $packages; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ -n "$missing" ]; then
  echo "setup: installing $missing (apt)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

# Python requirements, pip syntax. torch==2.13.0 is the machine's local CPU wheel: pinned so
# pip never fetches another torch. cryptography, safetensors and model-signing (with pyopenssl,
# which it imports) are the tests' independent references; sigstore (sigstore-python 4) makes
# the trust decision for keyless bundles (sentry/signatures/keyless.py); ninja, pybind11, setuptools and
# wheel build the extension.
requirements=(
  torch==2.13.0 numpy pytest
  ninja pybind11 setuptools wheel
  cryptography safetensors model-signing pyopenssl "sigstore>=4"
)
# Only the ones not installed at an acceptable version go to pip (`pip install` of satisfied
# requirements alone costs about 10 s).
mapfile -t unmet < <(python3 scripts/setup_checks.py unmet "${requirements[@]}")
if [ ${#unmet[@]} -gt 0 ]; then
  echo "setup: installing ${unmet[*]} (pip)"
  python3 -m pip install -q --disable-pip-version-check "${unmet[@]}"
fi

# The extension, built in place against the torch installed above, unless build/setup-stamp
# says this very build (sources, torch, knobs) is already there. build_ext keeps its object
# files under build/ and ninja recompiles only what changed. Progress: ninja's [n/m] lines;
# the full log is build/setup-build.log.
mkdir -p build
stamp=$(python3 scripts/setup_checks.py build-stamp)
if ! compgen -G "sentry_ops/_C*.so" >/dev/null || [ ! -f sentry_ops/_build_info.py ] ||
    [ "$(cat build/setup-stamp 2>/dev/null || true)" != "$stamp" ]; then
  rm -f build/setup-stamp
  echo "setup: building sentry_ops._C (MAX_JOBS=${MAX_JOBS:=2}; log: build/setup-build.log)"
  if ! MAX_JOBS=$MAX_JOBS python3 setup.py build_ext --inplace --force 2>&1 \
      | tee build/setup-build.log \
      | sed -nu "s|^\(\[[0-9]*/[0-9]*\]\) .* -c \($root/\)\{0,1\}\([^ ]*\) .*|  \1 \3|p"; then
    tail -40 build/setup-build.log
    echo "setup: the build failed; the full log is build/setup-build.log" >&2
    exit 1
  fi
  python3 -c "import sentry_ops" || exit 1
  echo "$stamp" >build/setup-stamp
fi

# Register the checkout with pip once (editable: the `sentry` command, imports from any
# directory). SENTRY_SKIP_EXTENSION: the extension is already built in place above.
if [ "$(python3 scripts/setup_checks.py registered "$root")" != True ]; then
  echo "setup: registering $root with pip (editable)"
  SENTRY_SKIP_EXTENSION=1 python3 -m pip install -q --disable-pip-version-check \
    --no-build-isolation --no-deps -e .
fi
echo "setup: sentry is built and installed ($root)"
