"""Inputs and outputs that must fail closed (issue 11, items 4, 6, 7 and 9): FIFOs and other
non-regular files are refused without blocking, a signature never overwrites a model file or a
key, keygen never replaces keys silently, an interrupted sign leaves nothing behind, `sentry
verify X.pt` follows the bundle's method, and every CLI error is one line with exit code 2.

Anything that could hang runs under a watchdog (faulthandler: after TIMEOUT seconds the stacks
are printed and the test process exits), so a regression fails instead of hanging the suite;
the CLI runs in-process (sentry.cli.main) to keep the tests fast.
"""
import faulthandler
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

import sentry
from sentry import sign_files, sign_model
from sentry.crypto import PrivateKey, PublicKey, write_private_key, write_public_key
from sentry.errors import FormatError

from conftest import assert_one_line_error  # noqa: E402  (the cli fixture is there too)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 60


def _run(args, cwd, **kw):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT, **kw)


def python(cwd, code):
    return _run([sys.executable, "-c", textwrap.dedent(code)], cwd)


@pytest.fixture(autouse=True)
def watchdog():
    faulthandler.dump_traceback_later(TIMEOUT, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def _digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
def work(tmp_path):
    """A model directory, a key pair, a signature of the directory, and a FIFO."""
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "weights.bin").write_bytes(os.urandom(4096))
    (model / "sub" / "config.json").write_text('{"layers": 2}')
    key = PrivateKey.generate()
    write_private_key(tmp_path / "key.pem", key)
    write_public_key(tmp_path / "key.pub", key.public_key())
    sign_files(str(model), str(tmp_path / "key.pem"), str(tmp_path / "model.sig"))
    os.mkfifo(tmp_path / "fifo")
    return tmp_path


# ---------------------------------------------------------------------------------------------
# 4. FIFOs and other non-regular files


@pytest.mark.parametrize("args", [
    ["verify", "model", "--signature", "fifo", "--public-key", "key.pub"],
    ["verify", "model", "--signature", "model.sig", "--public-key", "fifo"],
    ["sign", "model", "--private-key", "fifo", "--signature", "new.sig"],
    ["sign", "model", "--private-key", "key.pem", "--signature", "new.sig",
     "--signing-certificate", "fifo"],
    ["hash", "fifo"],
    ["hash", "--tensors", "fifo.safetensors"],
])
def test_cli_refuses_a_fifo_without_blocking(cli, work, args):
    os.mkfifo(work / "fifo.safetensors")
    err = assert_one_line_error(cli(work, *args), 2, "FIFO")
    assert "fifo" in err
    assert not (work / "new.sig").exists()


@pytest.mark.parametrize("call", [
    lambda: sentry.crypto.PublicKey.load("fifo"),
    lambda: sentry.crypto.PrivateKey.load("fifo"),
    lambda: sentry.crypto.load_certificates("fifo"),
    lambda: sentry.crypto.verify_certificate_chain([b"x"], "fifo"),
    lambda: sentry.bundle.read_bundle("fifo"),
    lambda: sentry.safetensors_format.read_header("fifo"),
    lambda: sentry.model_files.hash_file("fifo", "sha256"),
    lambda: sentry.model_files.hash_file("fifo", "blake3"),
    lambda: sentry.model_files.load_state_dict("fifo"),
    lambda: sentry.data.open_store("fifo"),
    lambda: sentry.verify_files("model", "fifo", public_key="key.pub"),
])
def test_api_refuses_a_fifo_without_blocking(work, monkeypatch, call):
    monkeypatch.chdir(work)
    with pytest.raises(FormatError, match="fifo: is a FIFO \\(named pipe\\), not a regular file"):
        call()


def test_a_file_swapped_for_a_fifo_after_listing_is_refused(work, monkeypatch):
    """The check is on the opened descriptor: listing saw a regular file, hashing opens a FIFO."""
    from sentry import model_files

    real = model_files.list_files

    def list_then_swap(*args, **kwargs):
        files = real(*args, **kwargs)
        os.unlink(work / "model" / "weights.bin")
        os.mkfifo(work / "model" / "weights.bin")
        return files

    monkeypatch.setattr(model_files, "list_files", list_then_swap)
    with pytest.raises(FormatError, match="weights.bin: is a FIFO"):
        sentry.verify_files(str(work / "model"), str(work / "model.sig"),
                            public_key=str(work / "key.pub"))


def test_fifo_planted_in_a_sample_store_is_refused(tmp_path):
    from sentry import data

    x = torch.randint(0, 256, (6, 3, 4, 4), dtype=torch.uint8)
    data.write_npy_folder(tmp_path / "store", x.numpy(), [0] * 6, ["s"] * 6)
    os.unlink(tmp_path / "store" / "00000002.npy")
    os.mkfifo(tmp_path / "store" / "00000002.npy")
    with pytest.raises(FormatError, match="00000002.npy: is a FIFO"):
        data.open_store(tmp_path / "store")
    store = data.open_store(tmp_path / "store", check_headers=False)
    with pytest.raises(FormatError, match="00000002.npy: is a FIFO"):
        store.read(2)


