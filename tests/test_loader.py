"""sentry.load_verified: signed safetensors files read once, checked byte for byte on the way to
their device, returned only when everything matched.

References: the tensors as they were written (bytes compared), safetensors' own load_file, and
bundles made by the reference tool (`model_signing`: a plain `files` bundle and its `shards`
serialization). Every tamper leaves nothing loaded and names the file.
"""
import base64
import json
import os
import pathlib
import shutil
import struct

import pytest
import torch

from sentry import load_verified, verify_files
from sentry.errors import FormatError, VerificationError
from sentry.signing import sign_files, sign_model

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
SMALL_BLOCK = 64 << 10  # the reader's smallest block: tensors span many blocks

# Every safetensors dtype with a torch dtype of whole bytes.
DTYPES = {
    "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16,
    "U16": torch.uint16, "F16": torch.float16, "BF16": torch.bfloat16, "I32": torch.int32,
    "U32": torch.uint32, "F32": torch.float32, "I64": torch.int64, "U64": torch.uint64,
    "F64": torch.float64, "C64": torch.complex64, "F8_E5M2": torch.float8_e5m2,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E8M0": torch.float8_e8m0fnu,
    "F8_E4M3FNUZ": torch.float8_e4m3fnuz, "F8_E5M2FNUZ": torch.float8_e5m2fnuz,
}


def _random(dtype, shape, g):
    n = 1
    for d in shape:
        n *= d
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=g).bool()
    size = torch.empty(0, dtype=dtype).element_size()
    raw = torch.randint(0, 256, (n * size,), dtype=torch.uint8, generator=g)
    return raw.view(dtype).reshape(shape)


def _write_safetensors(path, tensors):
    """A safetensors file with the tensors in the order given (safetensors.save_file sorts them
    by alignment; this order puts some at offsets their dtype does not divide)."""
    name_of = {v: k for k, v in DTYPES.items()}
    header, data, at = {"__metadata__": {"format": "pt"}}, b"", 0
    for name, t in tensors:
        raw = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": name_of[t.dtype], "shape": list(t.shape),
                        "data_offsets": [at, at + len(raw)]}
        data += raw
        at += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def _model(root):
    """A two-file model holding every dtype, empty and 0-d tensors, tensors spanning many
    blocks and tensors at unaligned offsets, plus a config file. Returns (dir, {name: tensor})."""
    g = torch.Generator().manual_seed(3)
    d = root / "model"
    d.mkdir()
    first = [("odd.bytes", _random(torch.uint8, (3,), g)),  # what follows is unaligned
             ("big.weight", _random(torch.float32, (300, 257), g)),
             ("steps", torch.tensor(7, dtype=torch.int64)),
             ("empty", torch.empty(0, 3)),
             ("mask", _random(torch.bool, (5, 5), g)),
             ("w.bf16", _random(torch.bfloat16, (129, 33), g))]
    second = [(f"t.{name.lower()}", _random(dtype, (17, 3), g)) for name, dtype in DTYPES.items()]
    second.append(("after.odd", _random(torch.int32, (1000,), g)))
    _write_safetensors(d / "model-00001-of-00002.safetensors", first)
    _write_safetensors(d / "model-00002-of-00002.safetensors", second)
    (d / "config.json").write_text('{"hidden": 33}')
    return d, dict(first + second)


def _same(a, b):
    return (a.dtype == b.dtype and a.shape == b.shape
            and torch.equal(a.cpu().reshape(-1).view(torch.uint8),
                            b.cpu().reshape(-1).view(torch.uint8)))


def _reference_sign(model, signature, private_key, shard_size=None):
    ms = pytest.importorskip("model_signing", reason="the reference model-signing package")
    config = ms.signing.Config().use_elliptic_key_signer(private_key=pathlib.Path(private_key))
    if shard_size:
        config.set_hashing_config(
            ms.hashing.Config().use_shard_serialization(shard_size=shard_size))
    config.sign(pathlib.Path(model), pathlib.Path(signature))


def _sign(kind, model, signature, private_key):
    if kind == "sentry":
        sign_files(str(model), private_key, signature)
    elif kind == "reference files":
        _reference_sign(model, signature, private_key)
    else:  # many shards per file, cut where no block boundary is
        _reference_sign(model, signature, private_key, shard_size=10_000)


