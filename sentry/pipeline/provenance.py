"""Signed training provenance: an in-toto Statement v1 with a SLSA Provenance v1 predicate.

The trainer (``sentry agent train``) writes one statement per trained model, links it to the
model's signature and the signed dataset it was trained on, and signs it into the same bundle
format as models and dataset manifests (Sigstore bundle v0.3 JSON around a DSSE envelope,
payloadType ``application/vnd.in-toto+json``; docs/FORMAT.md §6).

The statement (JSON, keys sorted, 2-space indent)::

    {
      "_type": "https://in-toto.io/Statement/v1",
      "subject": [{"name": MODEL_NAME, "digest": {"sha256": MODEL_ROOT}}],
      "predicateType": "https://slsa.dev/provenance/v1",
      "predicate": {
        "buildDefinition": {
          "buildType": "https://sentry.dev/train/v1",
          "externalParameters": {            # what the trainer was asked to do
            "epochs": int, "lr": number, "batchSize": int, "seed": int,
            "algorithm": "blake3" | "sha256-tree",   # the dataset's sample digest algorithm
            "split": "train", "model": {"arch": str, ...}},
          "internalParameters": {"device": str, "torch": str, "sentry": str},
          "resolvedDependencies": [
            {"name": "dataset", "digest": {"sha256": DATASET_DIGEST},
             "annotations": {"kind": "dataset", "algorithm": str, "samples": int}},
            {"name": SOURCE, "digest": {"sha256": SOURCE_DIGEST},
             "annotations": {"kind": "dataset-source", "samples": int}},   # one per source,
            ...                                                             # sorted by name
          ]
        },
        "runDetails": {
          "builder": {"id": "https://sentry.dev/agent/train/v1"},
          "metadata": {"invocationId": str, "startedOn": RFC3339, "finishedOn": RFC3339}
        }
      }
    }

- MODEL_ROOT is the subject digest of the model's signature bundle (method ``tensors``):
  SHA-256 of the raw tensor digests concatenated in name order (docs/FORMAT.md §6). So the
  provenance names exactly the weights that ``verify_model`` accepts.
- DATASET_DIGEST is ``Manifest.dataset_digest()`` and SOURCE_DIGEST is
  ``Manifest.source_digest(source)`` (the subject digest of that source's signed manifest
  bundle), docs/FORMAT.md §8.
- ``verify_provenance`` checks the signature, then parses strictly and fails closed: a missing
  or mistyped field raises FormatError naming it (``predicate.buildDefinition...``); a digest
  that differs from an expected one raises VerificationError naming the field.
"""
import datetime
import json
import uuid

from ..formats import bundle as bundle_format
from ..formats.bundle import _check_hex, _check_list, _check_object, _check_text, _fail, _is_int
from ..errors import VerificationError

PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://sentry.dev/train/v1"
BUILDER_ID = "https://sentry.dev/agent/train/v1"
DATASET_DEPENDENCY = "dataset"

_REQUIRED_PARAMETERS = {"epochs": "int", "lr": "number", "batchSize": "int", "seed": "int",
                        "algorithm": "str"}