def test_agent_train_refuses_a_fifo_planted_as_a_manifest(cli, tmp_path):
    from sentry import agents

    data_dir, keys = tmp_path / "data", tmp_path / "keys"
    agents.dataset_agent(str(data_dir), keys_dir=str(keys), num_samples=48, num_sources=2,
                         verbose=False)
    manifests = data_dir / agents.MANIFEST_DIR
    victim = sorted(manifests.iterdir())[0]
    victim.unlink()
    os.mkfifo(victim)
    proc = cli(tmp_path, "agent", "train", "--data", data_dir, "--model", tmp_path / "out",
               "--keys", keys, "--device", "cpu", "--epochs", "1", "--width", "4")
    assert_one_line_error(proc, 2, victim.name, "FIFO")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# 6. a signature never overwrites an input; keygen never replaces keys silently


@pytest.mark.parametrize("target", ["model/weights.bin", "model/sub/config.json", "key.pem",
                                    "key.pub", "model"])
def test_sign_refuses_to_overwrite_what_is_not_a_signature(cli, work, target):
    before = {p: _digest(work / p) for p in ("model/weights.bin", "model/sub/config.json",
                                             "key.pem", "key.pub")}
    listing = sorted(os.listdir(work)), sorted(os.listdir(work / "model"))
    err = assert_one_line_error(
        cli(work, "sign", "model", "--private-key", "key.pem", "--signature", target), 2,
        "refusing to write the signature there")
    assert target in err
    assert {p: _digest(work / p) for p in before} == before
    assert (sorted(os.listdir(work)), sorted(os.listdir(work / "model"))) == listing


def test_sign_refuses_the_single_file_model_itself(cli, work):
    before = _digest(work / "model" / "weights.bin")
    assert_one_line_error(cli(work, "sign", "model/weights.bin", "--private-key", "key.pem",
                              "--signature", "model/weights.bin"), 2, "refusing")
    assert _digest(work / "model" / "weights.bin") == before


def test_api_sign_refuses_too(work):
    state = {"w": torch.ones(3)}
    for target in ("key.pem", "model/weights.bin"):
        before = _digest(work / target)
        with pytest.raises(FormatError, match="refusing"):
            sign_model(state, str(work / "key.pem"), str(work / target))
        with pytest.raises(FormatError, match="refusing"):
            sign_files(str(work / "model"), str(work / "key.pem"), str(work / target))
        assert _digest(work / target) == before


def test_sign_replaces_an_older_signature(cli, work):
    proc = cli(work, "sign", "model", "--private-key", "key.pem", "--signature", "model.sig")
    assert proc.returncode == 0, proc.stderr
    proc = cli(work, "verify", "model", "--signature", "model.sig", "--public-key", "key.pub")
    assert proc.returncode == 0, proc.stderr


def test_keygen_never_replaces_keys_silently(cli, tmp_path):
    assert cli(tmp_path, "keygen", "--private-key", "a.pem", "--public-key", "a.pub"
               ).returncode == 0
    before = _digest(tmp_path / "a.pem"), _digest(tmp_path / "a.pub")
    for args in (["--private-key", "a.pem", "--public-key", "b.pub"],
                 ["--private-key", "b.pem", "--public-key", "a.pub"]):
        assert_one_line_error(cli(tmp_path, "keygen", *args), 2, "exists", "--force")
    assert (_digest(tmp_path / "a.pem"), _digest(tmp_path / "a.pub")) == before
    assert not (tmp_path / "b.pem").exists() and not (tmp_path / "b.pub").exists()
    assert_one_line_error(cli(tmp_path, "keygen", "--private-key", "c.pem", "--public-key",
                              "c.pem", "--force"), 2, "same file")
    proc = cli(tmp_path, "keygen", "--private-key", "a.pem", "--public-key", "a.pub", "--force")
    assert proc.returncode == 0, proc.stderr
    after = _digest(tmp_path / "a.pem"), _digest(tmp_path / "a.pub")
    assert after[0] != before[0] and after[1] != before[1]
    key = PrivateKey.load(str(tmp_path / "a.pem"))
    assert PublicKey.load(str(tmp_path / "a.pub")) == key.public_key()
    assert sorted(os.listdir(tmp_path)) == ["a.pem", "a.pub"]


# ---------------------------------------------------------------------------------------------
# 7. an interrupted sign leaves nothing behind


def test_sign_killed_while_writing_leaves_no_file(cli, work):
    """SIGKILL in the middle of writing the new signature (after its bytes are written, before
    it is named): nothing new in the directory, the older signature still verifies, and a new
    sign covers the same files."""
    (work / "model" / "model.sig").write_bytes((work / "model.sig").read_bytes())
    sign_files(str(work / "model"), str(work / "key.pem"), str(work / "model" / "model.sig"))
    listing = sorted(os.listdir(work / "model"))
    proc = python(work, """
        import os, signal, sys
        sys.argv = ['sentry', 'sign', 'model', '--private-key', 'key.pem',
                    '--signature', 'model/model.sig']
        real_fsync = os.fsync
        def killed(fd):
            real_fsync(fd)
            os.kill(os.getpid(), signal.SIGKILL)  # as a kill -9 at the worst moment would
        os.fsync = killed
        from sentry.cli import main
        main(sys.argv[1:])
        """)
    assert proc.returncode == -signal.SIGKILL
    assert sorted(os.listdir(work / "model")) == listing  # no stray temporary file
    proc = cli(work, "verify", "model", "--signature", "model/model.sig", "--public-key",
               "key.pub")
    assert proc.returncode == 0, proc.stderr
    assert "(2 files," in proc.stdout


