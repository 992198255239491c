"""Independent material for the ECDSA tests: the Wycheproof cases, and keys and signatures made
with the `cryptography` package (OpenSSL underneath). Nothing here touches sentry_ops."""
import hashlib
import json
import random

import torch
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

import reference

P = 2**256 - 2**224 + 2**192 + 2**96 - 1
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

WYCHEPROOF = {"der": "wycheproof_ecdsa_secp256r1_sha256_test.json",
              "p1363": "wycheproof_ecdsa_secp256r1_sha256_p1363_test.json"}


def wycheproof_cases(form):
    """Every test of the file, flattened: tc_id, key (x || y), msg, digest, sig, result,
    comment."""
    with open(reference.vector_file(WYCHEPROOF[form])) as f:
        doc = json.load(f)
    cases = []
    for group in doc["testGroups"]:
        point = bytes.fromhex(group["publicKey"]["uncompressed"])
        assert point[0] == 4 and len(point) == 65
        for t in group["tests"]:
            msg = bytes.fromhex(t["msg"])
            cases.append({"tc_id": t["tcId"], "key": point[1:], "msg": msg,
                          "digest": hashlib.sha256(msg).digest(), "sig": bytes.fromhex(t["sig"]),
                          "result": t["result"], "comment": t["comment"]})
    assert len(cases) == doc["numberOfTests"]
    return cases


def raw_key(public_key):
    n = public_key.public_numbers()
    return n.x.to_bytes(32, "big") + n.y.to_bytes(32, "big")


def signed_pairs(count, seed=0):
    """`count` random (key, message) pairs signed with OpenSSL: lists of x || y, SHA-256
    digest, r || s, DER signature, and the private keys."""
    rng = random.Random(seed)
    keys, digests, raw, der, private = [], [], [], [], []
    for _ in range(count):
        sk = ec.derive_private_key(rng.randrange(1, N), ec.SECP256R1())
        digest = rng.randbytes(32)
        sig = sk.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        r, s = utils.decode_dss_signature(sig)
        keys.append(raw_key(sk.public_key()))
        digests.append(digest)
        raw.append(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
        der.append(sig)
        private.append(sk)
    return keys, digests, raw, der, private


def rows(items, device="cpu"):
    """uint8 [len(items), width] of equal-length byte strings."""
    width = len(items[0])
    return torch.frombuffer(bytearray(b"".join(items)), dtype=torch.uint8).view(
        len(items), width).to(device)


def flip_one_bit(t, start, end, seed=0):
    """A copy of uint8 [N, W] with one random bit flipped in bytes [start, end) of every row."""
    g = torch.Generator().manual_seed(seed)
    n = t.shape[0]
    byte = torch.randint(start, end, (n,), generator=g)
    bit = torch.randint(0, 8, (n,), generator=g)
    out = t.cpu().clone()
    out[torch.arange(n), byte] ^= (1 << bit).to(torch.uint8)
    return out.to(t.device)


def each_part_flipped(keys, digests, sigs):
    """(part, keys, digests, sigs) for part r, s, digest and key: the rows with one random bit
    flipped in that part of every row, the other tensors as given."""
    for seed, (part, start, end) in enumerate((("r", 0, 32), ("s", 32, 64), ("digest", 0, 32),
                                               ("key", 0, 64))):
        k, d, s = keys, digests, sigs
        if part in ("r", "s"):
            s = flip_one_bit(sigs, start, end, seed)
        elif part == "digest":
            d = flip_one_bit(digests, start, end, seed)
        else:
            k = flip_one_bit(keys, start, end, seed)
        yield part, k, d, s


def public_pem(private_key):
    return private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
