"""The `sentry` command line: keygen, sign, verify, hash, demo, bench, agent (dataset, train,
infer).

Exit codes: 0 success, 1 a check failed, 2 usage or input error.
"""
import argparse
import contextlib
import os
import sys
import warnings

import torch

from sentry_ops import ALGORITHMS, digests_hex, hash_tensors

from ..io import file_reader
from ..errors import FormatError, SentryWarning, VerificationError, Worded, error_text
from ..formats.model_files import hash_file, load_state_dict
from .arguments import positive_int


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


def _stdin_tensor():
    """Standard input read to its end, as a uint8 tensor (b3sum's "-")."""
    data = bytearray()
    while chunk := sys.stdin.buffer.read(1 << 20):
        data += chunk
    return torch.frombuffer(data, dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)


def _progress(args, paths):
    """The progress line of long work on these paths (sentry.progress; --progress)."""
    from . import progress

    total = sum(progress.size_on_disk(p) for p in paths if p != "-")
    return progress.reporting(f"sentry {args.command}", total, args.progress)


def cmd_hash(args):
    _device(args.device)
    with _progress(args, args.paths):
        _hash_paths(args)
    return 0


def _hash_paths(args):
    for path in args.paths:
        if path == "-":
            if args.tensors:
                raise InputError("-: --tensors reads .safetensors and .pt files, not standard "
                                 "input")
            print(f"{digests_hex(hash_tensors([_stdin_tensor()], args.algorithm))[0]}  -")
            continue
        _regular_file(path, directory="sentry hash digests files (sign or verify a directory "
                      "with sentry sign and sentry verify)",
                      other=f"to hash what it streams, pipe it in: sentry hash - < {path}")
        if args.tensors and path.endswith(".safetensors"):
            from ..formats.safetensors_format import read_header

            header = read_header(path)
            [got] = file_reader.digest_files([file_reader.Request(
                path, ranges=[(e.offset, e.length) for e in header.entries],
                range_hash=args.algorithm, prefix=header.prefix, size=header.file_size)])
            for e, h in zip(header.entries, got.ranges):
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
            print(f"{hash_file(path, args.algorithm)}  {path}")


def _password(args):
    if not args.password_env:
        return None
    if args.password_env not in os.environ:
        raise InputError(f"environment variable {args.password_env} (the key password) is not set")
    return os.environ[args.password_env]


def cmd_keygen(args):
    from ..signatures.keys import PrivateKey, write_private_key, write_public_key

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


def _regular_file(path, directory=None, other=None):
    """Refuses early, in one line, what is not a regular file (the readers check again on the
    descriptor they open); ``directory`` and ``other`` add what to do instead."""
    import stat

    from ..io.fileio import _kind

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise InputError(f"{path}: no such file or directory") from None
    if not stat.S_ISREG(mode):
        hint = directory if stat.S_ISDIR(mode) else other
        raise InputError(f"{path}: is {_kind(mode)}, not a regular file"
                         + (f"; {hint}" if hint else ""))


STATE_DICT_SUFFIXES = (".pt", ".pth", ".bin")


def _model_kind(path):
    """"dir", "pt" (a file that may hold a state dict) or "file": a model is a directory or a
    single file of any type, as in OpenSSF Model Signing."""
    if os.path.isdir(path):
        return "dir"
    _regular_file(path)
    return "pt" if path.endswith(STATE_DICT_SUFFIXES) else "file"


def _warn(args, text):
    print(f"sentry {args.command}: warning: {_one_line(text)}", file=sys.stderr)


def _state_dict_or_none(args):
    """The state dict in a .pt/.pth/.bin model, or None (with a warning naming the file) when
    it holds none: such a file is signed as a file, as model_signing signs any file."""
    try:
        return load_state_dict(args.model)
    except FormatError:
        _warn(args, f"{args.model}: holds no state dict that loads with weights_only=True; "
              "signed as a file (its bytes), its tensors not listed")
        return None


