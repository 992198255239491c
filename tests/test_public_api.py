"""Sentry's public API, written out as literal lists: what `import sentry` exposes (names and their
kinds), the operators of torch.ops.sentry, the CLI's commands and options, and the C++ headers a
LibTorch program includes. A change to any of them (a rename, a move, a lost name) fails here;
adding to the API means adding to these lists, on purpose."""
import argparse
import inspect
import os
import subprocess
import sys
import types

import torch

import sentry
from sentry.cli import parser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# sorted(n for n in dir(sentry) if not n.startswith("_")) right after `import sentry`, with kinds.
PUBLIC_NAMES = [
    ("ALGORITHMS", "tuple"), ("DatasetChecker", "class"), ("DependencyError", "class"),
    ("FormatError", "class"), ("IntegrityGuard", "class"), ("SentryError", "class"),
    ("SentryWarning", "class"), ("VerificationError", "class"), ("build_manifest", "function"),
    ("bundle", "module"), ("checkpoint", "module"), ("collectives", "module"),
    ("crypto", "module"), ("data", "module"), ("dataset", "module"), ("digests_hex", "function"),
    ("distributed", "module"), ("ecdsa", "module"), ("errors", "module"),
    ("expected", "module"), ("file_reader", "module"), ("fileio", "module"), ("gds", "module"),
    ("get_image_dataloader", "function"), ("guard", "module"), ("hash_rows", "function"),
    ("hash_tensors", "function"), ("layout", "module"), ("load_manifest", "function"),
    ("load_verified", "function"), ("loader", "module"), ("model_files", "module"),
    ("resident", "module"), ("safetensors_format", "module"), ("sign_files", "function"),
    ("sign_manifest", "function"), ("sign_model", "function"), ("signing", "module"),
    ("syncplan", "module"), ("verify_dataset", "function"), ("verify_files", "function"),
    ("verify_model", "function"), ("verify_samples", "function"), ("weightsync", "module"),
]

ALL = ["ALGORITHMS", "hash_tensors", "hash_rows", "digests_hex", "sign_model", "verify_model",
       "sign_files", "verify_files", "load_verified", "FormatError", "VerificationError",
       "SentryError", "DependencyError", "SentryWarning", "crypto", "dataset", "ecdsa",
       "build_manifest", "sign_manifest", "load_manifest", "DatasetChecker", "verify_samples",
       "verify_dataset", "get_image_dataloader", "IntegrityGuard", "checkpoint", "distributed",
       "weightsync", "__version__"]

# Every module path a user could import before the package was split into subpackages.
MODULE_PATHS = ["agents", "bench", "bundle", "bundle_v02", "checkpoint", "cli", "collectives",
                "crypto", "data", "dataset", "demo", "distributed", "ecdsa", "errors", "expected",
                "file_reader", "fileio", "gds", "guard", "keyless", "layout", "loader",
                "model_files", "models", "progress", "provenance", "resident",
                "safetensors_format", "signing", "syncplan", "weightsync"]

OPS = ["check_digests", "ecdsa_p256_verify", "finish_runs", "finish_subtrees", "hash_rows",
       "hash_runs", "hash_subtrees", "hash_tensors"]

