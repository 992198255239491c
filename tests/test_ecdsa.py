"""torch.ops.sentry.ecdsa_p256_verify on the CPU (the OpenSSL kernel) and the helpers of
sentry/ecdsa.py, against every Wycheproof case and signatures made by the `cryptography` package
(tests/ecdsa_reference.py). The CUDA kernel: tests/test_ecdsa_cuda.py; the shared P-256 core it
runs: tests/cpp/test_p256.cpp."""
import os

import pytest
import torch
from cryptography.hazmat.primitives.asymmetric import ec

import ecdsa_reference as ref
from sentry import dataset as ds
from sentry import ecdsa
from sentry.crypto import PrivateKey, PublicKey
from sentry.errors import FormatError, VerificationError

def op(keys, digests, sigs):
    return torch.ops.sentry.ecdsa_p256_verify(keys, digests, sigs)


@pytest.fixture(scope="module")
def pairs(ops):
    return ref.signed_pairs(300, seed=1)


@pytest.fixture(scope="module")
def tensors(pairs):
    keys, digests, raw, _, _ = pairs
    return ref.rows(keys), ref.rows(digests), ref.rows(raw)


def wycheproof(form):
    cases = ref.wycheproof_cases(form)
    # None of these files' cases is "acceptable"; docs/ECDSA.md says what the op would do.
    assert {c["result"] for c in cases} == {"valid", "invalid"}
    return cases


# ---------------------------------------------------------------------------------------------
# known answers


@pytest.mark.parametrize("form", ["der", "p1363"])
def test_wycheproof(ops, form):
    cases = wycheproof(form)
    got = ecdsa.verify_batch([c["key"] for c in cases], [c["digest"] for c in cases],
                             [c["sig"] for c in cases], signature_format=form)
    assert got.dtype == torch.bool and got.shape == (len(cases),)
    wrong = [(c["tc_id"], c["comment"]) for c, g in zip(cases, got.tolist())
             if g != (c["result"] == "valid")]
    assert not wrong
    # The encoding cases really were refused by the parser, not by the arithmetic.
    _, parsed = ecdsa.signature_rows([c["sig"] for c in cases], form)
    assert not all(parsed)
    assert all(c["result"] == "invalid" for c, ok in zip(cases, parsed) if not ok)


def test_wycheproof_rows_through_the_op_directly(ops):
    """The P1363 cases of the right length, as tensors, without the helper."""
    cases = [c for c in wycheproof("p1363") if len(c["sig"]) == 64]
    got = op(ref.rows([c["key"] for c in cases]), ref.rows([c["digest"] for c in cases]),
             ref.rows([c["sig"] for c in cases]))
    assert got.tolist() == [c["result"] == "valid" for c in cases]


def test_openssl_signatures_verify_and_every_bit_flip_fails(ops, tensors):
    keys, digests, sigs = tensors
    assert op(keys, digests, sigs).all()
    for part, k, d, s in ref.each_part_flipped(keys, digests, sigs):
        got = op(k, d, s)
        assert not got.any(), (part, got.nonzero().flatten().tolist())


def _with(t, row, start, value):
    out = t.clone()
    out[row, start:start + len(value)] = torch.tensor(list(value), dtype=torch.uint8)
    return out


def test_ranges_and_keys_are_checked(ops, pairs, tensors):
    keys, digests, sigs = tensors
    _, _, raw, _, _ = pairs
    r, s = int.from_bytes(raw[0][:32], "big"), int.from_bytes(raw[0][32:], "big")
    be = lambda v: v.to_bytes(32, "big")  # noqa: E731
    cases = {  # name: (keys, sigs), all for row 0
        "r = 0": (keys, _with(sigs, 0, 0, be(0))),
        "s = 0": (keys, _with(sigs, 0, 32, be(0))),
        "r = n": (keys, _with(sigs, 0, 0, be(ref.N))),
        "s = n": (keys, _with(sigs, 0, 32, be(ref.N))),
        "r = 2^256 - 1": (keys, _with(sigs, 0, 0, b"\xff" * 32)),
        "key (0, 0)": (_with(keys, 0, 0, bytes(64)), sigs),
        "key y = p": (_with(keys, 0, 32, be(ref.P)), sigs),
        "key y + 1": (_with(keys, 0, 32, be((int.from_bytes(keys[0, 32:].numpy().tobytes(),
                                                            "big") + 1) % ref.P)), sigs),
    }
    if r + ref.N < 2**256:
        cases["r + n"] = (keys, _with(sigs, 0, 0, be(r + ref.N)))
    if s + ref.N < 2**256:
        cases["s + n"] = (keys, _with(sigs, 0, 32, be(s + ref.N)))
    for name, (k, sg) in cases.items():
        got = op(k[:4], digests[:4], sg[:4])
        assert got.tolist() == [False, True, True, True], name
    # n - s is the other valid s (ECDSA is malleable; OpenSSL accepts it too).
    assert op(keys[:1], digests[:1], _with(sigs, 0, 32, be(ref.N - s))[:1]).item()


