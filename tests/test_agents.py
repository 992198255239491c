"""The dataset → train → infer agents end to end on the CPU (small), their signed artifacts
(manifest bundles, model signature, SLSA provenance), the three tampers of `sentry demo`, the
provenance parser's fail-closed checks, and the CLI."""
import base64
import json
import os
import shutil

import pytest
import torch

from sentry import agents, provenance
from sentry.cli import main
from sentry.crypto import PrivateKey
from sentry.dataset import DatasetVerificationError, load_manifest
from sentry.errors import FormatError, VerificationError
from sentry.signing import _sign_statement, verify_model

N, EPOCHS, WIDTH, BATCH, LR, SEED = 600, 1, 8, 128, 0.05, 3


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("agents")
    keys, data_dir, model_dir = str(root / "keys"), str(root / "data"), str(root / "model")
    ds = agents.dataset_agent(data_dir, keys_dir=keys, num_samples=N, num_sources=4, seed=SEED,
                              verbose=False)
    tr = agents.train_agent(data_dir, model_dir, keys_dir=keys, device="cpu", epochs=EPOCHS,
                            batch_size=BATCH, lr=LR, seed=SEED, width=WIDTH, verbose=False)
    inf = agents.infer_agent(data_dir, model_dir, keys_dir=keys, device="cpu", verbose=False)
    return dict(root=root, keys=keys, data=data_dir, model=model_dir, ds=ds, tr=tr, inf=inf)


def _payload(path):
    with open(path, "rb") as f:
        doc = json.loads(f.read())
    return json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))


# ---------------------------------------------------------------------------------------------
# the pipeline's artifacts


def test_manifest_bundles_verify(run):
    keys = agents.source_public_keys(run["keys"])
    assert len(keys) == 4 and all(os.path.exists(p) for p in keys.values())
    assert sorted(os.listdir(run["keys"])) == sorted(
        [f"source-{k}{e}" for k in range(4) for e in (".pem", ".pub")]
        + ["sources.json", "trainer.pem", "trainer.pub"])
    m = load_manifest(os.path.join(run["data"], agents.MANIFEST_DIR), keys)
    assert len(m) == N and m.dataset_digest() == run["ds"]["dataset_digest"]
    assert {s: len(p) for s, p in m.sources.items()} == run["ds"]["sources"]
    assert sum(run["ds"]["sources"].values()) == N
    # a manifest checked with another source's key fails, naming the source
    swapped = dict(keys)
    a, b = sorted(keys)[:2]
    swapped[a], swapped[b] = keys[b], keys[a]
    with pytest.raises(VerificationError, match=a):
        load_manifest(os.path.join(run["data"], agents.MANIFEST_DIR), swapped)


def test_model_signature_verifies(run):
    state = torch.load(os.path.join(run["model"], agents.MODEL_FILE), weights_only=True)
    sig = os.path.join(run["model"], agents.MODEL_SIG)
    result = verify_model(state, sig, public_key=os.path.join(run["keys"], "trainer.pub"))
    assert len(result.names) == len(state)
    assert provenance.model_root(sig)[0] == run["tr"]["model_digest"]
    with pytest.raises(VerificationError, match="does not verify"):
        verify_model(state, sig, public_key=os.path.join(run["keys"], "source-0.pub"))


def test_provenance_verifies_and_names_dataset_and_parameters(run):
    path = os.path.join(run["model"], agents.PROVENANCE_SIG)
    info = provenance.verify_provenance(path, os.path.join(run["keys"], "trainer.pub"),
                                        model_digest=run["tr"]["model_digest"],
                                        dataset_digest=run["ds"]["dataset_digest"],
                                        source_digests=run["ds"]["source_digests"])
    assert info["model_digest"] == run["tr"]["model_digest"]
    assert info["dataset_digest"] == run["ds"]["dataset_digest"]
    assert info["sources"] == run["ds"]["source_digests"]
    p = info["parameters"]
    assert (p["epochs"], p["lr"], p["batchSize"], p["seed"], p["algorithm"]) == (
        EPOCHS, LR, BATCH, SEED, "blake3")
    assert info["builder_id"] == provenance.BUILDER_ID
    doc = _payload(path)
    assert doc["_type"] == "https://in-toto.io/Statement/v1"
    assert doc["predicateType"] == "https://slsa.dev/provenance/v1"
    bd = doc["predicate"]["buildDefinition"]
    assert set(bd) == {"buildType", "externalParameters", "internalParameters",
                       "resolvedDependencies"}
    deps = {d["name"]: d["digest"]["sha256"] for d in bd["resolvedDependencies"]}
    assert deps == {"dataset": run["ds"]["dataset_digest"], **run["ds"]["source_digests"]}
    meta = doc["predicate"]["runDetails"]["metadata"]
    assert set(meta) == {"invocationId", "startedOn", "finishedOn"}
    assert doc["predicate"]["runDetails"]["builder"]["id"] == provenance.BUILDER_ID
    # expectations that differ fail closed, naming the field
    with pytest.raises(VerificationError, match=r"subject\[0\]\.digest"):
        provenance.verify_provenance(path, os.path.join(run["keys"], "trainer.pub"),
                                     model_digest="0" * 64)
    with pytest.raises(VerificationError, match="resolvedDependencies"):
        provenance.verify_provenance(path, os.path.join(run["keys"], "trainer.pub"),
                                     dataset_digest="0" * 64)
    with pytest.raises(VerificationError, match="does not verify"):
        provenance.verify_provenance(path, os.path.join(run["keys"], "source-1.pub"))


