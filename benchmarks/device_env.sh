# Sourced by the benchmarks/device_*.sh scripts: what the GPU machine lacks, from what the call
# carried. simdjson: the Debian packages scripts/fetch_device_deps.sh unpacked into .devdeps/.
# Python packages: the wheels in .whl/, only the distributions the machine does not have (a
# carried wheel must not shadow what torch or transformers were installed with), installed with
# no index and no dependencies into /tmp/site; nothing is fetched.
if [ -z "${SIMDJSON_ROOT:-}" ] && [ ! -e /usr/include/simdjson.h ] && [ -e .devdeps/root/usr/include/simdjson.h ]; then
  export SIMDJSON_ROOT=$PWD/.devdeps/root/usr
fi
if ls .whl/*.whl >/dev/null 2>&1; then
  wheels=()
  for w in .whl/*.whl; do
    name=$(basename "$w" | cut -d- -f1)
    python3 -c "import importlib.metadata as m, sys; m.version(sys.argv[1])" "$name" \
      2>/dev/null || wheels+=("$w")
  done
  if [ ${#wheels[@]} -gt 0 ]; then
    python3 -m pip install --no-index --no-deps --target /tmp/site "${wheels[@]}" >"$OUT/wheels.log" 2>&1 \
      && echo "installed: ${wheels[*]##*/}" || { echo "wheels did not install:"; tail -5 "$OUT/wheels.log"; }
  fi
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