KINDS = ["sentry", "reference files", "reference shards"]


@pytest.fixture
def signed(tmp_path, keys, request):
    kind = request.param
    d, tensors = _model(tmp_path)
    sig = str(tmp_path / "model.sig")
    _sign(kind, d, sig, keys["alice"][0])
    return kind, d, sig, tensors


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("signed", KINDS, indirect=True)
@pytest.mark.parametrize("block_size,threads", [(SMALL_BLOCK, 3), (None, None)])
def test_loads_what_was_saved(signed, keys, device, block_size, threads):
    from safetensors.torch import load_file

    kind, d, sig, tensors = signed
    state = load_verified(str(d), sig, public_key=keys["alice"][1], device=device,
                          block_size=block_size, threads=threads)
    assert sorted(state) == sorted(tensors)
    for name, t in tensors.items():
        assert _same(state[name], t), name
        assert state[name].device.type == device
    for f in d.glob("*.safetensors"):  # and what safetensors itself reads
        for name, t in load_file(str(f)).items():
            assert _same(state[name], t), name


def _flip(path, at):
    data = bytearray(path.read_bytes())
    data[at] ^= 1
    path.write_bytes(bytes(data))


def _header_end(path):
    return 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]


def _tampers(d):
    """(what, edit of the model directory, the file it changes)."""
    one, two = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
    out = []
    for rel, marker in ((one, b'"big.'), (two, b'"t.')):
        p = d / rel
        out += [(f"last byte of {rel}", lambda p=p: _flip(p, p.stat().st_size - 1), rel),
                (f"first data byte of {rel}", lambda p=p: _flip(p, _header_end(p)), rel),
                (f"a tensor name in the header of {rel}",
                 lambda p=p, m=marker: _flip(p, p.read_bytes().index(m) + 2), rel),
                (f"{rel} truncated", lambda p=p: p.write_bytes(p.read_bytes()[:-1]), rel),
                (f"{rel} grown", lambda p=p: p.write_bytes(p.read_bytes() + b"\0"), rel)]
    out.append(("config.json", lambda: (d / "config.json").write_text('{"hidden": 34}'),
                "config.json"))
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("signed", KINDS, indirect=True)
def test_every_tamper_loads_nothing_and_names_the_file(signed, keys, device):
    kind, d, sig, _ = signed
    pub = keys["alice"][1]
    pristine = {p.name: p.read_bytes() for p in d.iterdir()}
    for what, edit, rel in _tampers(d):
        edit()
        with pytest.raises(VerificationError) as info:
            load_verified(str(d), sig, public_key=pub, device=device, block_size=SMALL_BLOCK)
        assert rel in str(info.value), what
        for name, data in pristine.items():
            (d / name).write_bytes(data)
    (d / "extra.safetensors").write_bytes(pristine["model-00001-of-00002.safetensors"])
    with pytest.raises(VerificationError) as info:
        load_verified(str(d), sig, public_key=pub, device=device)
    assert info.value.unexpected == ["extra.safetensors"]
    os.remove(d / "extra.safetensors")
    os.remove(d / "config.json")
    with pytest.raises(VerificationError) as info:
        load_verified(str(d), sig, public_key=pub, device=device)
    assert info.value.missing == ["config.json"]


@pytest.mark.parametrize("signed", ["sentry"], indirect=True)
def test_changed_tensor_is_named_with_its_file(signed, keys):
    _, d, sig, tensors = signed
    p = d / "model-00001-of-00002.safetensors"
    start = _header_end(p) + 3  # big.weight follows the 3-byte odd.bytes
    _flip(p, start + 1000)
    with pytest.raises(VerificationError) as info:
        load_verified(str(d), sig, public_key=keys["alice"][1], device="cpu")
    assert info.value.changed == ["big.weight"]
    assert "model-00001-of-00002.safetensors" in str(info.value)


@pytest.mark.parametrize("signed", ["reference shards"], indirect=True)
def test_shards_bundle_names_the_shard_and_verify_files_reads_it(signed, keys):
    _, d, sig, _ = signed
    pub = keys["alice"][1]
    assert verify_files(str(d), sig, public_key=pub).method == "shards"
    p = d / "model-00001-of-00002.safetensors"
    _flip(p, 25_000)
    for check in (lambda: verify_files(str(d), sig, public_key=pub),
                  lambda: load_verified(str(d), sig, public_key=pub, device="cpu")):
        with pytest.raises(VerificationError) as info:
            check()
        assert info.value.changed == ["model-00001-of-00002.safetensors:20000:30000"]