def test_atomic_file_uses_an_unnamed_file_while_writing(tmp_path):
    from sentry.fileio import atomic_file

    target = tmp_path / "out.bin"
    with atomic_file(target) as f:
        f.write(b"partial")
        assert os.listdir(tmp_path) == []  # nothing named yet
    assert target.read_bytes() == b"partial" and os.listdir(tmp_path) == ["out.bin"]


# ---------------------------------------------------------------------------------------------
# 9. `verify X.pt` follows the bundle's method; every CLI error is one line


@pytest.fixture
def pt_model(work):
    torch.save({"w": torch.arange(6.0)}, work / "model.pt")
    return work


def test_verify_pt_with_a_files_bundle(cli, pt_model):
    sign_files(str(pt_model / "model.pt"), str(pt_model / "key.pem"), str(pt_model / "pt.sig"))
    proc = cli(pt_model, "verify", "model.pt", "--signature", "pt.sig", "--public-key", "key.pub")
    assert proc.returncode == 0, proc.stderr
    assert "(1 file, " in proc.stdout
    with open(pt_model / "model.pt", "ab") as f:
        f.write(b"\0")
    assert_one_line_error(cli(pt_model, "verify", "model.pt", "--signature", "pt.sig",
                              "--public-key", "key.pub"), 1, "FAILED")


def test_verify_pt_signed_by_the_reference_tool(cli, pt_model):
    pytest.importorskip("model_signing", reason="the reference model-signing package")
    exe = shutil.which("model_signing")
    cmd = [exe] if exe else [sys.executable, "-m", "model_signing"]
    signed = subprocess.run(cmd + ["sign", "key", "--signature", "ref.sig", "--private_key",
                                   "key.pem", "model.pt"], cwd=pt_model, capture_output=True,
                            text=True, timeout=TIMEOUT)
    assert signed.returncode == 0, signed.stderr
    proc = cli(pt_model, "verify", "model.pt", "--signature", "ref.sig", "--public-key", "key.pub")
    assert proc.returncode == 0, proc.stderr


def test_verify_pt_with_a_tensors_bundle(cli, pt_model):
    proc = cli(pt_model, "sign", "model.pt", "--private-key", "key.pem", "--signature", "t.sig")
    assert proc.returncode == 0, proc.stderr
    proc = cli(pt_model, "verify", "model.pt", "--signature", "t.sig", "--public-key", "key.pub")
    assert proc.returncode == 0 and "(1 tensor, " in proc.stdout, proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
@pytest.mark.parametrize("args", [
    ["hash", "--tensors", "--device", "cuda", "model.pt"],
    ["hash", "--device", "cuda", "model.pt"],
    ["demo", "--device", "cuda"],
    ["agent", "train", "--data", "d", "--model", "m", "--keys", "k", "--device", "cuda"],
])
def test_cuda_without_cuda_is_one_line(cli, pt_model, args):
    assert_one_line_error(cli(pt_model, *args), 2, "--device cuda")


@pytest.mark.parametrize("args,needle", [
    (["hash", "missing.bin"], "missing.bin"),
    (["hash", "--device", "tpu9", "model.pt"], "--device tpu9"),
    (["verify", "model", "--signature", "missing.sig", "--public-key", "key.pub"],
     "missing.sig: no such file"),
    (["verify", "model", "--signature", "model.sig", "--public-key", "key.pub",
      "--certificate-chain", "key.pub"], "not both"),
    (["sign", "model", "--private-key", "missing.pem", "--signature", "x.sig"], "missing.pem"),
])
def test_user_errors_are_one_line(cli, pt_model, args, needle):
    assert_one_line_error(cli(pt_model, *args), 2, needle)


def test_packed_store_truncated_underneath_is_an_error_not_a_signal(tmp_path):
    """Packed rows are read with pread: a file cut short after the store was opened is a
    FormatError naming it (a memory map would have died of SIGBUS)."""
    from sentry import data

    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    data.write_packed(tmp_path / "store", x.numpy(), list(range(64)), ["s"] * 64)
    store = data.open_store(tmp_path / "store")
    assert torch.equal(torch.from_numpy(store.read_rows([63, 0, 5, 6, 7])), x[[63, 0, 5, 6, 7]])
    with open(tmp_path / "store" / "samples.npy", "r+b") as f:
        f.truncate(os.fstat(f.fileno()).st_size - 1000)
    assert torch.equal(torch.from_numpy(store.read_rows([1, 2])), x[[1, 2]])
    with pytest.raises(FormatError, match="samples.npy: ends inside sample row 62"):
        store.read_rows([3, 62, 63])
