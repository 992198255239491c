import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))  # tests/reference.py

import reference  # noqa: E402

ALGORITHMS = ("blake3", "sha256-tree")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip_cuda)


@pytest.fixture(autouse=True)
def _seed_rngs():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)  # also seeds every CUDA device
    yield


@pytest.fixture(scope="session")
def ops():
    """The sentry_ops package (importing it registers torch.ops.sentry)."""
    import sentry_ops

    return sentry_ops


@pytest.fixture(scope="session")
def b3():
    """BLAKE3 reference (the b3sum binary); tests comparing against it skip without it."""
    if not reference.have_b3sum():
        pytest.skip("b3sum is not installed: no independent BLAKE3 reference")
    return reference.b3sum


@pytest.fixture
def rng():
    return np.random.default_rng(1234)



@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """Two P-256 key pairs written as PEM: {"alice": (private, public), "mallory": ...}."""
    from sentry.crypto import PrivateKey, write_private_key, write_public_key

    d = tmp_path_factory.mktemp("keys")
    out = {}
    for who in ("alice", "mallory"):
        key = PrivateKey.generate("P-256")
        write_private_key(d / f"{who}.pem", key)
        write_public_key(d / f"{who}.pub", key.public_key())
        out[who] = (str(d / f"{who}.pem"), str(d / f"{who}.pub"))
    return out


@pytest.fixture
def cli(capsys, monkeypatch):
    """Runs `sentry ARGS` in-process from directory `cwd`; returns (returncode, stdout, stderr)
    as a CompletedProcess."""
    from sentry.cli import main

    def run(cwd, *args):
        monkeypatch.chdir(cwd)
        capsys.readouterr()
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out.out, out.err)

    return run


def assert_one_line_error(proc, code=2, *needles):
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    err = proc.stderr.strip()
    assert err.count("\n") == 0, err
    assert "Traceback" not in err and "[Errno" not in err and ".tmp" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err
