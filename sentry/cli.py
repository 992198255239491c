"""The `sentry` command line: keygen, sign, verify, hash, demo, bench.

Exit codes: 0 success, 1 a check failed, 2 usage or input error.
"""
import argparse
import os
import sys

import numpy as np
import torch

from sentry_ops import ALGORITHMS, hash_tensors

from . import digests_hex
from .errors import FormatError, VerificationError


class InputError(Exception):
    """Bad input from the user: reported in one line, exit code 2."""


def _file_tensor(path):
    """The file's bytes as a uint8 CPU tensor, memory-mapped (copy-on-write: never written)."""
    size = os.path.getsize(path)
    if size == 0:
        return torch.empty(0, dtype=torch.uint8)
    return torch.from_numpy(np.memmap(path, dtype=np.uint8, mode="c"))


def _load_pt(path):
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors come in many types
        raise FormatError(f"{path}: refused: not loadable with weights_only=True, which never "
                          f"runs code from the file ({type(exc).__name__})") from exc
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise FormatError(f"{path}: expected a state dict (a dict of tensors)")
    return obj


def cmd_hash(args):
    for path in args.paths:
        if not os.path.isfile(path):
            raise InputError(f"{path}: no such file")
        if args.tensors and path.endswith(".safetensors"):
            from .safetensors_format import read_header

            header = read_header(path)
            data = _file_tensor(path)
            views = [data[e.offset:e.offset + e.length] for e in header.entries]
            for e, h in zip(header.entries, digests_hex(hash_tensors(views, args.algorithm))):
                print(f"{h}  {path}:{e.name}")
        elif args.tensors:
            if not path.endswith((".pt", ".pth", ".bin")):
                raise InputError(f"{path}: --tensors reads .safetensors and .pt/.pth/.bin files")
            state = _load_pt(path)
            device = torch.device(args.device)
            tensors = [t.to(device) for t in state.values()]
            for name, h in zip(state, digests_hex(hash_tensors(tensors, args.algorithm))):
                print(f"{h}  {path}:{name}")
        else:
            digest = hash_tensors([_file_tensor(path)], args.algorithm)
            print(f"{digests_hex(digest)[0]}  {path}")
    return 0


def _password(args):
    if not args.password_env:
        return None
    if args.password_env not in os.environ:
        raise InputError(f"environment variable {args.password_env} (the key password) is not set")
    return os.environ[args.password_env]


def cmd_keygen(args):
    from .crypto import PrivateKey, write_private_key, write_public_key

    key = PrivateKey.generate(args.curve)
    write_private_key(args.private_key, key, _password(args))
    write_public_key(args.public_key, key.public_key())
    print(f"wrote {args.curve} private key {args.private_key} and public key {args.public_key}")
    return 0


def _model_kind(path):
    if os.path.isdir(path):
        return "dir"
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file or directory")
    if path.endswith(".safetensors"):
        return "safetensors"
    if path.endswith((".pt", ".pth", ".bin")):
        return "pt"
    raise InputError(f"{path}: sign a model directory, a .safetensors file or a .pt state dict")


def cmd_sign(args):
    from .signing import sign_files, sign_model

    kind = _model_kind(args.model)
    if args.certificate_chain and not args.signing_certificate:
        raise InputError("--certificate-chain (intermediates) needs --signing-certificate")
    chain = ([args.signing_certificate] + args.certificate_chain
             if args.signing_certificate else None)
    common = dict(password=_password(args), certificate_chain=chain)
    if kind == "pt":
        sign_model(_load_pt(args.model), args.private_key, args.signature,
                   algorithm=args.algorithm, model_name=os.path.basename(args.model), **common)
    else:
        sign_files(args.model, args.private_key, args.signature, hash_type=args.hash_type,
                   ignore_paths=args.ignore_paths, tensor_algorithm=args.algorithm,
                   allow_symlinks=args.allow_symlinks, **common)
    print(f"signed {args.model} -> {args.signature}")
    return 0


