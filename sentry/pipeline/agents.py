"""The three agents of the pipeline: dataset → train → infer (``sentry agent ...``).

- ``dataset_agent`` writes a packed sample store and a manifest signed per source.
- ``train_agent`` verifies the signed manifest, trains a small CNN while every batch is checked
  on the device by the verifying loader (sentry.data), signs the model and a SLSA Provenance v1
  statement (sentry.provenance) that links the dataset digests and training parameters to the
  model digest.
- ``infer_agent`` verifies the model (signature, then provenance) before it is used, then runs
  inference on the test split with on-the-fly data verification and reports accuracy.

Every check fails closed: a VerificationError (or FormatError) propagates out of the agent.

Layout on disk::

    KEYS/   source-K.pem, source-K.pub   one key pair per source (K: position of the source in
                                          sorted order); sources.json maps source name -> "source-K"
            trainer.pem, trainer.pub     the trainer's key (model and provenance signatures)
    DATA/   store/                       packed samples (sentry.data.write_packed)
            manifest/*.manifest.sig      one signed manifest bundle per source
            dataset.json                 summary (informational, unsigned)
    MODEL/  model.pt                     state dict (torch.save; loaded with weights_only=True)
            model.json                   architecture (unsigned: a wrong one fails verify_model)
            model.sig                    model signature (method tensors, blake3)
            provenance.sig               signed SLSA Provenance v1 statement
"""
import json
import math
import os
import sys
import time

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import FormatError
from ..formats.model_files import load_state_dict

STORE_DIR, MANIFEST_DIR, DATASET_JSON = "store", "manifest", "dataset.json"
MODEL_FILE, MODEL_JSON, MODEL_SIG, PROVENANCE_SIG = ("model.pt", "model.json", "model.sig",
                                                     "provenance.sig")
SOURCES_JSON, TRAINER = "sources.json", "trainer"
MODEL_NAME = "sentry-small-cnn"
#: Input normalisation (uint8 → float, on the device, after the batch was checked).
MEAN, STD = 127.5, 64.0


# ---------------------------------------------------------------------------------------------
# progress


