"""Dataset manifests (docs/FORMAT.md §8): digests against independent references, the dataset
digest's order independence, per-source signing and strict loading, and the on-device checker
(tampered bytes, flipped labels, unknown and missing samples, no host sync per batch)."""
import base64
import hashlib
import json
import os

import pytest
import torch

import reference
import sentry
from sentry import dataset as ds
from sentry.crypto import PrivateKey
from sentry.errors import FormatError, VerificationError
from sentry.signing import _sign_statement

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
SOURCES = ("alice", "bob", "carol")


# ---------------------------------------------------------------------------------------------
# helpers


def _data(n=60, shape=(3, 8, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    src = [SOURCES[i % 3] for i in range(n)]
    return x, y, src


def _ref_records_digest(algorithm, records, dtype, shape):
    """Independent implementation of the documented record digest (FORMAT.md §8)."""
    alg, name = algorithm.encode(), dtype.encode()
    out = bytearray(b"sentry-dataset-manifest-v2\0")
    out += len(alg).to_bytes(4, "big") + alg
    out += len(name).to_bytes(4, "big") + name + len(shape).to_bytes(4, "big")
    out += b"".join(d.to_bytes(8, "big") for d in shape)
    out += len(records).to_bytes(8, "big")
    for index, source, label, digest in sorted(records):
        s = source.encode()
        out += index.to_bytes(8, "big") + label.to_bytes(8, "big", signed=True)
        out += len(s).to_bytes(4, "big") + s + digest
    return hashlib.sha256(bytes(out)).hexdigest()


@pytest.fixture(scope="module")
def keys():
    return {s: PrivateKey.generate("P-256") for s in SOURCES}


@pytest.fixture(scope="module")
def pubs(keys):
    return {s: k.public_key() for s, k in keys.items()}


@pytest.fixture
def signed(tmp_path, keys):
    x, y, src = _data()
    m = ds.build_manifest(x, y, src)
    return x, y, src, m, ds.sign_manifest(m, keys, tmp_path / "sigs")


def _bundle_of(paths, source):
    return next(p for p in paths if os.path.basename(p).startswith(source))


def _payload(path):
    doc = json.loads(open(path, "rb").read())
    return json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))


def _resign(path, statement, key, raw=None):
    """Writes `statement` (dict, or raw bytes) as a validly signed bundle at `path`."""
    payload = raw if raw is not None else json.dumps(statement).encode()
    _sign_statement(payload, key, None, path)


def _epoch(checker, x, y, perm, batch=8, tamper=None):
    """Feeds x in shuffled batches; returns the number of batches fed."""
    n = 0
    for start in range(0, len(perm), batch):
        idx = perm[start:start + batch].to(x.device)
        xb, yb = x[idx], y[idx]
        if tamper:
            xb, yb, idx = tamper(n, xb, yb, idx)
        checker.check(xb, yb, idx)
        n += 1
    return n


# ---------------------------------------------------------------------------------------------
# the manifest and its digests


@pytest.mark.parametrize("device", DEVICES)
def test_digests_match_b3sum_and_hashlib(b3, device):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(17, 3, 5, 7, generator=g)  # float32: the raw bytes of each row
    x[4] = 0
    y = torch.arange(17) - 5  # negative labels too
    src = ["z", "a", "ü"] * 5 + ["a", "a"]
    idx = list(range(100, 117))
    m = ds.build_manifest(x.to(device), y, src, indices=idx, batch_size=4)
    blobs = [reference.tensor_bytes(x[i]) for i in range(17)]
    want = reference.b3sum_many(blobs)
    for i, d in zip(idx, want):
        assert m.record(i).digest == d
    recs = [(i, s, int(lab), d) for i, s, lab, d in zip(idx, src, y.tolist(), want)]
    assert m.dataset_digest() == _ref_records_digest("blake3", recs, "float32", (3, 5, 7))
    for s in set(src):
        assert m.source_digest(s) == _ref_records_digest(
            "blake3", [r for r in recs if r[1] == s], "float32", (3, 5, 7))