def _reference_verifies(model, signature, public_key):
    ms = pytest.importorskip("model_signing", reason="the reference model-signing package")
    try:
        ms.verifying.Config().use_elliptic_key_verifier(
            public_key=pathlib.Path(public_key)).verify(pathlib.Path(model), pathlib.Path(signature))
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("signed", KINDS, indirect=True)
def test_verify_files_and_load_verified_list_the_same_files(signed, keys):
    """One check of the files present against the signed ones serves verify_files and
    load_verified (sentry::check_model_files): the same missing and unexpected files, a name
    that is not UTF-8 given as os.fsdecode gives it; an empty file added is no extra file of a
    shards bundle (the reference cuts it into no shards), an extra file of a files bundle (the
    reference's verification agrees)."""
    kind, d, sig, _ = signed
    pub = keys["alice"][1]

    def refusals():
        out = []
        for check in (lambda: verify_files(str(d), sig, public_key=pub),
                      lambda: load_verified(str(d), sig, public_key=pub, device="cpu")):
            with pytest.raises(VerificationError) as info:
                check()
            out.append((info.value.missing, info.value.unexpected))
        assert out[0] == out[1]
        return out[0]

    odd = os.fsdecode(b"extra-\xff.bin")
    (d / odd).write_bytes(b"x")
    os.remove(d / "config.json")
    assert refusals() == (["config.json"], [odd])
    os.remove(d / odd)
    (d / "config.json").write_text('{"hidden": 33}')
    (d / "empty.txt").write_bytes(b"")
    if kind == "reference shards":
        # The reference signs no shard of an empty file. (Its verifier cannot check a shards
        # bundle: it reads shard_size back as a float.)
        resigned = str(d.parent / "resigned.sig")
        _sign(kind, d, resigned, keys["alice"][0])
        with open(resigned) as f:
            payload = base64.b64decode(json.load(f)["dsseEnvelope"]["payload"])
        assert b"model-00001-of-00002.safetensors" in payload and b"empty.txt" not in payload
        for signature in (sig, resigned):
            assert verify_files(str(d), signature, public_key=pub).method == "shards"
            assert load_verified(str(d), signature, public_key=pub, device="cpu")
    else:
        if kind == "reference files":
            assert not _reference_verifies(d, sig, pub)
        assert refusals() == ([], ["empty.txt"])


@pytest.mark.parametrize("signed", ["sentry"], indirect=True)
def test_wrong_key_reads_nothing(signed, keys):
    # A FIFO in the directory would be refused by the listing: the signature is checked first.
    _, d, sig, _ = signed
    os.mkfifo(d / "listed-only-after-the-signature")
    with pytest.raises(VerificationError, match="does not verify"):
        load_verified(str(d), sig, public_key=keys["mallory"][1],
                      device="cpu")


AFTER_PARSE = {
    "header rewritten": lambda p, h: _flip(p, h.data_start - 3),  # same size
    "truncated": lambda p, h: p.write_bytes(p.read_bytes()[:-1]),
    "grown": lambda p, h: p.write_bytes(p.read_bytes() + b"x"),
}


@pytest.mark.parametrize("edit", AFTER_PARSE)
@pytest.mark.parametrize("signed", ["sentry"], indirect=True)
def test_file_changed_after_its_header_was_parsed_is_caught(signed, edit):
    """The header the tensor layout comes from must be the one whose bytes are read: the C++
    loader (under sentry::load_verified) is given the header's bytes and the file's size as
    parsed, and refuses a file that no longer starts with them or has another size."""
    import hashlib

    from sentry import loader, safetensors_format

    _, d, sig, _ = signed
    path = next(p for p in sorted(d.iterdir()) if p.suffix == ".safetensors")
    header = safetensors_format.read_header(str(path))
    digest = hashlib.sha256(path.read_bytes()).digest()
    tensors = [(e.name, e.dtype, list(e.shape), e.offset, e.length, None) for e in header.entries]
    table = [(str(path), path.name, header.prefix, header.file_size,
              [(0, header.file_size, "sha256", digest)], tensors)]
    assert loader.run_table(table, model_path=str(d), signature_path=sig, device="cpu")
    AFTER_PARSE[edit](path, header)
    with pytest.raises(FormatError, match="changed while it was read"):
        loader.run_table(table, model_path=str(d), signature_path=sig, device="cpu")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("signed", ["sentry"], indirect=True)