COMMANDS = ["keygen", "sign", "verify", "hash", "demo", "agent", "bench"]
AGENTS = ["dataset", "train", "infer"]
OPTIONS = {
    "keygen": ["--curve", "--force", "--help", "--password-env", "--private-key", "--private_key",
               "--public-key", "--public_key", "-h"],
    "sign": ["--algorithm", "--allow-symlinks", "--allow_symlinks", "--certificate-chain",
             "--certificate_chain", "--hash-type", "--help", "--ignore-paths", "--no-progress",
             "--password-env", "--private-key", "--private_key", "--progress", "--signature",
             "--signing-certificate", "--signing_certificate", "-a", "-h"],
    "verify": ["--allow-symlinks", "--allow_symlinks", "--certificate-chain",
               "--certificate_chain", "--help", "--identity", "--identity-provider",
               "--identity_provider", "--ignore-paths", "--no-progress", "--progress",
               "--public-key", "--public_key", "--signature", "--trust-config", "--trust_config",
               "--trusted-root", "-h"],
    "hash": ["--algorithm", "--device", "--help", "--no-progress", "--progress", "--tensors", "-a",
             "-h"],
    "demo": ["--batch-size", "--device", "--epochs", "--hash-only", "--help", "--model",
             "--samples", "--seed", "--sources", "--width", "--workdir", "-h"],
    "agent": ["--help", "-h"],
    "bench": ["--algorithms", "--devices", "--help", "--json", "--models", "--no-naive", "--reps",
              "--source", "-h"],
}

# csrc/include/sentry/, #include <sentry/...>; model_files.h came with sentry::load_verified (issue 13)
CPP_HEADERS = ["bundle.h", "crypto.h", "model_files.h", "sentry.h"]


def _kind(value):
    if isinstance(value, types.ModuleType):
        return "module"
    if inspect.isclass(value):
        return "class"
    if callable(value):
        return "function"
    return type(value).__name__


def _subcommands(p):
    return next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_import_sentry_names_and_kinds():
    # A fresh interpreter: what `import sentry` alone gives, not what other tests imported.
    code = ("import sentry, inspect, types\n"
            "print(sorted(n for n in dir(sentry) if not n.startswith('_')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    listed = set(eval(out))
    missing = [n for n, _ in PUBLIC_NAMES if n not in listed]
    assert not missing, f"import sentry lost {missing}"
    assert [(n, _kind(getattr(sentry, n))) for n, _ in PUBLIC_NAMES] == PUBLIC_NAMES
    # Anything beyond the list may only be one of sentry's own (sub)packages.
    extra = sorted(listed - {n for n, _ in PUBLIC_NAMES})
    for name in extra:
        value = getattr(sentry, name)
        assert isinstance(value, types.ModuleType) and value.__name__.startswith("sentry."), name
    assert sentry.__all__ == ALL
    assert sentry.__version__ == "0.1.0"


def test_old_module_paths_import():
    # `import sentry.X` and `from sentry import X` give the one module object (patching it
    # patches what the code uses).
    code = ("import importlib, sentry\n"
            f"for name in {MODULE_PATHS!r}:\n"
            "    m = importlib.import_module('sentry.' + name)\n"
            "    assert getattr(sentry, name) is m, name\n"
            "    exec(f'from sentry.{name} import __doc__')\n"
            "print('ok')")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0 and result.stdout == "ok\n", result.stderr


def test_torch_ops():
    import sentry_ops  # noqa: F401  (registers the operators)

    names = sorted(n.split("::", 1)[1] for n in torch._C._dispatch_get_all_op_names()
                   if n.startswith("sentry::"))
    assert names == OPS
    for name in OPS:
        assert callable(getattr(torch.ops.sentry, name).default)


def test_cli_commands_and_options():
    result = subprocess.run([sys.executable, "-m", "sentry", "--help"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for command in COMMANDS:
        assert f"\n    {command} " in result.stdout, command
    commands = _subcommands(parser())
    assert list(commands) == COMMANDS
    for name, sub in commands.items():
        assert sorted(o for a in sub._actions for o in a.option_strings) == OPTIONS[name], name
    assert list(_subcommands(commands["agent"])) == AGENTS


def test_entry_point_is_the_cli():
    import importlib
    import re

    import sentry.cli

    with open(os.path.join(ROOT, "setup.py")) as f:
        module, function = re.search(r'"sentry = ([\w.]+):(\w+)"', f.read()).groups()
    assert getattr(importlib.import_module(module), function) is sentry.cli.main


def test_cpp_headers():
    assert sorted(os.listdir(os.path.join(ROOT, "csrc", "include", "sentry"))) == CPP_HEADERS
