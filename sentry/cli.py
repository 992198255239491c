"""The `sentry` command line: keygen, sign, verify, hash, demo, bench, agent (dataset, train,
infer).

Exit codes: 0 success, 1 a check failed, 2 usage or input error.
"""
import argparse
import os
import sys

import torch

from sentry_ops import ALGORITHMS, digests_hex, hash_tensors

from .errors import FormatError, VerificationError
from .model_files import file_bytes, load_state_dict


class InputError(Exception):
    """Bad input from the user: reported in one line, exit code 2."""


def _device(name, option="--device"):
    """A torch.device the user named, checked: an unknown name or CUDA on a torch without it
    (or with no GPU) is one line and exit 2, not torch's multi-line error."""
    if name is None:
        return None
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise InputError(f"{option} {name}: not a device (cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        why = ("this torch is built without CUDA" if torch.version.cuda is None
               else "no CUDA GPU is visible")
        raise InputError(f"{option} {name}: {why}")
    if device.type not in ("cpu", "cuda"):
        raise InputError(f"{option} {name}: Sentry runs on cpu or cuda")
    return device


def cmd_hash(args):
    _device(args.device)
    for path in args.paths:
        _regular_file(path)
        if args.tensors and path.endswith(".safetensors"):
            from .safetensors_format import read_header

            header = read_header(path)
            data = file_bytes(path)
            views = [data[e.offset:e.offset + e.length] for e in header.entries]
            for e, h in zip(header.entries, digests_hex(hash_tensors(views, args.algorithm))):
                print(f"{h}  {path}:{e.name}")
        elif args.tensors:
            if not path.endswith((".pt", ".pth", ".bin")):
                raise InputError(f"{path}: --tensors reads .safetensors and .pt/.pth/.bin files")
            state = load_state_dict(path)
            device = _device(args.device)
            tensors = [t.to(device) for t in state.values()]
            for name, h in zip(state, digests_hex(hash_tensors(tensors, args.algorithm))):
                print(f"{h}  {path}:{name}")
        else:
            digest = hash_tensors([file_bytes(path)], args.algorithm)
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

    if os.path.abspath(args.private_key) == os.path.abspath(args.public_key):
        raise InputError("--private-key and --public-key are the same file")
    if not args.force:
        for option, path in (("--private-key", args.private_key),
                             ("--public-key", args.public_key)):
            if os.path.lexists(path):
                raise InputError(f"{option} {path}: exists; keygen replaces a key only with "
                                 "--force")
    key = PrivateKey.generate(args.curve)
    write_private_key(args.private_key, key, _password(args))
    write_public_key(args.public_key, key.public_key())
    print(f"wrote {args.curve} private key {args.private_key} and public key {args.public_key}")
    return 0


def _regular_file(path):
    """Refuses early, in one line, what is not a regular file (the readers check again on the
    descriptor they open)."""
    import stat

    from .fileio import _kind

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise InputError(f"{path}: no such file or directory") from None
    if not stat.S_ISREG(mode):
        raise InputError(f"{path}: is {_kind(mode)}, not a regular file")


def _model_kind(path):
    if os.path.isdir(path):
        return "dir"
    _regular_file(path)
    if path.endswith(".safetensors"):
        return "safetensors"
    if path.endswith((".pt", ".pth", ".bin")):
        return "pt"
    raise InputError(f"{path}: sign a model directory, a .safetensors file or a .pt state dict")


def cmd_sign(args):
    from .signing import sign_files, sign_model

    from .bundle import check_signature_target

    kind = _model_kind(args.model)
    check_signature_target(args.signature)  # before loading or hashing anything
    if args.certificate_chain and not args.signing_certificate:
        raise InputError("--certificate-chain (intermediates) needs --signing-certificate")
    chain = ([args.signing_certificate] + args.certificate_chain
             if args.signing_certificate else None)
    common = dict(password=_password(args), certificate_chain=chain)
    if kind == "pt":
        sign_model(load_state_dict(args.model), args.private_key, args.signature,
                   algorithm=args.algorithm, model_name=os.path.basename(args.model), **common)
    else:
        sign_files(args.model, args.private_key, args.signature, hash_type=args.hash_type,
                   ignore_paths=args.ignore_paths, tensor_algorithm=args.algorithm,
                   allow_symlinks=args.allow_symlinks, **common)
    print(f"signed {args.model} -> {args.signature}")
    return 0


def _signed_method(signature):
    """The serialization method a bundle's statement names (files or tensors), read before its
    signature is checked only to choose how to verify; the verification checks everything."""
    from . import bundle as bundle_format

    signed = bundle_format.read_bundle(signature)
    try:
        return bundle_format.parse_statement(signed.payload, signature).method
    except FormatError:  # e.g. a v0.2 statement: verify_files reads those, or says what is wrong
        return "files"