def test_dtype_converts_floats_after_verification(signed, keys, device):
    _, d, sig, tensors = signed
    state = load_verified(str(d), sig, public_key=keys["alice"][1], device=device,
                          dtype=torch.bfloat16)
    assert state["big.weight"].dtype == torch.bfloat16
    # Converted where it was loaded: CUDA and the CPU round NaNs and subnormals differently.
    assert _same(state["big.weight"], tensors["big.weight"].to(device).to(torch.bfloat16))
    assert state["steps"].dtype == torch.int64 and state["mask"].dtype == torch.bool


def test_single_file_model(tmp_path, keys):
    from safetensors.torch import save_file

    f = tmp_path / "one.safetensors"
    tensors = {"a": torch.randn(100, 7), "b": torch.arange(5)}
    save_file(tensors, str(f))
    sig = str(tmp_path / "one.sig")
    sign_files(str(f), keys["alice"][0], sig)
    state = load_verified(str(f), sig, public_key=keys["alice"][1], device="cpu")
    assert all(_same(state[k], v) for k, v in tensors.items())


def test_tensors_bundle_and_bad_device_are_refused(tmp_path, keys):
    sig = str(tmp_path / "t.sig")
    sign_model({"a": torch.zeros(2)}, keys["alice"][0], sig)
    with pytest.raises(VerificationError, match="verify_model"):
        load_verified(str(tmp_path), sig, public_key=keys["alice"][1], device="cpu")
    with pytest.raises(FormatError, match="'cpu' or 'cuda'"):
        load_verified(str(tmp_path), sig, public_key=keys["alice"][1], device="meta")


@pytest.mark.parametrize("signed", ["sentry"], indirect=True)
def test_bad_device_is_refused_in_one_line(signed, keys):
    """sentry::load_verified's device check (the only one): a device it cannot load to is a
    FormatError naming it; a name that is no device is torch's one-line RuntimeError."""
    _, d, sig, _ = signed
    pub = keys["alice"][1]
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    no_gpu = (f"device cuda:99: there are only {gpus} GPUs" if gpus
              else "device cuda:99: this torch has no CUDA GPU; use device='cpu'")
    for device, message in (("meta", "device meta: load_verified loads to 'cpu' or 'cuda'"),
                            ("cuda:99", no_gpu)):
        with pytest.raises(FormatError) as info:
            load_verified(str(d), sig, public_key=pub, device=device)
        assert str(info.value) == message
    with pytest.raises(RuntimeError, match="device string: garbage$") as info:
        load_verified(str(d), sig, public_key=pub, device="garbage")
    assert "\n" not in str(info.value)


def test_table_leaving_bytes_unchecked_is_refused(tmp_path):
    """The C++ loader refuses, before reading, a table that would return unchecked bytes."""
    from sentry_ops import _C

    f = tmp_path / "x.bin"
    f.write_bytes(bytes(64))
    tensor = ("x", "F32", [8], 32, 32, None)
    with pytest.raises(ValueError, match="neither it nor its file"):  # no digest anywhere
        _C.loader.load_files([(str(f), "x.bin", bytes(32), 64, [], [tensor])], "cpu")
    digest = bytes(32)
    with pytest.raises(ValueError, match="unchecked"):  # bytes 16..32 covered by nothing
        _C.loader.load_files([(str(f), "x.bin", bytes(16), 64, [],
                               [("x", "F32", [8], 32, 32, digest)])], "cpu")
    with pytest.raises(ValueError, match="do not hold"):  # a length that lies about the shape
        _C.loader.load_files([(str(f), "x.bin", bytes(32), 64, [],
                               [("x", "F32", [9], 32, 32, digest)])], "cpu")


# ---- keyless: the same trust decision as verify_files ----------------------------------------

KEYLESS = pathlib.Path(__file__).parent / "vectors" / "oms" / "v1.1.0-sigstore"


