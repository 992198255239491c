"""Sentry: integrity for machine-learning artifacts, checked where they live (CPU or GPU)."""
from sentry_ops import ALGORITHMS, digests_hex, hash_rows, hash_tensors

from . import checkpoint, crypto, data, dataset, distributed, ecdsa, weightsync
from .data import get_image_dataloader, verify_dataset
from .dataset import DatasetChecker, build_manifest, load_manifest, sign_manifest, verify_samples
from .errors import DependencyError, FormatError, SentryError, SentryWarning, VerificationError
from .guard import IntegrityGuard
from .loader import load_verified
from .signing import sign_files, sign_model, verify_files, verify_model

__version__ = "0.1.0"


__all__ = ["ALGORITHMS", "hash_tensors", "hash_rows", "digests_hex", "sign_model", "verify_model",
           "sign_files", "verify_files", "load_verified", "FormatError", "VerificationError",
           "SentryError", "DependencyError", "SentryWarning",
           "crypto", "dataset", "ecdsa", "build_manifest", "sign_manifest", "load_manifest",
           "DatasetChecker", "verify_samples", "verify_dataset", "get_image_dataloader",
           "IntegrityGuard", "checkpoint", "distributed", "weightsync", "__version__"]
