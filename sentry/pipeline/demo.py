"""`sentry demo`: the dataset → train → infer pipeline, then three tampers caught.

In a temporary directory (or ``workdir``): ``dataset_agent`` makes the embedded CIFAR-10-shaped
synthetic dataset (split over 4 sources with label skew) and signs its manifest per source;
``train_agent`` trains a small CNN with every batch verified on the device and signs the model
and its SLSA provenance; ``infer_agent`` verifies the model and provenance and runs inference on
the test split with every batch verified. A summary table follows, then three tampers, each of
which must be caught: a changed sample byte in the packed store, a flipped label, a flipped bit
in one weight. Exit code 0 when all is well, 1 when a tamper was not caught.

``run(hash_only=True)`` (``sentry demo --hash-only``) is the model-hashing demo: it hashes a
ResNet-152-shaped state dict (932 tensors, 0.24 GB, random weights from the shape list in
sentry/data) with every algorithm, cross-checks CPU and GPU digests and finds a flipped weight.
"""
import time

import torch

from sentry_ops import ALGORITHMS, digests_hex, hash_tensors

from ..formats.bundle import Resource, root_digest
from .shaped_models import shaped_state_dict, state_dict_bytes


def model_root(names, algorithm, hexes):
    """The ROOT of SPEC §2 (what a signature's subject digest would be): bundle.root_digest over
    the tensor digests in name order."""
    return root_digest([Resource(n, algorithm, h) for n, h in sorted(zip(names, hexes))])


def _timed(fn, device, reps=5):
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, (time.perf_counter() - t0) / reps


