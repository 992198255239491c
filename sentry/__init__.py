"""Sentry: integrity for machine-learning artifacts, checked where they live (CPU or GPU).

The subpackages, bottom to top (docs/ARCHITECTURE.md): io, formats, signatures, oms, then
datasets, runtime and parallel, then pipeline and tools. Module paths from before that layout
(sentry.signing, sentry.dataset, ...) still import: see sentry/_moved.py."""
import importlib as _importlib

from sentry_ops import ALGORITHMS, digests_hex, hash_rows, hash_tensors

from . import _moved
from .datasets import manifest as dataset
from .datasets import stores as data
from .datasets.manifest import (DatasetChecker, build_manifest, load_manifest, sign_manifest,
                                verify_samples)
from .datasets.stores import get_image_dataloader, verify_dataset
from .errors import DependencyError, FormatError, SentryError, SentryWarning, VerificationError
from .oms.loader import load_verified
from .oms.signing import sign_files, sign_model, verify_files, verify_model
from .parallel import distributed, weightsync
from .runtime import checkpoint
from .runtime.guard import IntegrityGuard
from .signatures import ecdsa
from .signatures import keys as crypto

__version__ = "0.1.0"

_moved.install()


def __getattr__(name):
    # sentry.signing, sentry.fileio, ...: the modules under their names of before the layout.
    if name in _moved.MOVED:
        return _importlib.import_module(_moved.new_name(f"sentry.{name}"))
    raise AttributeError(f"module 'sentry' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_moved.MOVED))


__all__ = ["ALGORITHMS", "hash_tensors", "hash_rows", "digests_hex", "sign_model", "verify_model",
           "sign_files", "verify_files", "load_verified", "FormatError", "VerificationError",
           "SentryError", "DependencyError", "SentryWarning",
           "crypto", "dataset", "ecdsa", "build_manifest", "sign_manifest", "load_manifest",
           "DatasetChecker", "verify_samples", "verify_dataset", "get_image_dataloader",
           "IntegrityGuard", "checkpoint", "distributed", "weightsync", "__version__"]