def test_layouts_give_the_same_answers(ops, tensors):
    keys, digests, sigs = tensors
    want = op(keys, digests, sigs)
    bad = ref.flip_one_bit(sigs, 0, 64, seed=9)
    mixed = torch.where((torch.arange(len(sigs)) % 3 == 0)[:, None], bad, sigs)
    want_mixed = op(keys, digests, mixed)
    assert want_mixed.tolist() == [i % 3 != 0 for i in range(len(sigs))]
    # Non-contiguous (a column window of wider rows) and unaligned (storage offset 1).
    wide = torch.zeros(len(keys), 80, dtype=torch.uint8)
    wide[:, 8:72] = keys
    flat = torch.zeros(1 + mixed.numel(), dtype=torch.uint8)
    flat[1:] = mixed.flatten()
    got = op(wide[:, 8:72], digests, flat[1:].view(-1, 64))
    assert torch.equal(got, want_mixed)
    assert torch.equal(op(keys.t().contiguous().t(), digests, sigs), want)


def test_empty_batch(ops):
    got = op(torch.empty(0, 64, dtype=torch.uint8), torch.empty(0, 32, dtype=torch.uint8),
             torch.empty(0, 64, dtype=torch.uint8))
    assert got.shape == (0,) and got.dtype == torch.bool


# ---------------------------------------------------------------------------------------------
# argument errors: clear, naming the argument, the same from the fake kernel


def _bad_arguments():
    k, d, s = (torch.zeros(3, 64, dtype=torch.uint8), torch.zeros(3, 32, dtype=torch.uint8),
               torch.zeros(3, 64, dtype=torch.uint8))
    return [
        ((k.float(), d, s), "public_keys must be uint8, got Float"),
        ((k, d.to(torch.int64), s), "digests must be uint8, got Long"),
        ((k, d, s.to(torch.int8)), "signatures must be uint8, got Char"),
        ((torch.zeros(3, 65, dtype=torch.uint8), d, s), r"public_keys must have shape \[N, 64\]"),
        ((k, torch.zeros(3, 33, dtype=torch.uint8), s), r"digests must have shape \[N, 32\]"),
        ((k, d, torch.zeros(3, 2, 32, dtype=torch.uint8)), r"signatures must have shape \[N, 64\]"),
        ((k.flatten(), d, s), r"public_keys must have shape \[N, 64\].*got \[192\]"),
        ((k, d[:2], s), "digests has 2 rows but public_keys has 3"),
        ((k, d, s[:1]), "signatures has 1 rows but public_keys has 3"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_arguments())))
def test_bad_arguments_raise(ops, case):
    args, message = _bad_arguments()[case]
    with pytest.raises(ValueError, match=message):
        op(*args)


@pytest.mark.parametrize("case", range(len(_bad_arguments())))
def test_fake_kernel_raises_the_same(ops, case):
    from torch._subclasses.fake_tensor import FakeTensorMode

    args, message = _bad_arguments()[case]
    with pytest.raises(ValueError) as real:
        op(*args)
    with FakeTensorMode() as mode:
        fake = [mode.from_tensor(a) for a in args]
        with pytest.raises(ValueError) as faked:
            op(*fake)
    assert str(faked.value) == str(real.value).split("\n")[0]


def test_fake_kernel_shape(ops):
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        out = op(torch.empty(7, 64, dtype=torch.uint8), torch.empty(7, 32, dtype=torch.uint8),
                 torch.empty(7, 64, dtype=torch.uint8))
    assert out.shape == (7,) and out.dtype == torch.bool


def test_sparse_input_is_refused(ops):
    k = torch.zeros(2, 64, dtype=torch.uint8).to_sparse()
    with pytest.raises((ValueError, RuntimeError), match="public_keys"):
        op(k, torch.zeros(2, 32, dtype=torch.uint8), torch.zeros(2, 64, dtype=torch.uint8))


# ---------------------------------------------------------------------------------------------
# opcheck and torch.compile


def _samples(tensors):
    keys, digests, sigs = tensors
    bad = ref.flip_one_bit(sigs, 0, 64, seed=3)
    yield keys[:8], digests[:8], sigs[:8]
    yield keys[:8], digests[:8], torch.cat([sigs[:4], bad[4:8]])
    yield keys[:0], digests[:0], sigs[:0]
    wide = torch.zeros(5, 70, dtype=torch.uint8)
    wide[:, 3:67] = keys[:5]
    yield wide[:, 3:67], digests[:5], sigs[:5]


