"""Rules for the C++ sources that LibTorch programs link, read from the source."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPP_DIRS = ("csrc", "examples", os.path.join("tests", "cpp"))


def _cpp_files():
    for d in CPP_DIRS:
        for root, _, files in os.walk(os.path.join(ROOT, d)):
            for f in files:
                if f.endswith((".cpp", ".cu", ".h", ".cuh")):
                    yield os.path.join(root, f)


def test_sources_are_found():
    names = {os.path.basename(p) for p in _cpp_files()}
    assert {"load_model.cpp", "load_verified.cpp", "test_bundle.cpp"} <= names


def test_no_std_filesystem():
    """PyTorch's Linux wheels export the std::filesystem they link statically
    (pytorch/pytorch#133437); a call binds to that copy, and with the CUDA 2.11 wheel
    std::filesystem::remove_all jumped to a null pointer in examples/load_model.cpp. POSIX calls
    instead, as PyTorch does on Linux."""
    pattern = re.compile(r"#\s*include\s*<filesystem>|std::filesystem")
    users = [os.path.relpath(p, ROOT) for p in _cpp_files()
             if pattern.search(re.sub(r"//[^\n]*", "", open(p, encoding="utf-8").read()))]
    assert users == []
