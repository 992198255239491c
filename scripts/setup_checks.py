"""What scripts/setup.sh still has to do, answered without importing torch (seconds each):

  unmet REQUIREMENT...   prints the requirements (pip syntax) not installed at an acceptable
                         version, one a line
  build-stamp            prints a digest of everything the extension build depends on: sources,
                         setup.py, torch's version, the Python version, the build knobs
  registered DIR         prints True when DIR is the checkout pip has installed as `sentry`
                         (editable)
"""
import glob
import hashlib
import json
import os
import sys
from importlib.metadata import PackageNotFoundError, distribution, version

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD_KNOBS = ("FORCE_CUDA", "DEBUG", "TORCH_CUDA_ARCH_LIST", "CUDA_HOME")


def unmet(specs):
    try:
        from packaging.requirements import Requirement
    except ImportError:  # a bare machine: pip carries its own copy
        from pip._vendor.packaging.requirements import Requirement
    for spec in specs:
        req = Requirement(spec)
        try:
            if req.specifier.contains(version(req.name), prereleases=True):
                continue
        except PackageNotFoundError:
            pass
        print(spec)


def build_stamp():
    h = hashlib.sha256()
    files = sorted(glob.glob(os.path.join(ROOT, "csrc", "**", "*"), recursive=True))
    for path in [os.path.join(ROOT, "setup.py")] + files:
        if os.path.isfile(path):
            h.update(os.path.relpath(path, ROOT).encode() + b"\0")
            with open(path, "rb") as f:
                h.update(hashlib.sha256(f.read()).digest())
    h.update(f"torch {version('torch')} python {sys.version}".encode())
    for knob in BUILD_KNOBS:
        h.update(f"{knob}={os.environ.get(knob)}".encode())
    print(h.hexdigest())


def registered(checkout):
    try:
        url = json.loads(distribution("sentry").read_text("direct_url.json") or "{}")
    except PackageNotFoundError:
        url = {}
    print(url.get("url") == "file://" + os.path.abspath(checkout)
          and url.get("dir_info", {}).get("editable", False))


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {"unmet": lambda: unmet(args), "build-stamp": build_stamp,
     "registered": lambda: registered(args[0])}[command]()