def test_sha256_tree_matches_reference():
    x, y, src = _data(n=9, shape=(5000,))  # more than one 4096-byte leaf per sample
    m = ds.build_manifest(x, y, src, algorithm="sha256-tree")
    for i in range(9):
        assert m.record(i).digest == reference.sha256_tree(reference.tensor_bytes(x[i]))
    recs = [(i, src[i], int(y[i]), reference.sha256_tree(reference.tensor_bytes(x[i])))
            for i in range(9)]
    assert m.dataset_digest() == _ref_records_digest("sha256-tree", recs, "uint8", (5000,))
    assert m.dataset_digest() != ds.build_manifest(x, y, src).dataset_digest()


def test_dataset_digest_is_order_independent():
    x, y, src = _data()
    base = ds.build_manifest(x, y, src)
    perm = torch.randperm(len(x))
    shuffled = ds.build_manifest(x[perm], y[perm], [src[i] for i in perm], indices=perm,
                                 batch_size=7)
    assert shuffled.dataset_digest() == base.dataset_digest()
    for s in SOURCES:
        assert shuffled.source_digest(s) == base.source_digest(s)
    # from an iterable of uneven batches, too
    batches = [x[:5], x[5:31], x[31:]]
    assert ds.build_manifest(batches, y, src).dataset_digest() == base.dataset_digest()


def test_dataset_digest_covers_labels_sources_bytes_and_indices():
    x, y, src = _data()
    base = ds.build_manifest(x, y, src).dataset_digest()
    y2 = y.clone()
    y2[3] += 1
    x2 = x.clone()
    x2[3, 0, 0, 0] ^= 1
    src2 = list(src)
    src2[3] = "mallory"
    assert ds.build_manifest(x, y2, src).dataset_digest() != base
    assert ds.build_manifest(x2, y, src).dataset_digest() != base
    assert ds.build_manifest(x, y, src2).dataset_digest() != base
    assert ds.build_manifest(x, y, src, indices=torch.arange(1, 61)).dataset_digest() != base
    assert ds.build_manifest(x[:-1], y[:-1], src[:-1]).dataset_digest() != base


def test_build_rejects_bad_input():
    x, y, src = _data(n=6)
    with pytest.raises(FormatError, match="labels"):
        ds.build_manifest(x, y[:5], src)
    with pytest.raises(FormatError, match="labels"):
        ds.build_manifest(x, y.float(), src)
    with pytest.raises(FormatError, match="sources"):
        ds.build_manifest(x, y, src[:5])
    with pytest.raises(FormatError, match=r"sources\[2\]"):
        ds.build_manifest(x, y, src[:2] + [""] + src[3:])
    with pytest.raises(FormatError, match="index 1 is listed twice"):
        ds.build_manifest(x, y, src, indices=[0, 1, 2, 3, 4, 1])
    with pytest.raises(FormatError, match="non-negative"):
        ds.build_manifest(x, y, src, indices=[0, 1, 2, 3, 4, -1])
    with pytest.raises(FormatError, match="algorithm"):
        ds.build_manifest(x, y, src, algorithm="md5")


# ---------------------------------------------------------------------------------------------
# signing and loading


