"""sentry_ops refuses to load a build made for another torch or CUDA, and says which."""
import subprocess
import sys
import textwrap

import torch

import sentry_ops


def _import_with_build_info(torch_version, cuda_version, with_cuda):
    # Stands in for the _build_info.py that setup.py writes, before sentry_ops is imported.
    code = textwrap.dedent(f"""
        import sys, types
        info = types.ModuleType("sentry_ops._build_info")
        info.TORCH_VERSION, info.CUDA_VERSION, info.WITH_CUDA = {torch_version!r}, {cuda_version!r}, {with_cuda!r}
        sys.modules["sentry_ops._build_info"] = info
        import sentry_ops
        """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_matching_build_loads():
    assert sentry_ops._mismatch_message() is None
    assert sentry_ops.BUILT_TORCH_VERSION == torch.__version__


def test_other_torch_version_is_refused_with_both_versions():
    result = _import_with_build_info("1.13.1", None, False)
    assert result.returncode != 0
    assert f"built for PyTorch 1.13.1, you have {torch.__version__}" in result.stderr
    assert "pip install --no-build-isolation -e ." in result.stderr


def test_other_cuda_version_is_refused():
    result = _import_with_build_info(torch.__version__, "11.8", True)
    assert result.returncode != 0
    assert f"built for CUDA 11.8, your PyTorch has CUDA {torch.version.cuda}" in result.stderr


def test_matching_versions_load_in_a_fresh_process():
    result = _import_with_build_info(torch.__version__, torch.version.cuda, torch.version.cuda is not None)
    assert result.returncode == 0, result.stderr