def _verify_method(args):
    """The verify keywords of the one method the arguments give (CLI spelling in errors)."""
    keyless = args.identity is not None or args.identity_provider is not None
    given = [flag for flag, on in (("--public-key", args.public_key is not None),
                                   ("--certificate-chain", args.certificate_chain is not None),
                                   ("--identity", keyless)) if on]
    if not given:
        raise InputError("give --public-key, --certificate-chain, or --identity and "
                         "--identity-provider (Sigstore keyless)")
    if len(given) > 1:
        raise InputError(f"give {' or '.join(given)}, not "
                         f"{'both' if len(given) == 2 else 'several'}")
    trust_files = args.trust_config is not None or args.trusted_root is not None
    if not keyless:
        if trust_files:
            raise InputError("--trust-config and --trusted-root are for keyless verification "
                             "(--identity, --identity-provider)")
        return dict(public_key=args.public_key, certificate_chain=args.certificate_chain)
    if args.identity is None or args.identity_provider is None:
        raise InputError("keyless verification needs both --identity and --identity-provider")
    if not trust_files:
        raise InputError("keyless verification needs --trusted-root FILE (a Sigstore "
                         "trusted_root.json) or --trust-config FILE (a client trust config): "
                         "Sentry verifies offline and fetches nothing")
    if args.trust_config is not None and args.trusted_root is not None:
        raise InputError("give --trust-config or --trusted-root, not both")
    return dict(identity=args.identity, identity_provider=args.identity_provider,
                trust_config=args.trust_config, trusted_root=args.trusted_root)


def cmd_verify(args):
    from .signing import verify_files, verify_model

    keys = _verify_method(args)
    kind = _model_kind(args.model)
    # A .pt signed as a file (what the reference tool writes) is checked as a file; one signed
    # as tensors (sentry sign of a .pt) is loaded and its tensors checked.
    if kind == "pt" and _signed_method(args.signature) == "tensors":
        result = verify_model(load_state_dict(args.model), args.signature, **keys)
    else:
        result = verify_files(args.model, args.signature, ignore_paths=args.ignore_paths, **keys)
    signer = (f"signed by {result.identity} ({result.identity_provider})" if result.identity
              else f"key {result.key_hint[:16]}...")
    print(f"verified: {args.model} matches {args.signature} "
          f"({len(result.names)} {'tensors' if result.method == 'tensors' else 'files'}, "
          f"{result.hash_type}, {signer})")
    return 0


