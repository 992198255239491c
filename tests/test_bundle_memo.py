"""verify_model remembers bundles whose signature verified (sentry::open_bundle_memoised): the
memo must never change a verdict. It is keyed on the bundle's exact bytes and on the trust, and
remembers no failure."""
import json
import os

import pytest
import torch

from sentry.errors import VerificationError
from sentry.signing import sign_model, verify_model
from sentry_ops import _C


def _state(scale=1.0):
    g = torch.Generator().manual_seed(3)
    return {"w": torch.randn(16, 8, generator=g) * scale, "b": torch.randn(8, generator=g)}


@pytest.fixture(autouse=True)
def _fresh_memo():
    _C.bundle.clear_bundle_memo()
    yield
    _C.bundle.clear_bundle_memo()


def test_a_repeat_is_memoised_and_a_cleared_memo_is_not(tmp_path, keys):
    priv, pub = keys["alice"]
    sig = str(tmp_path / "m.sig")
    sign_model(_state(), priv, sig)
    first = verify_model(_state(), sig, public_key=pub)
    assert "memoised" not in first.timings_ms and "check signature" in first.timings_ms
    again = verify_model(_state(), sig, public_key=pub)
    assert "memoised" in again.timings_ms and "check signature" not in again.timings_ms
    _C.bundle.clear_bundle_memo()
    assert "check signature" in verify_model(_state(), sig, public_key=pub).timings_ms


def test_a_memoised_bundle_does_not_verify_with_another_key(tmp_path, keys):
    priv, pub = keys["alice"]
    sig = str(tmp_path / "m.sig")
    sign_model(_state(), priv, sig)
    verify_model(_state(), sig, public_key=pub)
    with pytest.raises(VerificationError, match="does not verify"):
        verify_model(_state(), sig, public_key=keys["mallory"][1])


def test_the_memo_follows_the_bytes_not_the_path(tmp_path, keys):
    priv, pub = keys["alice"]
    sig = str(tmp_path / "m.sig")
    sign_model(_state(), priv, sig)
    verify_model(_state(), sig, public_key=pub)
    sign_model(_state(2.0), priv, str(tmp_path / "new.sig"))
    os.replace(tmp_path / "new.sig", sig)  # a new release's signature, same key, same path
    with pytest.raises(VerificationError) as info:
        verify_model(_state(), sig, public_key=pub)
    assert info.value.changed == ["w"]
    verify_model(_state(2.0), sig, public_key=pub)


def test_a_failed_signature_is_not_remembered(tmp_path, keys):
    priv, pub = keys["alice"]
    sig = tmp_path / "m.sig"
    sign_model(_state(), priv, str(sig))
    good = sig.read_bytes()
    doc = json.loads(good)
    signature = doc["dsseEnvelope"]["signatures"][0]["sig"]
    doc["dsseEnvelope"]["signatures"][0]["sig"] = signature[:20] + (
        "A" if signature[20] != "A" else "B") + signature[21:]
    sig.write_text(json.dumps(doc))
    for _ in range(2):
        with pytest.raises(VerificationError, match="does not verify"):
            verify_model(_state(), str(sig), public_key=pub)
    sig.write_bytes(good)
    assert "check signature" in verify_model(_state(), str(sig), public_key=pub).timings_ms