def run_hash(model="resnet152", device=None, show=3):
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    print(f"sentry demo: {model}-shaped state dict with random weights on {device}")
    state = shaped_state_dict(model, device)
    names, tensors = list(state), list(state.values())
    nbytes = state_dict_bytes(state)
    print(f"  {len(tensors)} tensors, {nbytes / 1e9:.3f} GB\n")
    roots = {}
    for algorithm in ALGORITHMS:
        digests, seconds = _timed(lambda: hash_tensors(tensors, algorithm), device)
        hexes = digests_hex(digests)
        roots[algorithm] = model_root(names, algorithm, hexes)
        print(f"  {algorithm}: {seconds * 1e3:.2f} ms per model, {nbytes / seconds / 1e9:.2f} GB/s")
        for name, h in list(zip(names, hexes))[:show]:
            print(f"    {h}  {name}")
        print(f"    ... ({len(names) - show} more)")
        print(f"    model root (SHA-256 of the digests in name order): {roots[algorithm]}\n")
        if device.type == "cuda":
            on_cpu = hash_tensors([t.cpu() for t in tensors], algorithm)
            same = torch.equal(on_cpu, digests.cpu())
            print(f"    CPU kernel gives the same {len(names)} digests: {same}\n")
            if not same:
                raise SystemExit("sentry demo: CPU and CUDA digests differ")

    # Tamper: flip one bit of one weight, in place, and find it by digest.
    victim = names[len(names) // 2]
    before = hash_tensors(tensors)
    flat = state[victim].view(-1).view(torch.uint8)
    flat[flat.numel() // 2] ^= 1
    after = hash_tensors(tensors)
    changed = [names[i] for i in torch.nonzero((before != after).any(dim=1)).flatten().tolist()]
    print(f"  tamper: flipped one bit of '{victim}'")
    print(f"    tensors whose digest changed: {changed}")
    if changed != [victim]:
        raise SystemExit("sentry demo: the tampered tensor was not identified")
    print("    caught: exactly the tampered tensor differs")
    return 0


# ---------------------------------------------------------------------------------------------
# the pipeline demo


def _short(hexd, n=12):
    return hexd[:n] + "..."


def _table(rows, header):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
    print(line(header))
    print("  " + "  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r))


def _flip_sample_byte(store_dir, sample):
    """Changes one byte of ``sample`` where it lies in the packed store's files (found by its
    exact bytes). Returns the file changed, or None when the bytes were not found as such."""
    import os

    import numpy as np

    from ..datasets import stores as data

    store = data.open_store(store_dir)
    raw = np.ascontiguousarray(store.read(store.row_of(sample))).tobytes()
    for name in sorted(os.listdir(store_dir)):
        path = os.path.join(store_dir, name)
        if not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            content = f.read()
        at = content.find(raw)
        if at >= 0 and content.find(raw, at + 1) < 0:
            with open(path, "r+b") as f:
                f.seek(at + len(raw) // 2)
                f.write(bytes([content[at + len(raw) // 2] ^ 0x01]))
            return path
    return None


def _rewrite_store(src_dir, dst_dir, *, sample=None):
    """Writes a copy of the store with one byte of sample ``sample`` (a global index) changed."""
    import numpy as np

    from ..datasets import stores as data

    store = data.open_store(src_dir)
    samples = store.read_rows(np.arange(len(store)))
    row = samples[store.row_of(sample)].reshape(-1)
    row[row.size // 2] ^= 1
    data.write_packed(dst_dir, samples, store.labels, list(store.sources), indices=store.indices)


def _set_label(store_dir, sample, label):
    """Changes the label of sample ``sample`` (a global index) in the store's index.json."""
    import json
    import os

    from ..datasets import stores as data

    path = os.path.join(store_dir, data.INDEX_FILE)
    with open(path, "rb") as f:
        doc = json.loads(f.read())
    entry = next(e for e in doc["samples"] if e["index"] == sample)
    entry["label"] = label
    with open(path, "w") as f:
        json.dump(doc, f)


def _check_tamper(title, expect, action):
    """Runs ``action`` (which must raise VerificationError); ``expect(exc)`` says whether the
    error names the right thing. Returns (row for the table, caught?)."""
    from ..errors import VerificationError

    print(f"\n  tamper: {title}")
    try:
        action()
    except VerificationError as exc:
        ok, what = expect(exc)
        if ok:
            print(f"    caught: {exc}")
            return [title, "caught", what], True
        print(f"    NOT caught as expected (wrong name): {exc}")
        return [title, "WRONG NAME", str(exc)[:60]], False
    print("    NOT caught: no error was raised")
    return [title, "NOT CAUGHT", "-"], False


def run(model="resnet152", device=None, show=3, *, hash_only=False, samples=10000, epochs=2,
        sources=4, batch_size=256, width=32, seed=0, workdir=None, verbose=True):
    """`sentry demo`: the pipeline and its tampers (or, with hash_only, the hashing demo).
    Returns 0 when everything verified and every tamper was caught, 1 otherwise."""
    if hash_only:
        return run_hash(model, device, show)
    import os
    import shutil
    import tempfile

    from . import agents
    from ..datasets import stores as data
    from ..datasets.manifest import DatasetVerificationError

    device = str(device or agents.default_device())
    print(f"sentry demo: dataset → train → infer on {device}: a CIFAR-10-shaped synthetic "
          f"dataset of {samples} samples from {sources} sources, {epochs} epoch(s)\n")
    t_start = time.perf_counter()
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="sentry-demo-")
        workdir = tmp.name
    os.makedirs(workdir, exist_ok=True)
    keys, data_dir, model_dir = (os.path.join(workdir, d) for d in ("keys", "data", "model"))
    try:
        print("[1/3] dataset agent")
        t0 = time.perf_counter()
        ds = agents.dataset_agent(data_dir, keys_dir=keys, num_samples=samples,
                                  num_sources=sources, seed=seed, device=device, verbose=verbose)
        t_ds = time.perf_counter() - t0
        print("\n[2/3] train agent")
        t0 = time.perf_counter()
        tr = agents.train_agent(data_dir, model_dir, keys_dir=keys, device=device,
                                epochs=epochs, batch_size=batch_size, width=width, seed=seed,
                                verbose=verbose)
        t_tr = time.perf_counter() - t0
        print("\n[3/3] infer agent")
        t0 = time.perf_counter()
        inf = agents.infer_agent(data_dir, model_dir, keys_dir=keys, device=device,
                                 verbose=verbose)
        t_inf = time.perf_counter() - t0

        print("\nsummary")
        _table([
            ["dataset", f"{t_ds:.1f}", f"dataset {_short(ds['dataset_digest'])}",
             f"manifest signed by {len(ds['sources'])} sources",
             f"{ds['samples']} samples"],
            ["train", f"{t_tr:.1f}", f"model {_short(tr['model_digest'])}",
             "manifest verified, every batch verified, model + provenance signed",
             f"loss {tr['loss']:.3f}, train acc {tr['train_accuracy']:.3f}"],
            ["infer", f"{t_inf:.1f}", f"model {_short(inf['model_digest'])}",
             "model verified, provenance verified, every batch verified",
             f"test acc {inf['accuracy']:.3f} ({inf['samples']} samples)"],
        ], ["stage", "seconds", "digest", "verdicts", "result"])
        same = (inf["provenance"]["model_digest"] == tr["model_digest"]
                and inf["provenance"]["dataset_digest"] == ds["dataset_digest"])
        print(f"  provenance links model {_short(tr['model_digest'])} to dataset "
              f"{_short(ds['dataset_digest'])}: {same}")

        manifest = agents.load_verified_manifest(data_dir, keys)
        store_dir = os.path.join(data_dir, agents.STORE_DIR)
        n = ds["samples"]
        victim = min(n // 3 + 1, n - 1)
        victim_source = manifest.source_of(victim)

        def scan(path):
            loader, _ = data.get_image_dataloader(path, 512, device, manifest=manifest,
                                                  shuffle=True, seed=seed)
            for _ in loader:
                pass

        def sample_action():
            bad = os.path.join(workdir, "tampered-sample")
            shutil.copytree(store_dir, bad)
            changed = _flip_sample_byte(bad, victim)
            print(f"    changed one byte of sample {victim} (source {victim_source!r}) in "
                  + (os.path.basename(changed) if changed else "a rewritten copy of the store"))
            if changed is None:
                shutil.rmtree(bad)
                _rewrite_store(store_dir, bad, sample=victim)
            scan(bad)

        def label_action():
            bad = os.path.join(workdir, "tampered-label")
            shutil.copytree(store_dir, bad)
            old = manifest.record(victim).label
            new = (old + 1) % max(ds["num_classes"], 2)
            _set_label(bad, victim, new)
            print(f"    label of sample {victim} changed from {old} to {new} in "
                  f"{data.INDEX_FILE}")
            scan(bad)

        def expect_sample(kind):
            def check(exc):
                ok = (isinstance(exc, DatasetVerificationError) and exc.index == victim
                      and exc.source == victim_source and kind in exc.kinds)
                return ok, f"sample {victim}, source {victim_source}, {kind}"
            return check

        tensor = "features.4.weight"

        def weight_action():
            import torch as _torch

            bad = os.path.join(workdir, "tampered-model")
            shutil.copytree(model_dir, bad)
            path = os.path.join(bad, agents.MODEL_FILE)
            state = _torch.load(path, weights_only=True)
            flat = state[tensor].view(-1).view(_torch.uint8)
            flat[flat.numel() // 2] ^= 0x10
            _torch.save(state, path)
            print(f"    flipped one bit of '{tensor}' in {agents.MODEL_FILE}")
            agents.infer_agent(data_dir, bad, keys_dir=keys, device=device, verbose=False)

        rows, all_caught = [], True
        for title, expect, action in (
                ("changed sample byte", expect_sample("bytes"), sample_action),
                ("flipped label", expect_sample("label"), label_action),
                ("flipped weight bit", lambda e: (e.changed == [tensor], f"tensor {tensor}"),
                 weight_action)):
            row, caught = _check_tamper(title, expect, action)
            rows.append(row)
            all_caught &= caught
        print("\ntampers")
        _table(rows, ["tamper", "verdict", "named"])
        total = time.perf_counter() - t_start
        print(f"\nsentry demo: {total:.1f} s in all; "
              + ("every tamper was caught" if all_caught else "A TAMPER WAS NOT CAUGHT"))
        return 0 if all_caught else 1
    finally:
        if tmp is not None:
            tmp.cleanup()