@pytest.mark.parametrize("sample", range(4))
def test_opcheck(ops, tensors, sample):
    args = list(_samples(tensors))[sample]
    result = torch.library.opcheck(torch.ops.sentry.ecdsa_p256_verify.default, args)
    assert all(v == "SUCCESS" for v in result.values()), result


@pytest.mark.parametrize("backend", ["eager", "aot_eager", "inductor"])
def test_torch_compile_fullgraph(ops, tensors, backend):
    torch._dynamo.reset()
    keys, digests, sigs = tensors

    def f(k, d, s):
        flipped = s.clone()
        flipped[:, 63] ^= 1  # computed inside the graph: the op must see it
        return op(k, d, s), op(k, d, flipped)

    fn = torch.compile(f, fullgraph=True, backend=backend)
    for n in (16, 40):
        good, bad = fn(keys[:n], digests[:n], sigs[:n])
        assert good.all() and not bad.any() and good.shape == (n,)


# ---------------------------------------------------------------------------------------------
# sentry.ecdsa helpers


def test_key_forms(ops, tmp_path, pairs):
    keys, digests, raw, der, private = pairs
    pem = ref.public_pem(private[2])
    path = tmp_path / "k.pub"
    path.write_bytes(pem)
    bad_pem = tmp_path / "bad.pub"
    bad_pem.write_bytes(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    p384 = PrivateKey.generate("P-384").public_key()
    forms = [
        (keys[0], True),                                  # raw x || y
        (b"\x04" + keys[1], True),                        # SEC 1 uncompressed
        (str(path), True),                                # PEM path (str)
        (path, True),                                     # PEM path (PathLike)
        (pem.decode(), True),                             # PEM text
        (pem, True),                                      # PEM bytes
        (PublicKey.load(pem), True),                      # sentry key
        (private[2].public_key(), True),                  # cryptography key
        (b"\x03" + keys[1][:32], False),                  # compressed form: not accepted
        (keys[0][:63], False),                            # wrong length
        (bad_pem, False),                                 # malformed PEM
        (p384, False),                                    # another curve
        (ec.generate_private_key(ec.SECP384R1()).public_key(), False),
    ]
    idx = [0, 1, 2, 2, 2, 2, 2, 2, 1, 0, 2, 2, 2]
    got = ecdsa.verify_batch([f for f, _ in forms], [digests[i] for i in idx],
                             [der[i] for i in idx])
    assert got.tolist() == [ok for _, ok in forms]
    with pytest.raises(FileNotFoundError):
        ecdsa.verify_batch([tmp_path / "missing.pub"], [digests[0]], [der[0]])
    with pytest.raises(TypeError):
        ecdsa.verify_batch([12345], [digests[0]], [der[0]])


def _der_int(v, pad=False):
    body = v.to_bytes(max(1, (v.bit_length() + 8) // 8), "big", signed=True) if v >= 0 else \
        v.to_bytes((v.bit_length() + 8) // 8, "big", signed=True)
    if pad:
        body = b"\x00" + body
    return b"\x02" + bytes([len(body)]) + body


def _der(r, s, **kw):
    body = _der_int(r, kw.get("pad_r", False)) + _der_int(s)
    return b"\x30" + bytes([len(body)]) + body


def test_signature_forms(ops, pairs):
    keys, digests, raw, der, _ = pairs
    r, s = int.from_bytes(raw[0][:32], "big"), int.from_bytes(raw[0][32:], "big")
    assert _der(r, s) == der[0]  # the encoder below builds real DER
    der_cases = [
        (der[0], True),
        (der[0] + b"\x00", False),                               # trailing byte
        (b"\x30\x81" + bytes([len(der[0]) - 2]) + der[0][2:], False),  # long-form length
        (_der(r, s, pad_r=True), False),                          # needless leading zero
        (_der(-r, s), False),                                     # negative r
        (_der(r + 2**256, s), False),                             # r longer than 32 bytes
        (_der(r, ref.N - s), True),                               # the malleable twin
        (b"", False),
        (b"\x30\x00", False),
    ]
    got = ecdsa.verify_batch([keys[0]] * len(der_cases), [digests[0]] * len(der_cases),
                             [d for d, _ in der_cases])
    assert got.tolist() == [ok for _, ok in der_cases]
    raw_cases = [(raw[0], True), (raw[0][:63], False), (raw[0] + b"\x00", False)]
    got = ecdsa.verify_batch([keys[0]] * 3, [digests[0]] * 3, [x for x, _ in raw_cases],
                             signature_format="p1363")
    assert got.tolist() == [ok for _, ok in raw_cases]


def test_der_parse_matches_cryptography(ops, pairs):
    from cryptography.hazmat.primitives.asymmetric import utils

    _, _, raw, der, _ = pairs
    rows, ok = ecdsa.signature_rows(der)
    assert all(ok)
    for i, d in enumerate(der):
        r, s = utils.decode_dss_signature(d)
        assert rows[i].numpy().tobytes() == r.to_bytes(32, "big") + s.to_bytes(32, "big")


def test_helper_argument_errors(ops, pairs):
    keys, digests, raw, der, _ = pairs
    with pytest.raises(ValueError, match="digest 0 has 31 bytes"):
        ecdsa.verify_batch([keys[0]], [digests[0][:31]], [der[0]])
    with pytest.raises(ValueError, match="one of each"):
        ecdsa.verify_batch(keys[:2], digests[:1], der[:2])
    with pytest.raises(ValueError, match="signature_format"):
        ecdsa.verify_batch(keys[:1], digests[:1], raw[:1], signature_format="raw")
    with pytest.raises(TypeError, match="signature 0"):
        ecdsa.verify_batch(keys[:1], digests[:1], ["not bytes"])
    assert ecdsa.verify_batch([], [], []).shape == (0,)


def test_digest_tensor_and_device_argument(ops, pairs, tensors):
    keys, digests, _, der, _ = pairs
    got = ecdsa.verify_batch(keys[:5], tensors[1][:5], der[:5], device="cpu")
    assert got.tolist() == [True] * 5


def test_verify_messages_mixed_curves_in_one_batch(ops, monkeypatch):
    calls = []
    real = ecdsa.ecdsa_p256_verify
    monkeypatch.setattr(ecdsa, "ecdsa_p256_verify", lambda *a: calls.append(a[0].shape) or real(*a))
    keys = [PrivateKey.generate(c) for c in ("P-256", "P-384", "P-256", "P-521", "P-256")]
    msgs = [os.urandom(40) for _ in keys]
    sigs = [k.sign(m) for k, m in zip(keys, msgs)]
    sigs[2] = keys[0].sign(msgs[2])       # P-256, wrong key
    sigs[3] = keys[3].sign(msgs[3] + b"!")  # P-521, wrong message
    pubs = [k.public_key() for k in keys]
    assert ecdsa.verify_messages(pubs, msgs, sigs) == [True, True, False, False, True]
    assert calls == [(3, 64)]  # the three P-256 rows in one call
    # The same answers as one key at a time.
    assert [p.verify(m, s) for p, m, s in zip(pubs, msgs, sigs)] == [True, True, False, False, True]
    with pytest.raises(TypeError):
        ecdsa.verify_messages([b"raw"], msgs[:1], sigs[:1])


# ---------------------------------------------------------------------------------------------
# load_manifest checks its bundles in one batch, and fails as before


def _signed_manifest(tmp_path, curves=("P-256", "P-256", "P-384")):
    sources = ("alice", "bob", "carol")
    keys = {s: PrivateKey.generate(c) for s, c in zip(sources, curves)}
    x = torch.randint(0, 256, (30, 16), dtype=torch.uint8)
    y = torch.randint(0, 10, (30,))
    m = ds.build_manifest(x, y, [sources[i % 3] for i in range(30)])
    paths = ds.sign_manifest(m, keys, tmp_path / "sigs")
    return m, keys, {s: k.public_key() for s, k in keys.items()}, paths


def test_load_manifest_verifies_in_one_batch(ops, tmp_path, monkeypatch):
    m, _, pubs, paths = _signed_manifest(tmp_path)
    calls = []
    real = ecdsa.ecdsa_p256_verify
    monkeypatch.setattr(ecdsa, "ecdsa_p256_verify", lambda *a: calls.append(a[0].shape) or real(*a))
    assert ds.load_manifest(paths, pubs).dataset_digest() == m.dataset_digest()
    assert calls == [(2, 64)]  # alice and bob (P-256) together; carol (P-384) one by one


def test_load_manifest_error_order_is_unchanged(ops, tmp_path):
    """Bundle order decides which error is raised, as when each bundle was checked in turn."""
    from sentry.signing import _sign_statement

    m, keys, pubs, paths = _signed_manifest(tmp_path)
    alice, bob, carol = sorted(paths)  # sign_manifest names them after the sources
    # bob's bundle signed by alice's key, carol's unreadable.
    _sign_statement(ds.make_statement(m, "bob"), keys["alice"], None, bob)
    with open(carol, "w") as f:
        f.write("not json")
    with pytest.raises(VerificationError, match="'bob'") as info:
        ds.load_manifest([alice, bob, carol], pubs)
    assert bob in str(info.value)
    with pytest.raises(FormatError) as info:
        ds.load_manifest([alice, carol, bob], pubs)  # carol's problem comes first now
    assert carol in str(info.value)
    with pytest.raises(FileNotFoundError):
        ds.load_manifest([alice, str(tmp_path / "nope.sig"), bob], pubs)
