#!/usr/bin/env bash
# Fetches what building Sentry needs beyond a torch image, for a machine with no apt or network
# (the GPU machine): simdjson, as the Debian packages libsimdjson-dev and libsimdjson14, into the
# ignored folder .devdeps/, unpacked into .devdeps/root. Run it here (Debian, apt reachable),
# carry .devdeps to that machine, and build there with
#   SIMDJSON_ROOT=$PWD/.devdeps/root/usr python3 setup.py build_ext --inplace
# (CMake reads SIMDJSON_ROOT too). The extension finds libsimdjson.so.14 there through its RPATH.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .devdeps
cd .devdeps
rm -f ./*.deb
apt-get download libsimdjson-dev libsimdjson14
rm -rf root
for deb in ./*.deb; do
  dpkg -x "$deb" root
done
# Links become copies: a tree carried to another machine may lose its symbolic links, and the
# linker needs libsimdjson.so, the loader libsimdjson.so.14 (the library's SONAME).
find root -type l | while read -r link; do
  target=$(readlink -f "$link")
  rm "$link"
  cp "$target" "$link"
done
ls root/usr/include/simdjson.h root/usr/lib/*/libsimdjson.so*
