#!/usr/bin/env bash
# Sets up a fresh Debian machine (root) for Sentry and builds it in place. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

packages="libssl-dev libgtest-dev b3sum cmake"
missing=$(for p in $packages; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ -n "$missing" ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

# torch==2.13.0 is the machine's local CPU wheel; pin it so pip never fetches another torch.
# cryptography, safetensors and model-signing (with pyopenssl, which it imports) are the tests'
# independent references. sigstore (sigstore-python 4) makes the trust decision for keyless
# bundles (sentry/keyless.py).
python3 -m pip install -q --disable-pip-version-check torch==2.13.0 numpy pytest ninja pybind11 \
  cryptography safetensors model-signing pyopenssl "sigstore>=4" \
  setuptools wheel
# --no-build-isolation: compile against the torch installed above.
MAX_JOBS=${MAX_JOBS:-2} python3 -m pip install -q --disable-pip-version-check \
  --no-build-isolation -e .
python3 -c "import sentry; print('sentry', sentry.__version__, 'built and importable')"