def cmd_demo(args):
    from .demo import run

    _device(args.device)
    return run(args.model, args.device, hash_only=args.hash_only, samples=args.samples,
               epochs=args.epochs, sources=args.sources, batch_size=args.batch_size,
               width=args.width, seed=args.seed, workdir=args.workdir)


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def cmd_agent(args):
    from . import agents

    _device(args.device)
    if args.agent == "dataset":
        s = agents.dataset_agent(args.out, keys_dir=args.keys, source_dir=args.source_dir,
                                 num_samples=args.samples, num_sources=args.sources,
                                 num_classes=args.classes, seed=args.seed,
                                 algorithm=args.algorithm, device=args.device or "cpu")
        print(f"dataset: {s['samples']} samples, {len(s['sources'])} sources, dataset digest "
              f"{s['dataset_digest']} -> {args.out}")
    elif args.agent == "train":
        s = agents.train_agent(args.data, args.model, keys_dir=args.keys, device=args.device,
                               epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                               seed=args.seed, width=args.width, num_workers=args.workers)
        print(f"train: loss {s['loss']:.4f}, train accuracy {s['train_accuracy']:.4f}, model "
              f"digest {s['model_digest']} -> {args.model}")
    else:
        s = agents.infer_agent(args.data, args.model, keys_dir=args.keys, device=args.device,
                               batch_size=args.batch_size, num_workers=args.workers)
        print(f"infer: test accuracy {s['accuracy']:.4f} on {s['samples']} samples (model "
              f"{s['model_digest'][:16]}..., dataset {s['dataset_digest'][:16]}...)")
    return 0


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
    k.add_argument("--force", action="store_true",
                   help="replace existing key files (refused without it)")
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
    v.add_argument("--identity", help="Sigstore keyless: the signer's identity (e-mail or URI "
                   "in the certificate's SAN) that must have signed")
    v.add_argument("--identity-provider", help="Sigstore keyless: the OIDC issuer URL that must "
                   "have vouched for --identity")
    v.add_argument("--trust-config", help="Sigstore keyless: a client trust config JSON (as "
                   "model_signing's --trust_config); verification is offline")
    v.add_argument("--trusted-root", help="Sigstore keyless: a trusted_root.json (instead of "
                   "--trust-config)")
    v.add_argument("--ignore-paths", nargs="*", default=[])
    v.set_defaults(func=cmd_verify)
    h = sub.add_parser("hash", help="digest files (like b3sum), or each tensor of a "
                       ".safetensors/.pt file (--tensors)")
    h.add_argument("paths", nargs="+")
    h.add_argument("-a", "--algorithm", default="blake3", choices=ALGORITHMS)
    h.add_argument("--tensors", action="store_true", help="one digest per tensor")
    h.add_argument("--device", default="cpu", help="where to hash tensors (cpu, cuda)")
    h.set_defaults(func=cmd_hash)
    d = sub.add_parser("demo", help="dataset -> train -> infer on synthetic data, then catch a "
                       "tampered sample, label and weight (--hash-only: hash a model-shaped "
                       "state dict and catch a tampered weight)")
    d.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    d.add_argument("--hash-only", action="store_true",
                   help="only the model-hashing demo (CPU/GPU cross-check, tampered weight)")
    d.add_argument("--model", default="resnet152", help="model shape for --hash-only")
    d.add_argument("--samples", type=_positive, default=10000)
    d.add_argument("--epochs", type=_positive, default=2)
    d.add_argument("--sources", type=_positive, default=4)
    d.add_argument("--batch-size", type=_positive, default=256)
    d.add_argument("--width", type=_positive, default=32, help="CNN width (first conv channels)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--workdir", help="keep keys, data and model here (default: a temporary "
                   "directory, removed at the end)")
    d.set_defaults(func=cmd_demo)
    a = sub.add_parser("agent", help="the pipeline's agents: dataset, train, infer")
    asub = a.add_subparsers(dest="agent", required=True)
    ad = asub.add_parser("dataset", help="write a packed store and its manifest signed per source")
    ad.add_argument("--out", required=True, help="data directory to write")
    ad.add_argument("--keys", required=True, help="keys directory (source keys made if absent)")
    ad.add_argument("--source-dir", help="a sample store (folder of .npy samples or packed) to "
                    "read instead of the embedded synthetic generator")
    ad.add_argument("--samples", type=_positive, default=10000, help="synthetic samples")
    ad.add_argument("--sources", type=_positive, default=4, help="synthetic sources")
    ad.add_argument("--classes", type=_positive, default=10, help="synthetic classes")
    ad.add_argument("--seed", type=int, default=0)
    ad.add_argument("-a", "--algorithm", default="blake3", choices=ALGORITHMS)
    ad.add_argument("--device", default=None, help="where to hash (default cpu)")
    at = asub.add_parser("train", help="verify the data on the fly, train, sign model and "
                         "provenance")
    at.add_argument("--data", required=True)
    at.add_argument("--model", "--out", dest="model", required=True,
                    help="model directory to write")
    at.add_argument("--keys", required=True, help="keys directory (trainer key made if absent)")
    at.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    at.add_argument("--epochs", type=_positive, default=2)
    at.add_argument("--batch-size", type=_positive, default=256)
    at.add_argument("--lr", type=float, default=0.05)
    at.add_argument("--width", type=_positive, default=32)
    at.add_argument("--seed", type=int, default=0)
    at.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    ai = asub.add_parser("infer", help="verify model and provenance, then infer on the test "
                         "split with on-the-fly data verification")
    ai.add_argument("--data", required=True)
    ai.add_argument("--model", required=True)
    ai.add_argument("--keys", required=True)
    ai.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    ai.add_argument("--batch-size", type=_positive, default=512)
    ai.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    a.set_defaults(func=cmd_agent)
    b = sub.add_parser("bench", help="hashing benchmark (sentry bench -- --help)", add_help=False)
    b.add_argument("rest", nargs=argparse.REMAINDER)
    b.set_defaults(func=cmd_bench)
    return p


def _os_error(exc):
    """An OSError as "path: what" (no "[Errno N]")."""
    what = (exc.strerror or str(exc)).lower()
    return f"{exc.filename}: {what}" if exc.filename else what


def _one_line(text):
    return " ".join(str(text).split())


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except VerificationError as exc:
        print(f"sentry {args.command}: FAILED: {_one_line(exc)}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"sentry {args.command}: {_one_line(_os_error(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sentry {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001  every error is one line; SENTRY_DEBUG=1 for a trace
        if os.environ.get("SENTRY_DEBUG"):
            raise
        known = isinstance(exc, (InputError, FormatError, ValueError, RuntimeError))
        kind = "" if known else f"{type(exc).__name__}: "
        print(f"sentry {args.command}: {kind}{_one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
