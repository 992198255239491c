"""Builds sentry_ops._C, Sentry's PyTorch extension (CPU kernels, plus CUDA when possible).

CUDA sources are compiled when the installed torch was built with CUDA and nvcc is found
(FORCE_CUDA=1 forces them, FORCE_CUDA=0 leaves them out); TORCH_CUDA_ARCH_LIST picks the GPU
architectures; DEBUG=1 builds -O0 -g. Install with `pip install --no-build-isolation -e .` so
that the extension is compiled against the torch you run. scripts/setup.sh instead builds in
place (`setup.py build_ext --inplace`, whose object files under build/ make rebuilds
incremental) and then registers the checkout with SENTRY_SKIP_EXTENSION=1 (no second build).

simdjson (the JSON library of the bundle reader, csrc/bundle/) comes from the system
(libsimdjson-dev) or from SIMDJSON_ROOT, a prefix holding include/simdjson.h and
lib/<multiarch>/libsimdjson.so (e.g. the Debian packages unpacked by scripts/fetch_device_deps.sh);
the extension then finds the library there at run time (RPATH).
"""
import glob
import os

import torch
from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))
DEBUG = os.environ.get("DEBUG") == "1"


def want_cuda():
    forced = os.environ.get("FORCE_CUDA")
    if forced is not None:
        return forced == "1"
    return torch.version.cuda is not None and CUDA_HOME is not None


def write_build_info(with_cuda):
    # Read at import, before the compiled module is loaded (sentry_ops/__init__.py).
    with open(os.path.join(ROOT, "sentry_ops", "_build_info.py"), "w") as f:
        f.write("# Written by setup.py: what sentry_ops._C was built for.\n")
        f.write(f"TORCH_VERSION = {torch.__version__!r}\n")
        f.write(f"CUDA_VERSION = {(torch.version.cuda if with_cuda else None)!r}\n")
        f.write(f"WITH_CUDA = {with_cuda!r}\n")


def simdjson_dirs():
    """(include dirs, library dirs) of SIMDJSON_ROOT, or none for the system's simdjson."""
    root = os.environ.get("SIMDJSON_ROOT")
    if not root:
        return [], []
    root = os.path.abspath(root)
    libs = [d for d in (os.path.join(root, "lib"), *glob.glob(os.path.join(root, "lib", "*-linux-gnu")))
            if glob.glob(os.path.join(d, "libsimdjson.so*"))]
    if not os.path.exists(os.path.join(root, "include", "simdjson.h")) or not libs:
        raise SystemExit(f"SIMDJSON_ROOT={root} has no include/simdjson.h and lib*/libsimdjson.so")
    return [os.path.join(root, "include")], libs


def extension():
    with_cuda = want_cuda()
    write_build_info(with_cuda)
    sources = ["csrc/python_module.cpp"] + sorted(glob.glob("csrc/ops/*.cpp"))  # schemas, shared
    sources += sorted(glob.glob("csrc/ops/cpu/*.cpp"))
    sources += sorted(glob.glob("csrc/crypto/*.cpp"))  # signature crypto + its bindings
    sources += sorted(glob.glob("csrc/bundle/*.cpp"))  # the bundle reader + its bindings
    simdjson_include, simdjson_lib = simdjson_dirs()
    sources += sorted(glob.glob("csrc/io/*.cpp"))  # reader of untrusted files + its bindings
    opt = ["-O0", "-g"] if DEBUG else ["-O3"]
    macros = [
        ("SENTRY_BUILT_TORCH_VERSION", f'"{torch.__version__}"'),
        ("SENTRY_BUILT_CUDA_VERSION", f'"{torch.version.cuda if with_cuda else ""}"'),
    ]
    # -fopenmp: at::parallel_for is an OpenMP region in torch's headers; without the flag it
    # compiles to a serial loop.
    args = {"cxx": opt + ["-fopenmp", "-Wno-deprecated-declarations"]}
    kind = CppExtension
    if with_cuda:
        sources += sorted(glob.glob("csrc/ops/cuda/*.cu")) + sorted(glob.glob("csrc/io/*.cu"))
        macros.append(("SENTRY_WITH_CUDA", "1"))
        args["nvcc"] = opt + ["-lineinfo", "--expt-relaxed-constexpr", "-Xptxas=-warn-spills"]
        kind = CUDAExtension
    return kind(
        "sentry_ops._C",
        sources,
        include_dirs=[os.path.join(ROOT, "csrc"), *simdjson_include],
        define_macros=macros,
        extra_compile_args=args,
        libraries=["crypto", "simdjson"],
        library_dirs=simdjson_lib,
        runtime_library_dirs=simdjson_lib,
        extra_link_args=["-fopenmp"],
    )


setup(
    name="sentry",
    version="0.1.0",
    description="GPU-native integrity for machine-learning artifacts",
    packages=find_packages(include=["sentry", "sentry.*", "sentry_ops", "sentry_ops.*"]),
    package_data={"sentry": ["io/cufile.json", "pipeline/model_shapes/*.json"]},
    ext_modules=[] if os.environ.get("SENTRY_SKIP_EXTENSION") == "1" else [extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    entry_points={"console_scripts": ["sentry = sentry.tools.cli:main"]},
    python_requires=">=3.10",
    install_requires=["torch"],
    # Keyless (Sigstore) verification only: sentry/signatures/keyless.py imports it on first use.
    extras_require={"keyless": ["sigstore>=4"]},
)