def test_keyless_keywords_reach_the_trust_decision(tmp_path):
    pytest.importorskip("sigstore", reason="sigstore-python (scripts/setup.sh installs it)")
    model = tmp_path / "model"
    shutil.copytree(KEYLESS, model)
    kw = dict(identity="stefanb@us.ibm.com", identity_provider="https://sigstore.verify.ibm.com/oauth2",
              trust_config=KEYLESS.parent / "custom_trust_config.json", ignore_paths=["ignore-me"],
              device="cpu")
    sig = str(model / "model.sig")
    # Verified (signature and files), but the reference's fixture holds no safetensors files.
    with pytest.raises(FormatError, match="no safetensors tensors"):
        load_verified(str(model), sig, **kw)
    with pytest.raises(VerificationError):
        load_verified(str(model), sig, **dict(kw, identity="someone@example.com"))
    (model / "signme-1").write_bytes(b"changed")
    with pytest.raises(VerificationError) as info:
        load_verified(str(model), sig, **kw)
    assert info.value.changed == ["signme-1"]


# ---- CUDA: no wait for the caller's stream, memory released on failure ------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("signed", ["sentry", "reference files"], indirect=True)
def test_cuda_load_never_waits_for_the_callers_stream(signed, keys):
    """Copies and hashes run on side streams; the only host wait is for the digests. A load
    issued behind seconds of work on the current stream returns while that work still runs."""
    _, d, sig, tensors = signed
    pub = keys["alice"][1]
    load_verified(str(d), sig, public_key=pub, device="cuda")  # warm up: pinned memory, streams
    torch.cuda.synchronize()
    torch.cuda._sleep(4_000_000_000)  # about 2 s of GPU clock cycles on the current stream
    state = load_verified(str(d), sig, public_key=pub, device="cuda", block_size=SMALL_BLOCK)
    assert not torch.cuda.current_stream().query(), "the load waited for the caller's stream"
    torch.cuda.synchronize()
    assert all(_same(state[k], v) for k, v in tensors.items())


@pytest.mark.cuda
@pytest.mark.parametrize("signed", KINDS, indirect=True)
def test_cuda_memory_is_released_after_a_failed_load(signed, keys):
    _, d, sig, _ = signed
    pub = keys["alice"][1]
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    p = d / "model-00002-of-00002.safetensors"
    _flip(p, p.stat().st_size - 1)
    with pytest.raises(VerificationError):
        load_verified(str(d), sig, public_key=pub, device="cuda", block_size=SMALL_BLOCK)
    assert torch.cuda.memory_allocated() == before


# ---- where users load models: transformers ---------------------------------------------------


def _signed_gpt2(tmp_path, private_key, transformers):
    """A small GPT-2 built from a config (no download), saved as transformers saves it and
    signed: (model, directory, signature)."""
    from safetensors.torch import save_file

    config = transformers.GPT2Config(n_embd=64, n_layer=2, n_head=2, vocab_size=300,
                                     n_positions=32)
    torch.manual_seed(0)
    source = transformers.GPT2LMHeadModel(config).eval()
    d = tmp_path / "gpt2"
    d.mkdir()
    # lm_head.weight is tied to transformer.wte.weight: saved once, as save_pretrained does.
    state = {k: v.contiguous() for k, v in source.state_dict().items() if k != "lm_head.weight"}
    save_file(state, str(d / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(str(d))
    sig = str(tmp_path / "gpt2.sig")
    sign_files(str(d), private_key, sig)
    return source, d, sig


@pytest.mark.parametrize("device", DEVICES)
def test_transformers_model_loads_verified_state(tmp_path, keys, device):
    transformers = pytest.importorskip("transformers")
    source, d, sig = _signed_gpt2(tmp_path, keys["alice"][0], transformers)
    loaded = load_verified(str(d), sig, public_key=keys["alice"][1], device=device)
    with torch.device(device):
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config.from_pretrained(str(d)))
    model.load_state_dict(loaded, assign=True, strict=False)
    model.tie_weights()
    model.eval()
    ids = torch.randint(0, 300, (2, 16), device=device)
    with torch.no_grad():
        want = source.to(device)(ids).logits
        got = model(ids).logits
    assert torch.equal(got, want)


@pytest.mark.parametrize("device", DEVICES)
def test_transformers_from_pretrained_takes_the_verified_state(tmp_path, keys, device):
    """docs/LOADING.md: from_pretrained(None, config=..., state_dict=...) builds the model from
    the verified tensors, reading no weights file itself."""
    transformers = pytest.importorskip("transformers")
    source, d, sig = _signed_gpt2(tmp_path, keys["alice"][0], transformers)
    loaded = load_verified(str(d), sig, public_key=keys["alice"][1], device=device)
    config = transformers.AutoConfig.from_pretrained(str(d))
    model = transformers.GPT2LMHeadModel.from_pretrained(None, config=config, state_dict=loaded)
    model.to(device).eval()
    ids = torch.randint(0, 300, (2, 16), device=device)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, source.to(device)(ids).logits)