def now_rfc3339():
    """The current UTC time as RFC 3339 with a Z suffix (what SLSA's Timestamp means)."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def model_root(signature_path):
    """The subject digest (hex SHA-256 ROOT) and name of a model signature bundle. Reads and
    parses the bundle; it does not check the signature (verify_model does)."""
    signed = bundle_format.read_bundle(signature_path)
    statement = bundle_format.parse_statement(signed.payload, signature_path)
    return statement.root_hex, statement.model_name


def make_statement(*, model_name, model_digest, manifest, parameters, internal=None,
                   started_on, finished_on, invocation_id=None):
    """The DSSE payload (JSON bytes) of a SLSA Provenance v1 statement for one trained model.

    manifest: the verified sentry.dataset.Manifest trained on. parameters: the training
    parameters (externalParameters: epochs, lr, batchSize, seed, algorithm and any more)."""
    params = dict(parameters)
    params.setdefault("algorithm", manifest.algorithm)
    deps = [{"name": DATASET_DEPENDENCY, "digest": {"sha256": manifest.dataset_digest()},
             "annotations": {"kind": "dataset", "algorithm": manifest.algorithm,
                             "samples": len(manifest)}}]
    for source, part in manifest.sources.items():
        deps.append({"name": source, "digest": {"sha256": manifest.source_digest(source)},
                     "annotations": {"kind": "dataset-source", "samples": len(part)}})
    statement = {
        "_type": bundle_format.STATEMENT_TYPE,
        "subject": [{"name": model_name, "digest": {"sha256": model_digest}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": params,
                "internalParameters": dict(internal or {}),
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {"id": BUILDER_ID},
                "metadata": {"invocationId": invocation_id or str(uuid.uuid4()),
                             "startedOn": started_on, "finishedOn": finished_on},
            },
        },
    }
    payload = json.dumps(bundle_format._sorted_dict(statement), indent=2,
                         ensure_ascii=True).encode("ascii")
    parse_statement(payload, "provenance being written")  # never write what we would not read
    return payload


def sign_provenance(payload, private_key, path, *, password=None):
    """Signs a provenance statement (bytes from make_statement) into a bundle at ``path``."""
    from ..oms.signing import _sign_statement

    return _sign_statement(payload, private_key, password, path)


def _number(value):
    return (isinstance(value, (int, float)) and not isinstance(value, bool))


def _timestamp(value, source, field):
    _check_text(value, source, field)
    try:
        datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        _fail(source, field, f"not an RFC 3339 timestamp: {value!r}")
    if not value.endswith("Z") and "+" not in value[10:] and "-" not in value[10:]:
        _fail(source, field, f"timestamp {value!r} has no time zone")
    return value


def parse_statement(payload, source="provenance"):
    """Validates a provenance statement; returns the dict described in verify_provenance.
    Every problem raises FormatError naming ``source`` and the field."""
    doc, name, subject_hex = bundle_format.parse_statement_envelope(
        payload, source, PREDICATE_TYPE, "SLSA provenance")
    pred = _check_object(doc["predicate"], source, "predicate")
    for key in ("buildDefinition", "runDetails"):
        if key not in pred:
            _fail(source, f"predicate.{key}", "missing")
    bd = _check_object(pred["buildDefinition"], source, "predicate.buildDefinition")
    f = "predicate.buildDefinition"
    for key in ("buildType", "externalParameters", "resolvedDependencies"):
        if key not in bd:
            _fail(source, f"{f}.{key}", "missing")
    build_type = _check_text(bd["buildType"], source, f"{f}.buildType")
    if build_type != BUILD_TYPE:
        _fail(source, f"{f}.buildType", f"expected {BUILD_TYPE!r}, got {build_type!r}")
    params = _check_object(bd["externalParameters"], source, f"{f}.externalParameters")
    for key, kind in _REQUIRED_PARAMETERS.items():
        field = f"{f}.externalParameters.{key}"
        if key not in params:
            _fail(source, field, "missing")
        value = params[key]
        ok = {"int": _is_int(value), "number": _number(value),
              "str": isinstance(value, str)}[kind]
        if not ok:
            _fail(source, field, f"must be a{'n' if kind == 'int' else ''} {kind}, got {value!r}")
    internal = _check_object(bd.get("internalParameters", {}), source,
                             f"{f}.internalParameters")
    deps = _check_list(bd["resolvedDependencies"], source, f"{f}.resolvedDependencies")
    dataset, sources = None, {}
    for k, dep in enumerate(deps):
        field = f"{f}.resolvedDependencies[{k}]"
        _check_object(dep, source, field)
        if "name" not in dep:
            _fail(source, f"{field}.name", "missing")
        dep_name = _check_text(dep["name"], source, f"{field}.name")
        digest = _check_object(dep.get("digest"), source, f"{field}.digest")
        if "sha256" not in digest:
            _fail(source, f"{field}.digest.sha256", "missing")
        hexd = _check_hex(digest["sha256"], source, f"{field}.digest.sha256")
        ann = _check_object(dep.get("annotations", {}), source, f"{field}.annotations")
        kind = ann.get("kind")
        if kind == "dataset":
            if dataset is not None:
                _fail(source, field, "a second dataset dependency")
            algorithm = _check_text(ann.get("algorithm"), source, f"{field}.annotations.algorithm")
            dataset = {"name": dep_name, "digest": hexd, "algorithm": algorithm,
                       "samples": ann.get("samples")}
        elif kind == "dataset-source":
            if dep_name in sources:
                _fail(source, f"{field}.name", f"source {dep_name!r} is listed twice")
            sources[dep_name] = hexd
        else:
            _fail(source, f"{field}.annotations.kind",
                  f"expected 'dataset' or 'dataset-source', got {kind!r}")
    if dataset is None:
        _fail(source, f"{f}.resolvedDependencies", "no dataset dependency")
    if not sources:
        _fail(source, f"{f}.resolvedDependencies", "no dataset-source dependency")
    if dataset["algorithm"] != params["algorithm"]:
        _fail(source, f"{f}.externalParameters.algorithm",
              f"{params['algorithm']!r} differs from the dataset's {dataset['algorithm']!r}")
    rd = _check_object(pred["runDetails"], source, "predicate.runDetails")
    if "builder" not in rd:
        _fail(source, "predicate.runDetails.builder", "missing")
    builder = _check_object(rd["builder"], source, "predicate.runDetails.builder")
    if "id" not in builder:
        _fail(source, "predicate.runDetails.builder.id", "missing")
    builder_id = _check_text(builder["id"], source, "predicate.runDetails.builder.id")
    meta = _check_object(rd.get("metadata", {}), source, "predicate.runDetails.metadata")
    m = "predicate.runDetails.metadata"
    for key in ("invocationId", "startedOn", "finishedOn"):
        if key not in meta:
            _fail(source, f"{m}.{key}", "missing")
    invocation = _check_text(meta["invocationId"], source, f"{m}.invocationId")
    started = _timestamp(meta["startedOn"], source, f"{m}.startedOn")
    finished = _timestamp(meta["finishedOn"], source, f"{m}.finishedOn")
    return {"model_name": name, "model_digest": subject_hex, "build_type": build_type,
            "parameters": params, "internal": internal, "dataset_digest": dataset["digest"],
            "algorithm": dataset["algorithm"], "samples": dataset["samples"],
            "sources": sources, "builder_id": builder_id, "invocation_id": invocation,
            "started_on": started, "finished_on": finished}


def verify_provenance(path, public_key, *, model_digest=None, dataset_digest=None,
                      source_digests=None):
    """Checks a provenance bundle's signature with ``public_key`` (PEM path or PublicKey) and
    parses it strictly. Returns a dict: model_name, model_digest, build_type, parameters
    (externalParameters), internal, dataset_digest, algorithm, samples, sources ({source:
    digest}), builder_id, invocation_id, started_on, finished_on.

    With ``model_digest`` / ``dataset_digest`` / ``source_digests`` ({source: digest}), the
    statement must name exactly those, else VerificationError naming the field. A bad signature
    raises VerificationError; malformed content FormatError naming the field."""
    from ..signatures.keys import PublicKey

    signed = bundle_format.read_bundle(path)
    key = public_key if isinstance(public_key, PublicKey) else PublicKey.load(public_key)
    if not key.verify(bundle_format.pae(signed.payload_type, signed.payload), signed.signature):
        other = (f" (the bundle names key {signed.public_key_hint}, you gave {key.hint()})"
                 if signed.public_key_hint and signed.public_key_hint != key.hint() else "")
        raise VerificationError(f"{path}: the provenance signature does not verify with this "
                                f"key{other}")
    info = parse_statement(signed.payload, str(path))
    if model_digest is not None and info["model_digest"] != model_digest:
        raise VerificationError(
            f"{path}: subject[0].digest.sha256 {info['model_digest'][:16]}... is not the model's "
            f"digest {model_digest[:16]}...", changed=["subject[0].digest.sha256"])
    deps = "predicate.buildDefinition.resolvedDependencies"
    if dataset_digest is not None and info["dataset_digest"] != dataset_digest:
        raise VerificationError(
            f"{path}: {deps}[dataset].digest.sha256 {info['dataset_digest'][:16]}... is not the "
            f"dataset's digest {dataset_digest[:16]}...", changed=[f"{deps}[dataset]"])
    if source_digests is not None:
        want = dict(source_digests)
        changed = sorted(s for s in set(want) & set(info["sources"])
                         if want[s] != info["sources"][s])
        missing = sorted(set(want) - set(info["sources"]))
        unexpected = sorted(set(info["sources"]) - set(want))
        if changed or missing or unexpected:
            raise VerificationError(f"{path}: {deps} does not list the dataset's sources",
                                    changed=changed, missing=missing, unexpected=unexpected)
    return info


__all__ = ["PREDICATE_TYPE", "BUILD_TYPE", "BUILDER_ID", "make_statement", "sign_provenance",
           "parse_statement", "verify_provenance", "model_root", "now_rfc3339"]