def test_sign_load_round_trip(tmp_path, keys, pubs):
    x, y, src = _data()
    m = ds.build_manifest(x, y, src)
    # keys as PEM paths for one source, objects for the others
    sentry.crypto.write_private_key(tmp_path / "bob.pem", keys["bob"])
    sentry.crypto.write_public_key(tmp_path / "bob.pub", pubs["bob"])
    priv = {**keys, "bob": str(tmp_path / "bob.pem")}
    paths = ds.sign_manifest(m, priv, tmp_path / "sigs")
    assert [os.path.basename(p) for p in paths] == [f"{s}.manifest.sig" for s in SOURCES]
    doc = json.loads(open(paths[0], "rb").read())
    assert doc["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert doc["verificationMaterial"]["publicKey"]["hint"] == pubs["alice"].hint()
    st = _payload(paths[0])
    assert st["_type"] == "https://in-toto.io/Statement/v1"
    assert st["predicateType"] == "https://sentry.dev/dataset-manifest/v2"
    assert st["subject"] == [{"name": "alice", "digest": {"sha256": m.source_digest("alice")}}]
    assert st["predicate"]["algorithm"] == "blake3" and st["predicate"]["source"] == "alice"
    assert (st["predicate"]["dtype"], st["predicate"]["shape"]) == ("uint8", [3, 8, 8])
    assert [s["index"] for s in st["predicate"]["samples"]] == list(range(0, 60, 3))
    assert st["predicate"]["samples"][1] == {"digest": m.record(3).digest.hex(), "index": 3,
                                             "label": int(y[3])}
    # the signature is over the DSSE PAE of the payload
    sig = base64.b64decode(doc["dsseEnvelope"]["signatures"][0]["sig"])
    payload = base64.b64decode(doc["dsseEnvelope"]["payload"])
    assert pubs["alice"].verify(sentry.bundle.pae("application/vnd.in-toto+json", payload), sig)

    pub = {**pubs, "bob": str(tmp_path / "bob.pub")}
    loaded = ds.load_manifest(paths, pub)
    assert loaded.dataset_digest() == m.dataset_digest()
    assert loaded.records() == m.records()
    assert loaded.layout == m.layout == ("uint8", (3, 8, 8))
    assert ds.load_manifest(tmp_path / "sigs", pub).dataset_digest() == m.dataset_digest()
    assert ds.load_manifest(reversed(paths), pub).dataset_digest() == m.dataset_digest()


def test_bundle_names_for_unusual_sources(tmp_path):
    names = ["a/b", "A", "a", ".hidden", "ü"]
    k = {s: PrivateKey.generate() for s in names}
    x = torch.zeros(5, 4, dtype=torch.uint8)
    m = ds.build_manifest(x, torch.zeros(5, dtype=torch.int64), names)
    paths = ds.sign_manifest(m, k, tmp_path)
    bases = [os.path.basename(p) for p in paths]
    assert len({b.casefold() for b in bases}) == 5
    assert all("/" not in b and not b.startswith(".") for b in bases)
    assert ds.load_manifest(paths, {s: v.public_key() for s, v in k.items()}).records() == \
        m.records()


def test_sign_needs_every_source_key(tmp_path, keys):
    x, y, src = _data()
    with pytest.raises(FormatError, match="carol"):
        ds.sign_manifest(ds.build_manifest(x, y, src), {s: keys[s] for s in ("alice", "bob")},
                         tmp_path)


def test_edited_payload_is_refused(signed, pubs):
    *_, paths = signed
    path = _bundle_of(paths, "bob")
    doc = json.loads(open(path, "rb").read())
    st = _payload(path)
    st["predicate"]["samples"][0]["label"] += 1  # a flipped label, in the signed manifest
    doc["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(st).encode()).decode()
    open(path, "w").write(json.dumps(doc))
    with pytest.raises(VerificationError, match="bob") as info:
        ds.load_manifest(paths, pubs)
    assert path in str(info.value)


def test_wrong_source_key_is_refused(signed, keys, pubs):
    *_, m, paths = signed
    path = _bundle_of(paths, "bob")
    _sign_statement(ds.make_statement(m, "bob"), keys["alice"], None, path)  # bob's, signed by alice
    with pytest.raises(VerificationError, match=r"'bob'.*'alice'") as info:
        ds.load_manifest(paths, pubs)
    assert path in str(info.value)


def test_unknown_source_is_refused(tmp_path, signed, pubs):
    x, y, src, m, paths = signed
    eve = PrivateKey.generate()
    extra = ds.build_manifest(x[:2], y[:2], ["eve", "eve"], indices=[100, 101])
    paths = paths + ds.sign_manifest(extra, {"eve": eve}, tmp_path / "eve")
    with pytest.raises(VerificationError, match="unknown source 'eve'"):
        ds.load_manifest(paths, pubs)


def test_missing_source_bundle_is_refused(signed, pubs):
    *_, paths = signed
    with pytest.raises(VerificationError, match="carol"):
        ds.load_manifest([p for p in paths if "carol" not in p], pubs)
    partial = ds.load_manifest([p for p in paths if "carol" not in p], pubs, require_all=False)
    assert set(partial.sources) == {"alice", "bob"}


def test_duplicate_index_across_sources_is_refused(tmp_path, keys, pubs):
    x, y, _ = _data(n=6)
    a = ds.build_manifest(x[:3], y[:3], ["alice"] * 3, indices=[0, 1, 2])
    b = ds.build_manifest(x[3:], y[3:], ["bob"] * 3, indices=[2, 3, 4])  # 2 again
    c = ds.build_manifest(x[:1], y[:1], ["carol"], indices=[5])
    paths = (ds.sign_manifest(a, keys, tmp_path / "a") + ds.sign_manifest(b, keys, tmp_path / "b")
             + ds.sign_manifest(c, keys, tmp_path / "c"))
    with pytest.raises(FormatError, match=r"index 2 .*'alice'.*'bob'"):
        ds.load_manifest(paths, pubs)


def test_second_bundle_for_one_source_is_refused(tmp_path, signed, keys, pubs):
    x, y, src, m, paths = signed
    again = ds.sign_manifest(ds.build_manifest(x[:1], y[:1], ["bob"], indices=[1000]), keys,
                             tmp_path / "again")
    with pytest.raises(FormatError, match="second manifest"):
        ds.load_manifest(paths + again, pubs)


def _mutate(st, what):
    p, s0 = st["predicate"], st["predicate"]["samples"][0]
    if what == "index-string":
        s0["index"] = str(s0["index"])
    elif what == "label-bool":
        s0["label"] = True
    elif what == "label-float":
        s0["label"] = 1.0
    elif what == "digest-upper":
        s0["digest"] = s0["digest"].upper()
    elif what == "digest-short":
        s0["digest"] = s0["digest"][:-2]
    elif what == "dup-index":
        p["samples"][1]["index"] = s0["index"]
    elif what == "unsorted":
        p["samples"][0], p["samples"][1] = p["samples"][1], p["samples"][0]
    elif what == "algorithm":
        p["algorithm"] = "md5"
    elif what == "extra-field":
        s0["note"] = "x"
    elif what == "missing-label":
        del s0["label"]
    elif what == "source-mismatch":
        p["source"] = "alice"
    elif what == "predicate-type":
        st["predicateType"] = "https://model_signing/signature/v1.0"
    elif what == "negative-index":
        s0["index"] = -1
    elif what == "dtype-alias":  # "float" is torch.float32's alias, not its name
        p["dtype"] = "float"
    elif what == "dtype-unknown":
        p["dtype"] = "uint9"
    elif what == "shape-negative":
        p["shape"] = [3, -8, 8]
    elif what == "shape-missing":
        del p["shape"]
    elif what == "dtype-changed":  # re-signed as int8 without fixing the subject digest
        p["dtype"] = "int8"
    elif what == "v1":
        st["predicateType"] = "https://sentry.dev/dataset-manifest/v1"
        del p["dtype"], p["shape"]
    elif what == "subject-digest":
        st["subject"][0]["digest"]["sha256"] = "0" * 64
    elif what == "dropped-sample":  # a missing sample, re-signed without fixing the subject
        del p["samples"][2]
    return st


@pytest.mark.parametrize("what,field", [
    ("index-string", r"samples\[0\]\.index"), ("label-bool", r"samples\[0\]\.label"),
    ("label-float", r"samples\[0\]\.label"), ("digest-upper", r"samples\[0\]\.digest"),
    ("digest-short", r"samples\[0\]\.digest"), ("dup-index", r"samples\[1\]\.index.*duplicate"),
    ("unsorted", r"samples\[1\]\.index.*sorted"), ("algorithm", r"predicate\.algorithm"),
    ("extra-field", r"samples\[0\].*'note'"), ("missing-label", r"samples\[0\].*'label'"),
    ("source-mismatch", r"predicate\.source"), ("predicate-type", "predicateType"),
    ("negative-index", r"samples\[0\]\.index"),
    ("subject-digest", r"subject\[0\]\.digest\.sha256"),
    ("dropped-sample", r"subject\[0\]\.digest\.sha256"),
    ("dtype-alias", r"predicate\.dtype.*'float'"), ("dtype-unknown", r"predicate\.dtype"),
    ("shape-negative", r"predicate\.shape\[1\]"), ("shape-missing", r"predicate.*'shape'"),
    ("dtype-changed", r"subject\[0\]\.digest\.sha256"),
    ("v1", r"predicateType.*v1 manifests sign no sample dtype or shape"),
])
def test_strict_parsing_names_the_field(signed, keys, pubs, what, field):
    *_, paths = signed
    path = _bundle_of(paths, "bob")
    _resign(path, _mutate(_payload(path), what), keys["bob"])
    with pytest.raises(FormatError, match=field) as info:
        ds.load_manifest(paths, pubs)
    assert path in str(info.value)


def test_sources_of_different_layouts_are_refused(tmp_path, keys, pubs):
    x, y, _ = _data(n=4)
    a = ds.build_manifest(x[:2], y[:2], ["alice"] * 2, indices=[0, 1])
    b = ds.build_manifest(x[2:].view(torch.int8), y[2:], ["bob"] * 2, indices=[2, 3])
    paths = ds.sign_manifest(a, keys, tmp_path / "a") + ds.sign_manifest(b, keys, tmp_path / "b")
    with pytest.raises(FormatError, match=r"'bob' signs int8 \[3, 8, 8\].*uint8 \[3, 8, 8\]"):
        ds.load_manifest(paths, pubs, require_all=False)


def test_build_refuses_batches_of_several_layouts():
    x, y, src = _data(n=8)
    with pytest.raises(FormatError, match="several layouts"):
        ds.build_manifest([x[:4], x[4:].view(torch.int8)], y, src)


def test_not_json_payload(signed, keys, pubs):
    *_, paths = signed
    path = _bundle_of(paths, "bob")
    _resign(path, None, keys["bob"], raw=b"{not json")
    with pytest.raises(FormatError, match="statement"):
        ds.load_manifest(paths, pubs)


# ---------------------------------------------------------------------------------------------
# the checker


@pytest.mark.parametrize("device", DEVICES)
def test_clean_shuffled_epochs_pass(signed, pubs, device):
    x, y, *_ , paths = signed
    m = ds.load_manifest(paths, pubs)
    x, y = x.to(device), y.to(device)
    checker = ds.DatasetChecker(m, device, check_every=2)
    for epoch in range(2):
        _epoch(checker, x, y, torch.randperm(len(x)), batch=7 + epoch)
        checker.finish()


@pytest.mark.parametrize("device", DEVICES)
def test_tampered_sample_caught_at_next_check_point(signed, device):
    x, y, src, m, _ = signed
    x, y = x.to(device), y.to(device)
    perm = torch.randperm(len(x))
    batch, k, j = 6, 4, 5  # tamper batch 5; check points after batches 4 and 8 (1-based)
    victims = perm[j * batch:(j + 1) * batch][[1, 3]].tolist()

    def tamper(n, xb, yb, idx):
        if n == j:
            xb = xb.clone()
            xb[1].view(-1)[7] ^= 0x10
            xb[3].view(-1)[0] ^= 0x01
        return xb, yb, idx

    checker = ds.DatasetChecker(m, device, check_every=k)
    fed = []
    with pytest.raises(ds.DatasetVerificationError) as info:
        for n, start in enumerate(range(0, len(perm), batch)):
            idx = perm[start:start + batch].to(device)
            xb, yb, idx = tamper(n, x[idx], y[idx], idx)
            fed.append(n)
            checker.check(xb, yb, idx)
    # Raised at the first check point after batch 5 (CPU), or once that check point's copy of
    # the state has reached the host, by the next check point at the latest (CUDA).
    if device == "cpu":
        assert fed[-1] == 7
    else:
        assert 7 <= fed[-1] <= 11
    e = info.value
    first = min(victims)
    assert e.index == first and e.source == src[first] and e.kinds == ["bytes"]
    assert e.count == 2
    assert f"sample {first}" in str(e) and repr(src[first]) in str(e) and "bytes" in str(e)
    with pytest.raises(ds.DatasetVerificationError):  # sticky
        checker.finish()


@pytest.mark.parametrize("device", DEVICES)
def test_flipped_label_caught(signed, device):
    x, y, src, m, _ = signed
    x, y = x.to(device), y.to(device)
    y2 = y.clone()
    y2[17] = (y2[17] + 1) % 10
    checker = ds.DatasetChecker(m, device, check_every=0)
    _epoch(checker, x, y2, torch.randperm(len(x)))
    with pytest.raises(ds.DatasetVerificationError, match="sample 17 .*label") as info:
        checker.finish()
    assert info.value.kinds == ["label"] and info.value.source == src[17]


def test_bytes_and_label_both_reported(signed):
    x, y, src, m, _ = signed
    x2, y2 = x.clone(), y.clone()
    x2[9, 0, 0, 0] ^= 0xFF
    y2[9] += 1
    with pytest.raises(ds.DatasetVerificationError) as info:
        ds.verify_samples(m, x2, y2, batch_size=16)
    assert info.value.index == 9 and info.value.kinds == ["bytes", "label"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bad_index", [60, 10**15, -1, -(2**63)])
def test_extra_sample_with_unknown_index_caught(signed, device, bad_index):
    x, y, _, m, _ = signed
    x, y = x.to(device), y.to(device)
    checker = ds.DatasetChecker(m, device, check_every=0)

    def tamper(n, xb, yb, idx):
        if n == 3:
            xb = torch.cat([xb, xb[:1]])
            yb = torch.cat([yb, yb[:1]])
            idx = torch.cat([idx, torch.tensor([bad_index], device=idx.device)])
        return xb, yb, idx

    _epoch(checker, x, y, torch.randperm(len(x)), tamper=tamper)
    with pytest.raises(ds.DatasetVerificationError, match="unknown index") as info:
        checker.finish()
    assert info.value.index == bad_index and info.value.source is None
    assert info.value.kinds == ["unknown index"] and info.value.unexpected == [str(bad_index)]


def test_sample_from_hole_in_indices_is_unknown(keys):
    x, y, _ = _data(n=4)
    m = ds.build_manifest(x, y, ["alice"] * 4, indices=[0, 2, 4, 6])
    checker = ds.DatasetChecker(m, "cpu", check_every=1)
    checker.check(x[:2], y[:2], torch.tensor([0, 2]))
    with pytest.raises(ds.DatasetVerificationError, match="sample 3 .*unknown"):
        checker.check(x[2:3], y[2:3], torch.tensor([3]))


@pytest.mark.parametrize("device", DEVICES)
def test_missing_sample_caught_at_finish(signed, device):
    x, y, src, m, _ = signed
    x, y = x.to(device), y.to(device)
    perm = torch.randperm(len(x))
    perm = perm[(perm != 41) & (perm != 50)]
    checker = ds.DatasetChecker(m, device, check_every=3)
    _epoch(checker, x, y, perm)
    with pytest.raises(ds.DatasetVerificationError, match="sample 41 .*never checked") as info:
        checker.finish()
    assert info.value.kinds == ["missing"] and info.value.count == 2
    assert info.value.source == src[41] and info.value.missing == ["41"]
    # without coverage, a partial epoch passes
    partial = ds.DatasetChecker(m, device, check_every=3, require_all=False)
    _epoch(partial, x, y, perm)
    partial.finish()


def test_check_does_not_sync(signed, monkeypatch):
    """check() reads nothing back to the host: every host read is refused while it runs, and
    raise_if_failed (the only reader) runs exactly every check_every batches."""
    x, y, _, m, _ = signed
    checker = ds.DatasetChecker(m, "cpu", check_every=3)
    reads = []
    real_read = ds.DatasetChecker._read_state

    def counting(self, *a, **k):
        reads.append(self.batches)
        return real_read(self, *a, **k)

    def boom(*a, **k):
        raise AssertionError("host sync inside check()")

    monkeypatch.setattr(ds.DatasetChecker, "_read_state", counting)
    with monkeypatch.context() as patch:
        for name in ("item", "tolist", "cpu", "numpy", "__bool__", "nonzero", "__int__",
                     "__index__"):
            patch.setattr(torch.Tensor, name, boom)
        checker.check_every = 0
        n = _epoch(checker, x, y, torch.randperm(len(x)), batch=6)
    assert n == 10 and reads == []
    checker.finish()
    assert reads == [10]

    checker.check_every = 3
    _epoch(checker, x, y, torch.randperm(len(x)), batch=6)
    assert reads == [10, 3, 6, 9]
    checker.finish()
    assert reads == [10, 3, 6, 9, 10]


@pytest.mark.cuda
def test_cuda_check_has_no_host_sync(signed):
    x, y, src, m, _ = signed
    dev = torch.device("cuda")
    x, y = x.to(dev), y.to(dev)
    checker = ds.DatasetChecker(m, dev, check_every=0)
    perm = torch.randperm(len(x)).to(dev)
    x2 = x.clone()
    x2[23].view(-1)[5] ^= 1
    batches = [(x2[perm[s:s + 8]], y[perm[s:s + 8]], perm[s:s + 8]) for s in range(0, 60, 8)]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for xb, yb, ib in batches:
            checker.check(xb, yb, ib)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    with pytest.raises(ds.DatasetVerificationError, match="sample 23 ") as info:
        checker.finish()
    assert info.value.source == src[23]


@pytest.mark.cuda
def test_cuda_manifest_equals_cpu_manifest():
    x, y, src = _data(n=100, shape=(3, 32, 32))
    cpu = ds.build_manifest(x, y, src, batch_size=33)
    gpu = ds.build_manifest(x.cuda(), y.cuda(), src, batch_size=33)
    assert gpu.records() == cpu.records()
    assert gpu.dataset_digest() == cpu.dataset_digest()


def test_checker_rejects_misuse(signed):
    x, y, _, m, _ = signed
    checker = ds.DatasetChecker(m, "cpu")
    with pytest.raises(ValueError, match="indices"):
        checker.check(x[:4], y[:4], torch.arange(4).float())
    with pytest.raises(ValueError, match="labels"):
        checker.check(x[:4], y[:3], torch.arange(4))
    with pytest.raises(ValueError, match="check_every"):
        ds.DatasetChecker(m, "cpu", check_every=-1)
    checker.check(x[:0], y[:0], torch.arange(0))  # an empty batch is fine
    assert checker.batches == 1


def test_verify_samples_whole_dataset(signed, pubs):
    x, y, _, _, paths = signed
    m = ds.load_manifest(paths, pubs)
    ds.verify_samples(m, x, y, batch_size=16)
    x2 = x.clone()
    x2[59, 2, 7, 7] ^= 4
    with pytest.raises(ds.DatasetVerificationError, match="sample 59 "):
        ds.verify_samples(m, x2, y, batch_size=16)