def _ignore_paths(args):
    """--ignore-paths as model_signing's CLI resolves them: relative to the current directory
    (the Python API takes them relative to the model directory; absolute paths mean the same
    in both). One that is not inside the model ignores nothing: said in a warning."""
    model = os.path.realpath(args.model)
    paths = []
    for p in args.ignore_paths:
        path = os.path.abspath(p)
        real = os.path.realpath(path)
        if os.path.commonpath([model, real]) != model:
            relative = "" if os.path.isabs(p) else " (relative to the current directory)"
            _warn(args, f"--ignore-paths {p}: not inside the model {args.model}{relative}; it "
                  "ignores nothing")
        paths.append(path)
    return paths


def cmd_sign(args):
    from ..oms.signing import sign_files, sign_model

    from ..formats.bundle import check_signature_target

    kind = _model_kind(args.model)
    check_signature_target(args.signature)  # before loading or hashing anything
    if args.certificate_chain and not args.signing_certificate:
        raise InputError("--certificate-chain (intermediates) needs --signing-certificate")
    chain = ([args.signing_certificate] + args.certificate_chain
             if args.signing_certificate else None)
    common = dict(password=_password(args), certificate_chain=chain)
    ignore_paths = _ignore_paths(args)
    with _progress(args, [args.model]):
        state = _state_dict_or_none(args) if kind == "pt" else None
        if state is not None:
            sign_model(state, args.private_key, args.signature, algorithm=args.algorithm,
                       model_name=os.path.basename(args.model), **common)
        else:
            sign_files(args.model, args.private_key, args.signature, hash_type=args.hash_type,
                       ignore_paths=ignore_paths, tensor_algorithm=args.algorithm,
                       allow_symlinks=args.allow_symlinks, **common)
    print(f"signed {args.model} -> {args.signature}")
    return 0


def _signed_method(signature):
    """The serialization method a bundle's statement names (files or tensors), read before its
    signature is checked only to choose how to verify; the verification checks everything."""
    from ..formats import bundle as bundle_format

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


def _count(n, noun):
    return f"{n} {noun}" + ("" if n == 1 else "s")


def cmd_verify(args):
    from ..oms.signing import verify_files, verify_model

    keys = _verify_method(args)
    kind = _model_kind(args.model)
    # A .pt signed as a file (what the reference tool writes) is checked as a file; one signed
    # as tensors (sentry sign of a .pt) is loaded and its tensors checked.
    by_tensors = kind == "pt" and _signed_method(args.signature) == "tensors"
    ignore_paths = _ignore_paths(args)
    with _progress(args, [args.model]):
        if by_tensors:
            result = verify_model(load_state_dict(args.model), args.signature, **keys)
        else:
            result = verify_files(args.model, args.signature, ignore_paths=ignore_paths,
                                  allow_symlinks=True if args.allow_symlinks else None, **keys)
    signer = (f"signed by {result.identity} ({result.identity_provider})" if result.identity
              else f"key {result.key_hint[:16]}...")
    print(f"verified: {args.model} matches {args.signature} "
          f"({_count(len(result.names), 'tensor' if result.method == 'tensors' else 'file')}, "
          f"{result.hash_type}, {signer})")
    return 0


def cmd_demo(args):
    from ..pipeline.demo import run

    _device(args.device)
    return run(args.model, args.device, hash_only=args.hash_only, samples=args.samples,
               epochs=args.epochs, sources=args.sources, batch_size=args.batch_size,
               width=args.width, seed=args.seed, workdir=args.workdir)


def cmd_agent(args):
    from ..pipeline import agents

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
    from .bench import run_args

    return run_args(args)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default where it has one (not for flags and empty values), and keeps
    the line breaks of texts written in lines (the exit codes)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.default == []:
            return action.help
        return super()._get_help_string(action)

    def _fill_text(self, text, width, indent):
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


EXIT_CODES = """exit codes:
  0  verified: every file or tensor matches the signature
  1  verification failed: the signature, or a file or tensor, does not match
  2  bad input: a missing or malformed model, bundle, key or option"""