def test_accuracy_and_summaries(run):
    acc = run["inf"]["accuracy"]
    assert isinstance(acc, float) and 0.0 <= acc <= 1.0
    assert run["inf"]["samples"] == len([i for i in range(N) if i % 6 == 0])
    assert run["tr"]["history"][0]["samples"] == N - run["inf"]["samples"]
    assert run["tr"]["loss"] == run["tr"]["loss"]  # not NaN
    assert run["inf"]["provenance"]["dataset_digest"] == run["ds"]["dataset_digest"]


# ---------------------------------------------------------------------------------------------
# the demo's tampers, through the agents and the verifying loader


def _scan(run, store_dir):
    from sentry import data

    manifest = agents.load_verified_manifest(run["data"], run["keys"])
    loader, _ = data.get_image_dataloader(store_dir, 128, "cpu", manifest=manifest, seed=1)
    for _ in loader:
        pass


def test_tampered_sample_caught(run, tmp_path):
    from sentry.demo import _flip_sample_byte

    bad = str(tmp_path / "store")
    shutil.copytree(os.path.join(run["data"], agents.STORE_DIR), bad)
    victim = 301
    assert _flip_sample_byte(bad, victim) is not None
    source = agents.load_verified_manifest(run["data"], run["keys"]).source_of(victim)
    with pytest.raises(DatasetVerificationError) as exc:
        _scan(run, bad)
    assert (exc.value.index, exc.value.source, exc.value.kinds) == (victim, source, ["bytes"])
    assert f"sample {victim}" in str(exc.value) and source in str(exc.value)


def test_flipped_label_caught(run, tmp_path):
    from sentry.demo import _set_label

    bad = str(tmp_path / "store")
    shutil.copytree(os.path.join(run["data"], agents.STORE_DIR), bad)
    victim = 42
    record = agents.load_verified_manifest(run["data"], run["keys"]).record(victim)
    _set_label(bad, victim, (record.label + 1) % 10)
    with pytest.raises(DatasetVerificationError) as exc:
        _scan(run, bad)
    assert (exc.value.index, exc.value.source, exc.value.kinds) == (victim, record.source,
                                                                    ["label"])


def test_tampered_weight_caught_before_inference(run, tmp_path):
    bad = str(tmp_path / "model")
    shutil.copytree(run["model"], bad)
    path = os.path.join(bad, agents.MODEL_FILE)
    state = torch.load(path, weights_only=True)
    name = "features.0.weight"
    state[name].view(-1).view(torch.uint8)[5] ^= 0x01
    torch.save(state, path)
    with pytest.raises(VerificationError) as exc:
        agents.infer_agent(run["data"], bad, keys_dir=run["keys"], device="cpu", verbose=False)
    assert exc.value.changed == [name]


def test_provenance_of_another_model_refused(run, tmp_path):
    bad = str(tmp_path / "model")
    shutil.copytree(run["model"], bad)
    doc = _payload(os.path.join(bad, agents.PROVENANCE_SIG))
    doc["subject"][0]["digest"]["sha256"] = "ab" * 32
    _sign_statement(json.dumps(doc).encode(), os.path.join(run["keys"], "trainer.pem"), None,
                    os.path.join(bad, agents.PROVENANCE_SIG))
    with pytest.raises(VerificationError, match=r"subject\[0\]\.digest\.sha256"):
        agents.infer_agent(run["data"], bad, keys_dir=run["keys"], device="cpu", verbose=False)


# ---------------------------------------------------------------------------------------------
# the provenance parser (no training needed)


@pytest.fixture(scope="module")
def statement():
    from sentry.dataset import build_manifest

    x = torch.arange(4 * 12, dtype=torch.uint8).view(4, 12)
    m = build_manifest(x, [0, 1, 2, 3], ["a", "b", "a", "b"])
    payload = provenance.make_statement(
        model_name="m", model_digest="cd" * 32, manifest=m,
        parameters={"epochs": 1, "lr": 0.1, "batchSize": 8, "seed": 0},
        started_on="2025-01-01T00:00:00Z", finished_on="2025-01-01T00:01:00Z")
    return m, json.loads(payload)


