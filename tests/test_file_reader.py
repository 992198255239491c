"""Untrusted files are read, never memory-mapped (sentry/file_reader.py, csrc/io): a file that
shrinks while it is hashed or loaded is a one-line error naming it (exit 1 or 2), never a
SIGBUS; signing takes the file digests and the tensor digests from one read; a .pt whose
tensor is far larger than what was signed (stride 0) is refused before it is materialised.
Digests are checked against hashlib and b3sum."""
import hashlib
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

import sentry
from sentry import bundle, checkpoint, model_files
from sentry.errors import FormatError, VerificationError

try:
    from sentry import file_reader
except ImportError:  # the code before the reader (these tests must fail there, not error out)
    file_reader = None

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs `sentry ...` (or checkpoint.load for "load") in a fresh process in which the file given
# first is truncated to the size given second right after it is opened for reading its data:
# by the reader of untrusted files (sentry.file_reader.open_input) or, before there was one, by
# the memory map it replaces (model_files.file_bytes). Deterministic: no racing thread.
VICTIM = r"""
import os, sys
target, keep = sys.argv[1], int(sys.argv[2])

def shrink_after(fn):
    def opened(path, *args, **kwargs):
        out = fn(path, *args, **kwargs)
        if os.path.realpath(path) == os.path.realpath(target):
            os.truncate(target, keep)
        return out
    return opened

import sentry.cli, sentry.model_files
try:
    import sentry.file_reader as reader
    reader.open_input = shrink_after(reader.open_input)
except ImportError:
    sentry.model_files.file_bytes = shrink_after(sentry.model_files.file_bytes)
    sentry.cli.file_bytes = shrink_after(sentry.cli.file_bytes)
argv = sys.argv[3:]
if argv[0] == "load":
    from sentry import checkpoint
    from sentry.errors import SentryError
    try:
        checkpoint.load(argv[1], argv[2])
    except SentryError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
    sys.exit(0)
sys.exit(sentry.cli.main(argv))
"""


def _run_victim(target, argv):
    keep = os.path.getsize(target) // 2
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", VICTIM, str(target), str(keep), *map(str, argv)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def _assert_clear_error(run, target):
    assert run.returncode != -signal.SIGBUS, "killed by SIGBUS"
    assert run.returncode in (1, 2), (run.returncode, run.stderr[-2000:])
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr[-2000:]
    assert str(target) in lines[0] and "changed while it was read" in lines[0], lines[0]


def _tensors(seed, sizes):
    g = torch.Generator().manual_seed(seed)
    return {f"t{i}": torch.randn(n, generator=g) for i, n in enumerate(sizes)}


def _model(root, seed=0):
    """A model directory: two safetensors shards and a plain weights file, a few MB each."""
    from safetensors.torch import save_file

    model = root / "model"
    model.mkdir()
    save_file(_tensors(seed, [3 << 20, 1000, 5]), model / "a.safetensors")
    save_file({"u" + k: v for k, v in _tensors(seed + 1, [7, 1 << 20]).items()},
              model / "b.safetensors")
    (model / "weights.bin").write_bytes(np.random.default_rng(seed).bytes(5 << 20))
    return model


def test_sign_with_a_shard_shrinking_while_read(tmp_path, keys):
    model = _model(tmp_path)
    target = model / "a.safetensors"
    run = _run_victim(target, ["sign", model, "--private-key", keys["alice"][0],
                               "--signature", tmp_path / "model.sig"])
    _assert_clear_error(run, target)
    assert not (tmp_path / "model.sig").exists()


def test_verify_blake3_files_with_a_file_shrinking_while_read(tmp_path, keys):
    model = _model(tmp_path)
    sig = tmp_path / "model.sig"
    sentry.sign_files(model, keys["alice"][0], sig, hash_type="blake3")
    target = model / "weights.bin"
    run = _run_victim(target, ["verify", model, "--signature", sig,
                               "--public-key", keys["alice"][1]])
    _assert_clear_error(run, target)


def test_hash_of_a_file_shrinking_while_read(tmp_path):
    target = tmp_path / "weights.bin"
    target.write_bytes(np.random.default_rng(1).bytes(6 << 20))
    _assert_clear_error(_run_victim(target, ["hash", target]), target)