def test_files_holding_the_same_names_are_loaded_one_at_a_time(tmp_path, keys):
    from safetensors.torch import save_file

    d = tmp_path / "ckpts"
    for k in (1, 2):
        (d / f"ckpt-{k}").mkdir(parents=True)
        save_file({"w": torch.full((3, 3), float(k))}, str(d / f"ckpt-{k}" / "model.safetensors"))
    sig = str(tmp_path / "ckpts.sig")
    sign_files(str(d), keys["alice"][0], sig)
    pub = keys["alice"][1]
    with pytest.raises(FormatError, match=r"'w' \(ckpt-1/model.safetensors and ckpt-2.*file="):
        load_verified(str(d), sig, public_key=pub, device="cpu")
    for k in (1, 2):
        state = load_verified(str(d), sig, public_key=pub, device="cpu",
                              file=f"ckpt-{k}/model.safetensors")
        assert torch.equal(state["w"], torch.full((3, 3), float(k)))
    second = d / "ckpt-2" / "model.safetensors"
    _flip(second, second.stat().st_size - 1)
    load_verified(str(d), sig, public_key=pub, device="cpu", file=["ckpt-1/model.safetensors"])
    with pytest.raises(VerificationError, match="ckpt-2/model.safetensors"):
        load_verified(str(d), sig, public_key=pub, device="cpu", file="ckpt-2/model.safetensors")
    with pytest.raises(FormatError, match="signs no file"):
        load_verified(str(d), sig, public_key=pub, device="cpu", file="ckpt-3/model.safetensors")


def test_a_safetensors_name_on_another_file_is_checked_and_skipped(tmp_path, keys):
    """As sign_files signs it: a plain file (a SentryWarning), its bytes still checked."""
    from safetensors.torch import save_file

    from sentry.errors import SentryWarning

    d = tmp_path / "model"
    d.mkdir()
    save_file({"a": torch.arange(4)}, str(d / "model.safetensors"))
    (d / "notes.safetensors").write_bytes(b"not a safetensors file")
    sig = str(tmp_path / "model.sig")
    with pytest.warns(SentryWarning):
        sign_files(str(d), keys["alice"][0], sig)
    with pytest.warns(SentryWarning, match="notes.safetensors.*not loaded"):
        state = load_verified(str(d), sig, public_key=keys["alice"][1], device="cpu")
    assert list(state) == ["a"]
    (d / "notes.safetensors").write_bytes(b"not a safetensors filE")
    with pytest.raises(VerificationError, match="notes.safetensors"):
        load_verified(str(d), sig, public_key=keys["alice"][1], device="cpu")


def test_tensor_without_a_torch_dtype_names_file_and_tensor(tmp_path, keys):
    # F4 (4-bit floats) is a safetensors dtype with no torch dtype of one element: the C++
    # loader's ValueError named neither the file nor the tensor.
    d = tmp_path / "model"
    d.mkdir()
    text = json.dumps({"packed.fp4": {"dtype": "F4", "shape": [64], "data_offsets": [0, 32]}})
    text = text.encode() + b" " * (-len(text) % 8)
    (d / "model.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + bytes(range(32)))
    sig = str(tmp_path / "model.sig")
    sign_files(str(d), keys["alice"][0], sig)
    verify_files(str(d), sig, public_key=keys["alice"][1])  # the bytes are the signed ones
    with pytest.raises(FormatError, match=r"model\.safetensors: tensor 'packed\.fp4': .*F4"):
        load_verified(str(d), sig, public_key=keys["alice"][1], device="cpu")