def _subparser(sub, name, help, **kw):
    return sub.add_parser(name, help=help, description=kw.pop("description", help),
                          formatter_class=_HelpFormatter, **kw)


def parser():
    from ..pipeline.shaped_models import MODELS

    p = argparse.ArgumentParser(prog="sentry", formatter_class=_HelpFormatter,
                                description="Integrity for ML artifacts: hash, sign and verify "
                                "models (OpenSSF Model Signing bundles) and datasets.",
                                epilog="Run 'sentry COMMAND --help' for a command's options.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    k = _subparser(sub, "keygen", "make an EC key pair (PEM files)")
    k.add_argument("--private-key", "--private_key", required=True, metavar="PEM",
                   help="private key file to write")
    k.add_argument("--public-key", "--public_key", required=True, metavar="PEM",
                   help="public key file to write")
    k.add_argument("--curve", default="P-256", choices=["P-256", "P-384", "P-521"],
                   help="elliptic curve")
    k.add_argument("--password-env", metavar="VAR",
                   help="encrypt the private key with this environment variable's value")
    k.add_argument("--force", action="store_true",
                   help="replace existing key files (refused without it)")
    k.set_defaults(func=cmd_keygen)

    s = _subparser(sub, "sign", "sign a model: a directory or a single file",
                   description="Sign a model: a directory (every file, OpenSSF Model Signing "
                   "method files; safetensors tensors are listed too, for verify_model) or a "
                   "single file of any type. A .pt/.pth/.bin state dict is signed by its "
                   "tensors (method tensors); a file that is not one is signed as a file.")
    s.add_argument("model", help="model directory or file")
    s.add_argument("--private-key", "--private_key", required=True, metavar="PEM",
                   help="EC private key (PEM)")
    s.add_argument("--signature", required=True, metavar="BUNDLE",
                   help="signature bundle to write (atomically; only over nothing or an older "
                   "bundle)")
    s.add_argument("--password-env", metavar="VAR",
                   help="environment variable holding the private key's password")
    s.add_argument("--signing-certificate", "--signing_certificate", metavar="PEM",
                   help="certificate of the private key: the bundle then carries the "
                   "certificate chain instead of a key hint")
    s.add_argument("--certificate-chain", "--certificate_chain", nargs="*", default=[],
                   metavar="PEM", help="intermediate certificates (not the root), with "
                   "--signing-certificate")
    s.add_argument("--hash-type", default="sha256", choices=["sha256", "blake3"],
                   help="file digests (OpenSSF Model Signing method files)")
    s.add_argument("-a", "--algorithm", default="blake3", choices=ALGORITHMS,
                   help="tensor digests (safetensors tensors, .pt state dicts)")
    s.add_argument("--ignore-paths", nargs="+", action="extend", default=[], metavar="PATH",
                   help="files or directories to leave out, relative to the current "
                   "directory (as model_signing resolves them); repeatable")
    s.add_argument("--allow-symlinks", "--allow_symlinks", action="store_true",
                   help="hash symbolic links to files as their targets (refused without it)")
    s.add_argument("--progress", action=argparse.BooleanOptionalAction,
                   help="a progress line on stderr (default: when stderr is a terminal and the "
                   "work takes over 2 s)")
    s.set_defaults(func=cmd_sign)

    v = _subparser(sub, "verify", "verify a model (a directory or a single file) against a "
                   "signature", epilog=EXIT_CODES,
                   description="Verify a model against a signature bundle (Sentry's or "
                   "model_signing's, any release). Give exactly one method: --public-key, "
                   "--certificate-chain, or keyless --identity and --identity-provider with "
                   "--trust-config or --trusted-root.")
    v.add_argument("model", help="model directory or file")
    v.add_argument("--signature", required=True, metavar="BUNDLE", help="signature bundle")
    v.add_argument("--public-key", "--public_key", metavar="PEM",
                   help="the signer's public key (bundles signed with a key)")
    v.add_argument("--certificate-chain", "--certificate_chain", metavar="PEM",
                   help="trusted root certificates (bundles signed with a certificate)")
    v.add_argument("--identity", help="Sigstore keyless: the signer's identity (e-mail or URI "
                   "in the certificate's SAN) that must have signed")
    v.add_argument("--identity-provider", "--identity_provider", metavar="URL",
                   help="Sigstore keyless: the OIDC issuer that must have vouched for "
                   "--identity")
    v.add_argument("--trust-config", "--trust_config", metavar="JSON",
                   help="Sigstore keyless: a client trust config (as model_signing's "
                   "--trust_config); verification is offline")
    v.add_argument("--trusted-root", metavar="JSON", help="Sigstore keyless: a "
                   "trusted_root.json (instead of --trust-config)")
    v.add_argument("--ignore-paths", nargs="+", action="extend", default=[], metavar="PATH",
                   help="files or directories to leave out besides those the signature "
                   "records, relative to the current directory (as model_signing resolves "
                   "them); repeatable")
    v.add_argument("--allow-symlinks", "--allow_symlinks", action="store_true",
                   help="accept symbolic links to files (hashed as their targets) even where "
                   "the signature was made without --allow-symlinks")
    v.add_argument("--progress", action=argparse.BooleanOptionalAction,
                   help="a progress line on stderr (default: when stderr is a terminal and the "
                   "work takes over 2 s)")
    v.set_defaults(func=cmd_verify)

    h = _subparser(sub, "hash", "digest files (like b3sum), or each tensor of a "
                   ".safetensors/.pt file (--tensors)")
    h.add_argument("paths", nargs="+", metavar="FILE",
                   help="files to hash; - reads standard input")
    h.add_argument("-a", "--algorithm", default="blake3", choices=ALGORITHMS,
                   help="digest algorithm")
    h.add_argument("--tensors", action="store_true", help="one digest per tensor")
    h.add_argument("--device", default="cpu", help="where to hash tensors (cpu, cuda, cuda:N)")
    h.add_argument("--progress", action=argparse.BooleanOptionalAction,
                   help="a progress line on stderr (default: when stderr is a terminal and the "
                   "work takes over 2 s)")
    h.set_defaults(func=cmd_hash)

    d = _subparser(sub, "demo", "dataset -> train -> infer on synthetic data, then catch a "
                   "tampered sample, label and weight (--hash-only: hash a model-shaped state "
                   "dict and catch a tampered weight)")
    d.add_argument("--device", default=None,
                   help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")
    d.add_argument("--hash-only", action="store_true",
                   help="only the model-hashing demo (CPU/GPU cross-check, tampered weight)")
    d.add_argument("--model", default="resnet152", choices=MODELS,
                   help="model shape for --hash-only")
    d.add_argument("--samples", type=positive_int, default=10000, help="synthetic samples")
    d.add_argument("--epochs", type=positive_int, default=2, help="training epochs")
    d.add_argument("--sources", type=positive_int, default=4,
                   help="data sources, each signing its part of the dataset")
    d.add_argument("--batch-size", type=positive_int, default=256, help="training batch size")
    d.add_argument("--width", type=positive_int, default=32, help="CNN width (first conv channels)")
    d.add_argument("--seed", type=int, default=0, help="random seed (data, weights, order)")
    d.add_argument("--workdir", help="keep keys, data and model here (default: a temporary "
                   "directory, removed at the end)")
    d.set_defaults(func=cmd_demo)

    a = _subparser(sub, "agent", "the pipeline's agents: dataset, train, infer")
    asub = a.add_subparsers(dest="agent", required=True, metavar="AGENT")
    ad = _subparser(asub, "dataset", "write a packed store and its manifest signed per source")
    ad.add_argument("--out", required=True, help="data directory to write")
    ad.add_argument("--keys", required=True, help="keys directory (source keys made if absent)")
    ad.add_argument("--source-dir", help="a sample store (folder of .npy samples or packed) to "
                    "read instead of the embedded synthetic generator")
    ad.add_argument("--samples", type=positive_int, default=10000, help="synthetic samples")
    ad.add_argument("--sources", type=positive_int, default=4, help="synthetic sources")
    ad.add_argument("--classes", type=positive_int, default=10, help="synthetic classes")
    ad.add_argument("--seed", type=int, default=0, help="random seed of the synthetic data")
    ad.add_argument("-a", "--algorithm", default="blake3", choices=ALGORITHMS,
                    help="sample digests")
    ad.add_argument("--device", default=None, help="where to hash (default: cpu)")
    at = _subparser(asub, "train", "verify the data on the fly, train, sign model and "
                    "provenance")
    at.add_argument("--data", required=True, help="data directory (sentry agent dataset)")
    at.add_argument("--model", "--out", dest="model", required=True,
                    help="model directory to write")
    at.add_argument("--keys", required=True, help="keys directory (trainer key made if absent)")
    at.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    at.add_argument("--epochs", type=positive_int, default=2, help="training epochs")
    at.add_argument("--batch-size", type=positive_int, default=256, help="training batch size")
    at.add_argument("--lr", type=float, default=0.05, help="learning rate (SGD)")
    at.add_argument("--width", type=positive_int, default=32,
                    help="CNN width (first conv channels)")
    at.add_argument("--seed", type=int, default=0, help="random seed (weights, order)")
    at.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    ai = _subparser(asub, "infer", "verify model and provenance, then infer on the test split "
                    "with on-the-fly data verification")
    ai.add_argument("--data", required=True, help="data directory (sentry agent dataset)")
    ai.add_argument("--model", required=True, help="model directory (sentry agent train)")
    ai.add_argument("--keys", required=True, help="keys directory (the sources' and trainer's "
                    "public keys)")
    ai.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    ai.add_argument("--batch-size", type=positive_int, default=512, help="inference batch size")
    ai.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    a.set_defaults(func=cmd_agent)
    from . import bench

    b = sub.add_parser("bench", help="hashing benchmark: model-shaped state dicts, side by side "
                       "with copy bandwidth and the naive .cpu() + hashlib way",
                       description=bench.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_arguments(b)
    b.set_defaults(func=cmd_bench)
    return p


#: The CLI's spelling of the options that errors (errors.Worded) name.
_CLI_OPTIONS = {"allow_symlinks": "--allow-symlinks", "public_key": "--public-key",
                "identity": "--identity", "identity_provider": "--identity-provider",
                "trusted_root": "--trusted-root", "trust_config": "--trust-config",
                "verify_model": "sentry verify of the .pt state dict it was signed from, or "
                                "sentry.verify_model"}


def _error_text(exc):
    if isinstance(exc, Worded):
        return exc.spelled(_CLI_OPTIONS)
    return error_text(exc)


def _one_line(text):
    return " ".join(str(text).split())


@contextlib.contextmanager
def _warnings_as_lines(args):
    """SentryWarnings from the library as the CLI's own one-line warnings on stderr."""
    def show(message, category, *rest, **kw):
        if issubclass(category, SentryWarning):
            _warn(args, str(message))
        else:
            shown(message, category, *rest, **kw)

    shown = warnings.showwarning
    with warnings.catch_warnings():
        warnings.simplefilter("always", SentryWarning)
        warnings.showwarning = show
        yield


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        with _warnings_as_lines(args):
            return args.func(args)
    except VerificationError as exc:
        print(f"sentry {args.command}: FAILED: {_one_line(_error_text(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"sentry {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001  every error is one line; SENTRY_DEBUG=1 for a trace
        if os.environ.get("SENTRY_DEBUG"):
            raise
        known = isinstance(exc, (InputError, FormatError, ValueError, RuntimeError, OSError))
        kind = "" if known else f"{type(exc).__name__}: "
        print(f"sentry {args.command}: {kind}{_one_line(_error_text(exc))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