def test_hash_tensors_of_a_safetensors_file_shrinking_while_read(tmp_path):
    target = _model(tmp_path) / "a.safetensors"
    _assert_clear_error(_run_victim(target, ["hash", "--tensors", target]), target)


def test_checkpoint_load_of_a_file_shrinking_while_read(tmp_path, keys):
    target = tmp_path / "ckpt.safetensors"
    checkpoint.save(_tensors(2, [2 << 20, 300]), target, keys["alice"][0])
    _assert_clear_error(_run_victim(target, ["load", target, keys["alice"][1]]), target)


def test_sign_files_takes_file_and_tensor_digests_from_one_read(tmp_path, keys, monkeypatch,
                                                                 b3):
    """A writer rewriting a tensor in place (same size, same header) while the model is signed:
    whichever bytes are signed, the file digest and the tensor digests describe the same ones."""
    from safetensors.torch import load_file

    model = _model(tmp_path)
    path = model / "a.safetensors"
    entry = sentry.safetensors_format.read_header(path).by_name()["t0"]
    rewritten = []

    def rewrite_after(fn):
        def opened(p, *args, **kwargs):
            out = fn(p, *args, **kwargs)
            if os.path.realpath(p) == os.path.realpath(path) and not rewritten:
                with open(path, "r+b") as f:
                    f.seek(entry.offset)
                    f.write(np.random.default_rng(9).bytes(entry.length))
                rewritten.append(True)
            return out
        return opened

    # The one read of the file today; the second of the two reads before (the memory map the
    # tensor digests were taken from, after the file digest was).
    if hasattr(file_reader, "open_input"):
        monkeypatch.setattr(file_reader, "open_input", rewrite_after(file_reader.open_input))
    else:
        monkeypatch.setattr(model_files, "file_bytes", rewrite_after(model_files.file_bytes))
    sig = tmp_path / "model.sig"
    sentry.sign_files(model, keys["alice"][0], sig)
    monkeypatch.undo()
    assert rewritten
    statement = bundle.parse_statement(bundle.read_bundle(sig).payload)
    data = path.read_bytes()
    assert {r.name: r.digest for r in statement.resources}["a.safetensors"] == \
        hashlib.sha256(data).hexdigest()
    signed = {e["name"]: e["digest"] for e in statement.tensors["entries"]}
    assert signed["t0"] == b3(data[entry.offset:entry.offset + entry.length]).hex()
    sentry.verify_files(model, sig, public_key=keys["alice"][1])
    sentry.verify_model({**load_file(path), **load_file(model / "b.safetensors")}, sig,
                        public_key=keys["alice"][1])