@pytest.mark.parametrize("path, value, field", [
    (("predicate", "buildDefinition", "externalParameters", "epochs"), "2",
     "externalParameters.epochs"),
    (("predicate", "buildDefinition", "externalParameters", "lr"), None,
     "externalParameters.lr"),
    (("predicate", "buildDefinition", "buildType"), "https://example.com/other",
     "buildDefinition.buildType"),
    (("predicate", "buildDefinition", "resolvedDependencies", 0, "digest", "sha256"), "xyz",
     r"resolvedDependencies\[0\]\.digest\.sha256"),
    (("predicate", "runDetails", "metadata", "startedOn"), "yesterday",
     "metadata.startedOn"),
    (("predicate", "runDetails", "builder"), {}, r"runDetails\.builder\.id"),
    (("predicateType",), "https://slsa.dev/provenance/v0.2", "predicateType"),
])
def test_provenance_parser_names_the_field(statement, path, value, field):
    _, doc = statement
    doc = json.loads(json.dumps(doc))
    target = doc
    for key in path[:-1]:
        target = target[key]
    if value is None:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    with pytest.raises(FormatError, match=field):
        provenance.parse_statement(json.dumps(doc).encode(), "p.sig")


def test_provenance_roundtrip_signed(statement, tmp_path):
    m, doc = statement
    key = PrivateKey.generate("P-256")
    provenance.sign_provenance(json.dumps(doc).encode(), key, tmp_path / "p.sig")
    info = provenance.verify_provenance(tmp_path / "p.sig", key.public_key(),
                                        model_digest="cd" * 32,
                                        dataset_digest=m.dataset_digest(),
                                        source_digests={s: m.source_digest(s) for s in "ab"})
    assert info["sources"] == {"a": m.source_digest("a"), "b": m.source_digest("b")}
    assert info["parameters"]["algorithm"] == "blake3"
    with pytest.raises(VerificationError, match="missing: c"):
        provenance.verify_provenance(tmp_path / "p.sig", key.public_key(),
                                     source_digests={"a": m.source_digest("a"),
                                                     "b": m.source_digest("b"), "c": "0" * 64})


# ---------------------------------------------------------------------------------------------
# the CLI


def test_cli_agents(tmp_path, capsys):
    keys, data_dir, model_dir = (str(tmp_path / d) for d in ("keys", "data", "model"))
    assert main(["agent", "dataset", "--out", data_dir, "--keys", keys, "--samples", "240",
                 "--sources", "2"]) == 0
    assert main(["agent", "train", "--data", data_dir, "--model", model_dir, "--keys", keys,
                 "--device", "cpu", "--epochs", "1", "--width", "4", "--batch-size", "64"]) == 0
    assert main(["agent", "infer", "--data", data_dir, "--model", model_dir, "--keys", keys,
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "dataset digest" in out
    # a tampered weight: exit code 1, naming the tensor
    path = os.path.join(model_dir, agents.MODEL_FILE)
    state = torch.load(path, weights_only=True)
    state["classifier.bias"].view(torch.uint8)[0] ^= 1
    torch.save(state, path)
    assert main(["agent", "infer", "--data", data_dir, "--model", model_dir, "--keys", keys,
                 "--device", "cpu"]) == 1
    assert "classifier.bias" in capsys.readouterr().err


def test_cli_train_refuses_samples_read_as_another_dtype(run, tmp_path, capsys):
    """index.json and the packed .npy header rewritten from uint8 to int8: the same bytes, so
    every sample digest matches, but the signed dtype does not; nothing is trained."""
    import numpy as np

    bad = tmp_path / "data"
    shutil.copytree(run["data"], bad)
    store = bad / agents.STORE_DIR
    index = json.loads((store / "index.json").read_text())
    packed = store / index["packed"]
    np.save(packed, np.load(packed).view(np.int8))
    index["dtype"] = "int8"
    (store / "index.json").write_text(json.dumps(index))
    model_dir = tmp_path / "model"
    assert main(["agent", "train", "--data", str(bad), "--model", str(model_dir), "--keys",
                 run["keys"], "--device", "cpu", "--epochs", "1", "--width", "4"]) == 1
    err = capsys.readouterr().err
    assert "int8 [3, 32, 32]" in err and "uint8 [3, 32, 32]" in err and "source-" in err
    assert not model_dir.exists()


def test_cli_demo(capsys):
    assert main(["demo", "--samples", "300", "--epochs", "1", "--width", "4",
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.count("caught: ") == 3 and "every tamper was caught" in out


def test_dataset_agent_from_npy_folder(tmp_path):
    from sentry import data

    x, y, src = data.synthetic_cifar(48, num_sources=3, seed=1)
    data.write_npy_folder(str(tmp_path / "npy"), x, y, src)
    ds = agents.dataset_agent(str(tmp_path / "data"), keys_dir=str(tmp_path / "keys"),
                              source_dir=str(tmp_path / "npy"), verbose=False)
    m = agents.load_verified_manifest(str(tmp_path / "data"), str(tmp_path / "keys"))
    assert ds["samples"] == 48 and m.dataset_digest() == ds["dataset_digest"]
    want = data.manifest_for_store(data.open_store(str(tmp_path / "npy")))
    assert want.dataset_digest() == ds["dataset_digest"]  # same bytes, labels, sources, indices