class _Lines:
    """A progress display without tqdm: \\r-updates on a terminal, a few lines otherwise."""

    def __init__(self, iterable, total, desc, stream):
        self.iterable, self.total, self.desc, self.stream = iterable, total, desc, stream
        self.tty = hasattr(stream, "isatty") and stream.isatty()

    def _show(self, k, t0, end=False):
        rate = k / max(time.perf_counter() - t0, 1e-9)
        of = f"/{self.total}" if self.total else ""
        text = f"  {self.desc}: {k}{of} batches, {rate:.1f} it/s"
        if self.tty:
            self.stream.write("\r" + text + ("\n" if end else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def __iter__(self):
        t0, k = time.perf_counter(), 0
        marks = ({max(1, round(self.total * f)) for f in (0.25, 0.5, 0.75)}
                 if self.total and not self.tty else set())
        try:
            for item in self.iterable:
                yield item
                k += 1
                if (self.tty and k % 4 == 0) or (k in marks and k != self.total):
                    self._show(k, t0)
        finally:
            self._show(k, t0, end=True)


def progress(iterable, desc, total=None, enabled=True):
    """Wraps ``iterable`` in a tqdm bar when tqdm is installed, else a simple progress line."""
    if not enabled:
        return iterable
    if total is None:
        try:
            total = len(iterable)
        except TypeError:
            total = None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _Lines(iterable, total, desc, sys.stderr)
    return tqdm(iterable, desc="  " + desc, total=total, leave=True, unit="batch")


def _log(verbose, *args):
    if verbose:
        print(*args, flush=True)


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def default_device():
    return "cuda" if torch.cuda.is_available() else "cpu"


# ---------------------------------------------------------------------------------------------
# keys


def _read_json(path, what):
    from ..io.fileio import read_input

    try:
        doc = json.loads(read_input(path, what, 64 << 20))
    except FileNotFoundError:
        raise FormatError(f"{path}: missing ({what})") from None
    except ValueError as exc:
        raise FormatError(f"{path}: malformed JSON ({what}): {exc}") from None
    if not isinstance(doc, dict):
        raise FormatError(f"{path}: expected a JSON object ({what})")
    return doc


def _write_json(path, doc):
    from ..io.fileio import atomic_write

    atomic_write(path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def _ensure_key(keys_dir, stem):
    """keys_dir/stem.pem and .pub, generated (P-256) when absent. Returns the .pem path."""
    from ..signatures.keys import PrivateKey, write_private_key, write_public_key

    pem, pub = (os.path.join(keys_dir, stem + ext) for ext in (".pem", ".pub"))
    if not os.path.exists(pem):
        os.makedirs(keys_dir, exist_ok=True)
        key = PrivateKey.generate("P-256")
        write_private_key(pem, key)
        write_public_key(pub, key.public_key())
    elif not os.path.exists(pub):
        from ..signatures.keys import write_public_key

        write_public_key(pub, PrivateKey.load(pem).public_key())
    return pem


def source_key_names(keys_dir):
    """{source name: key file stem} from keys_dir/sources.json."""
    doc = _read_json(os.path.join(keys_dir, SOURCES_JSON), "the source → key map")
    for name, stem in doc.items():
        if not isinstance(stem, str) or not stem or "/" in stem or stem.startswith("."):
            raise FormatError(f"{os.path.join(keys_dir, SOURCES_JSON)}: bad key name for source "
                              f"{name!r}: {stem!r}")
    return doc


def source_public_keys(keys_dir):
    """{source: path of its .pub} for every source of keys_dir/sources.json."""
    return {s: os.path.join(keys_dir, stem + ".pub")
            for s, stem in source_key_names(keys_dir).items()}


def _source_private_keys(keys_dir, sources):
    """Generates missing source keys and extends sources.json. Returns {source: .pem path}."""
    path = os.path.join(keys_dir, SOURCES_JSON)
    names = source_key_names(keys_dir) if os.path.exists(path) else {}
    used = set(names.values())
    k = 0
    for s in sorted(sources):
        if s not in names:
            while f"source-{k}" in used:
                k += 1
            names[s] = f"source-{k}"
            used.add(names[s])
    os.makedirs(keys_dir, exist_ok=True)
    _write_json(path, names)
    return {s: _ensure_key(keys_dir, names[s]) for s in sources}


def load_verified_manifest(data_dir, keys_dir):
    """The dataset's manifest, every per-source bundle checked with that source's key."""
    from ..datasets.manifest import load_manifest

    return load_manifest(os.path.join(data_dir, MANIFEST_DIR), source_public_keys(keys_dir))


# ---------------------------------------------------------------------------------------------
# dataset agent


def dataset_agent(out_dir, *, keys_dir, source_dir=None, num_samples=10000, num_sources=4,
                  num_classes=10, label_skew=0.6, seed=0, algorithm="blake3", device="cpu",
                  verbose=True):
    """Writes out_dir/store (packed) from ``source_dir`` (a sample store: a folder of .npy
    samples or a packed store) or from the embedded CIFAR-10-shaped generator, builds its
    manifest (digests of the raw stored bytes, hashed on ``device``), and signs it per source
    (one key per source in keys_dir, generated when absent). Returns a summary dict."""
    from ..datasets import stores as data
    from ..datasets.manifest import sign_manifest

    t = {}
    t0 = time.perf_counter()
    if source_dir is not None:
        store = data.open_store(source_dir)
        n = len(store)
        import numpy as np

        samples = store.read_rows(np.arange(n))
        labels = torch.as_tensor(store.labels).to(torch.int64)
        sources = [str(s) for s in store.sources]
        indices = torch.as_tensor(store.indices).to(torch.int64)
        origin = os.fspath(source_dir)
    else:
        samples, labels, sources = data.synthetic_cifar(
            num_samples, num_sources=num_sources, num_classes=num_classes,
            label_skew=label_skew, seed=seed)
        indices = None
        origin = f"synthetic_cifar(n={num_samples}, num_sources={num_sources}, seed={seed})"
    t["load/generate"] = time.perf_counter() - t0
    _log(verbose, f"  dataset: {len(sources)} samples from {origin}")

    t0 = time.perf_counter()
    store_dir = os.path.join(out_dir, STORE_DIR)
    os.makedirs(out_dir, exist_ok=True)
    data.write_packed(store_dir, samples, labels, sources, indices=indices)
    t["write store"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    store = data.open_store(store_dir)  # hash what was written, as it will be read
    manifest = data.manifest_for_store(store, algorithm=algorithm, device=device)
    _sync(device)
    t["hash (manifest)"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    keys = _source_private_keys(keys_dir, list(manifest.sources))
    bundles = sign_manifest(manifest, keys, os.path.join(out_dir, MANIFEST_DIR))
    t["sign"] = time.perf_counter() - t0

    counts = {s: len(p) for s, p in manifest.sources.items()}
    summary = {
        "samples": len(manifest), "sources": counts, "algorithm": manifest.algorithm,
        "dataset_digest": manifest.dataset_digest(),
        "source_digests": {s: manifest.source_digest(s) for s in manifest.sources},
        "num_classes": int(max(r.label for r in manifest.records()) + 1),
        "bundles": [os.path.relpath(p, out_dir) for p in bundles], "origin": origin,
    }
    _write_json(os.path.join(out_dir, DATASET_JSON), summary)
    summary["seconds"] = t
    summary["data_dir"] = os.fspath(out_dir)
    _log(verbose, f"  dataset: {len(counts)} sources "
                  f"({', '.join(f'{s}: {c}' for s, c in counts.items())}), dataset digest "
                  f"{summary['dataset_digest'][:16]}..., {len(bundles)} signed manifests")
    return summary


# ---------------------------------------------------------------------------------------------
# the model


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU-maxpool blocks (width, 2*width, 4*width), global average pool, linear."""

    def __init__(self, num_classes=10, width=32):
        super().__init__()
        layers, cin = [], 3
        for cout in (width, 2 * width, 4 * width):
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.features(x)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def normalise(x):
    """uint8 [B, 3, H, W] → float32, on x's device (after the batch has been checked)."""
    return x.float().sub_(MEAN).div_(STD)


def augment(x, generator=None, pad=4):
    """Random crop (reflect-padded by ``pad``) and horizontal flip, per sample, on the device.
    Runs after hashing: the manifest covers the raw bytes, not the augmented ones."""
    b, c, h, w = x.shape
    dev = x.device
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (b,), device=dev, generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b,), device=dev, generator=generator)
    rows = (dy[:, None] + torch.arange(h, device=dev))[:, None, :, None].expand(b, c, h, w + 2 * pad)
    xp = xp.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, None, :].expand(b, c, h, w)
    xp = xp.gather(3, cols)
    flip = torch.rand(b, device=dev, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], xp.flip(3), xp)


# ---------------------------------------------------------------------------------------------
# train agent


def train_agent(data_dir, out_dir, *, keys_dir, device=None, epochs=2, batch_size=256, lr=0.05,
                seed=0, width=32, weight_decay=5e-4, check_every=16, num_workers=0,
                verbose=True):
    """Verifies the signed manifest, trains SmallCNN on split "train" with every batch checked
    on the device, signs the model and its SLSA provenance with keys_dir/trainer.pem (generated
    when absent). Returns a summary dict."""
    from .. import __version__
    from ..datasets import stores as data
    from .provenance import make_statement, model_root, now_rfc3339, sign_provenance
    from ..oms.signing import sign_model

    device = torch.device(device or default_device())
    started = now_rfc3339()
    t = {}
    t0 = time.perf_counter()
    manifest = load_verified_manifest(data_dir, keys_dir)
    t["verify manifest"] = time.perf_counter() - t0
    num_classes = int(max(r.label for r in manifest.records()) + 1)

    torch.manual_seed(seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    loader, _ = data.get_image_dataloader(
        os.path.join(data_dir, STORE_DIR), batch_size, device, manifest=manifest, shuffle=True,
        num_workers=num_workers, check_every=check_every, split="train", seed=seed)
    model = SmallCNN(num_classes, width).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True,
                          weight_decay=weight_decay)
    try:
        steps = epochs * len(loader)
    except TypeError:
        steps = None
    sched = None
    if steps:  # linear warm-up over the first 15% of the steps, then cosine decay to zero
        warm = max(1, int(0.15 * steps))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * 0.5
                                                  * (1 + math.cos(math.pi * min(s, steps) / steps)))
    history = []
    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0
        # The loader checks each batch on the device before yielding it, and raises at the end
        # of the epoch (at the latest) naming the first bad sample: fail closed.
        for x, y, _idx in progress(loader, f"train epoch {epoch + 1}/{epochs}", enabled=verbose):
            inputs = augment(normalise(x), gen)
            out = model(inputs)
            loss = F.cross_entropy(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            loss_sum += loss.detach() * y.shape[0]
            correct += (out.detach().argmax(1) == y).sum()
            seen += y.shape[0]
        if seen == 0:
            raise FormatError(f"{data_dir}: the train split is empty")
        history.append({"epoch": epoch + 1, "loss": loss_sum.item() / seen,
                        "train_accuracy": correct.item() / seen, "samples": seen})
        _log(verbose, f"  train epoch {epoch + 1}: loss {history[-1]['loss']:.4f}, "
                      f"train accuracy {history[-1]['train_accuracy']:.3f} (all {seen} samples "
                      "verified)")
    _sync(device)
    t["train (verified)"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    trainer_key = _ensure_key(keys_dir, TRAINER)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(state, os.path.join(out_dir, MODEL_FILE))
    _write_json(os.path.join(out_dir, MODEL_JSON),
                {"arch": "SmallCNN", "num_classes": num_classes, "width": width})
    sig = os.path.join(out_dir, MODEL_SIG)
    sign_model(state, trainer_key, sig, model_name=MODEL_NAME)
    root, name = model_root(sig)
    t["sign model"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    params = {"epochs": epochs, "lr": lr, "batchSize": batch_size, "seed": seed,
              "algorithm": manifest.algorithm, "weightDecay": weight_decay, "split": "train",
              "model": {"arch": "SmallCNN", "numClasses": num_classes, "width": width}}
    internal = {"device": str(device), "torch": torch.__version__, "sentry": __version__}
    payload = make_statement(model_name=name, model_digest=root, manifest=manifest,
                             parameters=params, internal=internal, started_on=started,
                             finished_on=now_rfc3339())
    sign_provenance(payload, trainer_key, os.path.join(out_dir, PROVENANCE_SIG))
    t["sign provenance"] = time.perf_counter() - t0
    summary = {"loss": history[-1]["loss"], "train_accuracy": history[-1]["train_accuracy"],
               "history": history, "model_digest": root, "model_name": name,
               "dataset_digest": manifest.dataset_digest(), "parameters": params,
               "device": str(device), "seconds": t, "model_dir": os.fspath(out_dir)}
    _log(verbose, f"  train: model digest {root[:16]}..., signed model and provenance "
                  f"(dataset {summary['dataset_digest'][:16]}...)")
    return summary


# ---------------------------------------------------------------------------------------------
# infer agent


def load_verified_model(model_dir, *, keys_dir, device=None):
    """Rebuilds the CNN with the weights of model_dir, after verify_model has checked them on
    ``device`` (fail closed: VerificationError names the tensors that differ). Returns
    (model in eval mode, sentry.signing.Verified)."""
    from ..oms.signing import verify_model

    device = torch.device(device or default_device())
    cfg = _read_json(os.path.join(model_dir, MODEL_JSON), "model architecture")
    if cfg.get("arch") != "SmallCNN":
        raise FormatError(f"{os.path.join(model_dir, MODEL_JSON)}: arch: unknown "
                          f"{cfg.get('arch')!r}")
    path = os.path.join(model_dir, MODEL_FILE)
    state = load_state_dict(path, device)
    # Checked where they live, BEFORE they are used; nothing else is loaded when this fails.
    verified = verify_model(state, os.path.join(model_dir, MODEL_SIG),
                            public_key=os.path.join(keys_dir, TRAINER + ".pub"))
    model = SmallCNN(int(cfg["num_classes"]), int(cfg["width"])).to(device)
    model.load_state_dict(state)
    return model.eval(), verified


def infer_agent(data_dir, model_dir, *, keys_dir, device=None, batch_size=512, check_every=16,
                num_workers=0, verbose=True):
    """Verifies the model (signature, then provenance against the signed dataset) and runs
    inference on split "test" with every batch checked on the device. Returns a summary."""
    from ..datasets import stores as data
    from .provenance import model_root, verify_provenance

    device = torch.device(device or default_device())
    t = {}
    t0 = time.perf_counter()
    model, verified = load_verified_model(model_dir, keys_dir=keys_dir, device=device)
    _sync(device)
    t["verify model"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    manifest = load_verified_manifest(data_dir, keys_dir)
    root, _ = model_root(os.path.join(model_dir, MODEL_SIG))
    prov = verify_provenance(
        os.path.join(model_dir, PROVENANCE_SIG), os.path.join(keys_dir, TRAINER + ".pub"),
        model_digest=root, dataset_digest=manifest.dataset_digest(),
        source_digests={s: manifest.source_digest(s) for s in manifest.sources})
    t["verify provenance"] = time.perf_counter() - t0
    _log(verbose, f"  infer: model verified ({len(verified.names)} tensors, digest "
                  f"{root[:16]}...), provenance verified (trained on dataset "
                  f"{prov['dataset_digest'][:16]}..., {prov['parameters']['epochs']} epochs)")

    t0 = time.perf_counter()
    loader, _ = data.get_image_dataloader(
        os.path.join(data_dir, STORE_DIR), batch_size, device, manifest=manifest, shuffle=False,
        num_workers=num_workers, check_every=check_every, split="test")
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    with torch.inference_mode():
        for x, y, _idx in progress(loader, "infer (test split)", enabled=verbose):
            correct += (model(normalise(x)).argmax(1) == y).sum()
            seen += y.shape[0]
    if seen == 0:
        raise FormatError(f"{data_dir}: the test split is empty")
    accuracy = correct.item() / seen
    t["infer (verified)"] = time.perf_counter() - t0
    _log(verbose, f"  infer: test accuracy {accuracy:.3f} on {seen} samples (all verified)")
    return {"accuracy": accuracy, "samples": seen, "model_digest": root,
            "dataset_digest": manifest.dataset_digest(), "provenance": prov,
            "device": str(device), "seconds": t}


__all__ = ["dataset_agent", "train_agent", "infer_agent", "SmallCNN", "load_verified_model",
           "load_verified_manifest", "source_public_keys", "progress", "normalise", "augment"]