def cmd_verify(args):
    from .signing import verify_files, verify_model

    keys = dict(public_key=args.public_key, certificate_chain=args.certificate_chain)
    if (args.public_key is None) == (args.certificate_chain is None):
        raise InputError("give --public-key or --certificate-chain")
    kind = _model_kind(args.model)
    if kind == "pt":
        result = verify_model(_load_pt(args.model), args.signature, **keys)
    else:
        result = verify_files(args.model, args.signature, ignore_paths=args.ignore_paths, **keys)
    print(f"verified: {args.model} matches {args.signature} "
          f"({len(result.names)} {'files' if result.method == 'files' else 'tensors'}, "
          f"{result.hash_type}, key {result.key_hint[:16]}...)")
    return 0


def cmd_demo(args):
    from .demo import run

    return run(args.model, args.device)


def cmd_bench(args):
    from .bench import main as bench_main

    return bench_main(args.rest)


def parser():
    p = argparse.ArgumentParser(prog="sentry", description="Integrity for ML artifacts.")
    sub = p.add_subparsers(dest="command", required=True)
    k = sub.add_parser("keygen", help="make an EC key pair (PEM)")
    k.add_argument("--private-key", required=True)
    k.add_argument("--public-key", required=True)
    k.add_argument("--curve", default="P-256", choices=["P-256", "P-384", "P-521"])
    k.add_argument("--password-env", help="encrypt the private key with this variable's value")
    k.set_defaults(func=cmd_keygen)
    s = sub.add_parser("sign", help="sign a model directory, .safetensors or .pt file")
    s.add_argument("model")
    s.add_argument("--private-key", required=True)
    s.add_argument("--signature", required=True, help="bundle to write (atomically)")
    s.add_argument("--password-env", help="variable holding the private key's password")
    s.add_argument("--signing-certificate", help="PEM certificate of the private key: the bundle "
                   "then carries the certificate chain instead of a key hint")
    s.add_argument("--certificate-chain", nargs="*", default=[],
                   help="PEM files of intermediate certificates (not the root)")
    s.add_argument("--hash-type", default="sha256", choices=["sha256", "blake3"],
                   help="file digests (OpenSSF Model Signing files method)")
    s.add_argument("-a", "--algorithm", default="blake3", choices=ALGORITHMS,
                   help="tensor digests")
    s.add_argument("--ignore-paths", nargs="*", default=[])
    s.add_argument("--allow-symlinks", action="store_true")
    s.set_defaults(func=cmd_sign)
    v = sub.add_parser("verify", help="verify a model directory, .safetensors or .pt file")
    v.add_argument("model")
    v.add_argument("--signature", required=True)
    v.add_argument("--public-key")
    v.add_argument("--certificate-chain", help="PEM file of the trusted root certificates "
                   "(for bundles signed with a certificate)")
    v.add_argument("--ignore-paths", nargs="*", default=[])
    v.set_defaults(func=cmd_verify)
    h = sub.add_parser("hash", help="digest files (like b3sum), or each tensor of a "
                       ".safetensors/.pt file (--tensors)")
    h.add_argument("paths", nargs="+")
    h.add_argument("-a", "--algorithm", default="blake3", choices=ALGORITHMS)
    h.add_argument("--tensors", action="store_true", help="one digest per tensor")
    h.add_argument("--device", default="cpu", help="where to hash tensors (cpu, cuda)")
    h.set_defaults(func=cmd_hash)
    d = sub.add_parser("demo", help="hash a model-shaped state dict and catch a tampered weight")
    d.add_argument("--model", default="resnet152")
    d.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    d.set_defaults(func=cmd_demo)
    b = sub.add_parser("bench", help="hashing benchmark (sentry bench -- --help)", add_help=False)
    b.add_argument("rest", nargs=argparse.REMAINDER)
    b.set_defaults(func=cmd_bench)
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except VerificationError as exc:
        print(f"sentry {args.command}: FAILED: {exc}", file=sys.stderr)
        return 1
    except (InputError, FormatError, OSError) as exc:
        print(f"sentry {args.command}: {exc}", file=sys.stderr)
        return 2
    except (ValueError, RuntimeError) as exc:
        print(f"sentry {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