def test_digest_files_match_hashlib_and_b3sum(tmp_path, b3):
    rng = np.random.default_rng(3)
    paths, datas = [], []
    for i, n in enumerate([0, 1, 4096, (4 << 20) + 1, (9 << 20) - 3]):
        datas.append(rng.bytes(n))
        paths.append(tmp_path / f"f{i}")
        paths[-1].write_bytes(datas[-1])
    requests = []
    for p, d in zip(paths, datas):
        ranges = [(0, len(d) // 3), (len(d) // 3, len(d) // 2), (len(d) - len(d) // 7, len(d) // 7)]
        requests.append(file_reader.Request(str(p), file_hash="sha256", ranges=ranges))
        requests.append(file_reader.Request(str(p), file_hash="blake3", ranges=ranges,
                                            prefix=d[:100]))
    got = file_reader.digest_files(requests)
    for k, r in enumerate(requests):
        d = datas[k // 2]
        want = hashlib.sha256(d).hexdigest() if r.file_hash == "sha256" else b3(d).hex()
        assert got[k].file == want, r
        assert got[k].ranges == [b3(d[o:o + n]).hex() for o, n in r.ranges], r


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(FormatError, match="not a regular file"):
        model_files.hash_file(fifo, "blake3")
    with pytest.raises(FormatError, match="not a regular file"):
        file_reader.read_file(fifo)


def test_header_rewritten_before_the_read_is_refused(tmp_path, keys):
    """A header read, then the file swapped for one of the same size with another header: the
    reader's prefix check names the file (the tensor listing would describe other bytes)."""
    from safetensors.torch import save_file

    path = tmp_path / "m.safetensors"
    save_file({"x": torch.zeros(1000), "y": torch.ones(1000)}, path)
    header = sentry.safetensors_format.read_header(path)
    save_file({"x": torch.zeros(1000), "z": torch.ones(1000)}, path)  # same size, other name
    assert os.path.getsize(path) == header.file_size
    with pytest.raises(FormatError, match="changed while it was read.*differ"):
        file_reader.digest_files([file_reader.Request(
            str(path), ranges=[(e.offset, e.length) for e in header.entries],
            prefix=header.prefix, size=header.file_size)])


# ---- resource bombs (issue 11.5) -------------------------------------------------------------

_HUGE = (6 << 30) // 4  # float32 elements of a 6 GiB tensor


def _bomb(tmp_path, keys):
    """A 4-element tensor signed, and a .pt of a few KB holding it as 6 GiB of stride 0."""
    sig = tmp_path / "model.sig"
    sentry.sign_model({"w": torch.arange(4.0), "b": torch.zeros(2)}, keys["alice"][0], sig)
    pt = tmp_path / "bomb.pt"
    torch.save({"w": torch.zeros(1).expand(_HUGE), "b": torch.zeros(2)}, pt)
    return pt, sig


# The peak resident memory of this process's own address space (VmHWM). Not ru_maxrss: Linux
# carries the parent's peak into it across fork and exec.
MEASURED = r"""
import sys
import sentry.cli
rc = sentry.cli.main(sys.argv[1:])
with open("/proc/self/status") as f:
    peak = [line.split()[1] for line in f if line.startswith("VmHWM:")][0]
print("peak_kb", peak, file=sys.stderr)
sys.exit(rc)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="measures VmHWM (Linux)")
def test_verify_of_a_stride0_pt_is_refused_in_bounded_memory(tmp_path, keys):
    pt, sig = _bomb(tmp_path, keys)
    assert os.path.getsize(pt) < 4096
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run = subprocess.run([sys.executable, "-c", MEASURED, "verify", str(pt), "--signature",
                          str(sig), "--public-key", keys["alice"][1]], capture_output=True,
                         text=True, cwd=ROOT, env=env, timeout=300)
    assert run.returncode == 1, run.stderr[-2000:]
    failed = [line for line in run.stderr.splitlines() if "FAILED" in line]
    assert len(failed) == 1 and "changed: w" in failed[0], run.stderr
    peak_kb = int(run.stderr.split("peak_kb")[1].split()[0])
    assert peak_kb < 1_000_000, f"{peak_kb / 1e6:.1f} GB"


@pytest.mark.parametrize("device", DEVICES)
def test_verify_model_hashes_no_tensor_of_another_shape(tmp_path, keys, device):
    """verify_model (C++) compares names, dtypes and shapes first and hashes only what matches:
    the 6 GiB expanded tensor is never made contiguous (the process's peak memory, or the
    device's, does not grow by it)."""
    import resource

    pt, sig = _bomb(tmp_path, keys)
    state = {"w": torch.zeros(1, device=device).expand(_HUGE), "b": torch.zeros(2, device=device)}
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(VerificationError, match="changed: w") as err:
        sentry.verify_model(state, sig, public_key=keys["alice"][1])
    assert err.value.changed == ["w"]
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_kib < 1 << 20  # KiB: 1 GiB
    if device == "cuda":
        assert torch.cuda.max_memory_allocated() < 1 << 30


def test_pt_with_a_compressed_record_is_refused_before_torch_load(tmp_path, keys):
    """torch.load inflates a deflated record whole: 1 MB of .pt can claim a gigabyte (measured:
    1.0 MB -> 1.27 GB resident). torch.save never compresses, so such a file is refused."""
    import zipfile

    from sentry.model_files import load_state_dict

    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.zeros(1000)}, plain)
    bomb = tmp_path / "deflated.pt"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(bomb, "w") as out:
        for info in src.infolist():
            kind = zipfile.ZIP_DEFLATED if "/data/" in info.filename else zipfile.ZIP_STORED
            out.writestr(info.filename, src.read(info), compress_type=kind)
    assert torch.equal(torch.load(bomb, weights_only=True)["w"], torch.zeros(1000))
    assert torch.equal(load_state_dict(plain)["w"], torch.zeros(1000))
    with pytest.raises(FormatError, match=r"deflated\.pt: refused: record .*data/0 is compressed"):
        load_state_dict(bomb)
