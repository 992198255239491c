"""IntegrityGuard: a module's weights checked against trusted digests inside the loop.

check() is one hash_tensors call over the module's parameters and persistent buffers (in the
signature's order: names sorted) and one comparison with the trusted digests, which live on the
device as a uint8 [N, 32] tensor. The result is a 0-dim bool tensor on the device: nothing is
copied to the host and nothing waits for the GPU, so check() runs inside
torch.compile(fullgraph=True) graphs and captured CUDA graphs. With on_failure="assert" a
failed check also fires torch._assert_async: a device-side assert on CUDA (the CUDA context is
lost, as with any device assert), an immediate RuntimeError on the CPU. Reading the answer
(passed(), report(), verify()) is the only host sync, and happens only when asked for.
"""
import torch

from sentry_ops import digests_hex

from . import expected as expected_mod
from . import safetensors_format
from .errors import FormatError, VerificationError

_ASSERT_MESSAGE = ("sentry.IntegrityGuard: a guarded tensor differs from its trusted digest "
                   "(guard.report() names it)")


def _locate(module):
    """{state_dict name: (owning module, attribute)} of parameters and persistent buffers."""
    where = {}
    for prefix, m in module.named_modules(remove_duplicate=False):
        dot = prefix + "." if prefix else ""
        for key, p in m._parameters.items():
            if p is not None:
                where[dot + key] = (m, "_parameters", key)
        for key, b in m._buffers.items():
            if b is not None and key not in m._non_persistent_buffers_set:
                where[dot + key] = (m, "_buffers", key)
    return where


class IntegrityGuard:
    """Checks `module`'s tensors against `expected` with no host sync.

    expected: a signature bundle path (give public_key or certificate_chain: the signature is
    verified once, here, and a bad one raises VerificationError), a dict {name: digest (hex,
    bytes or uint8 [32] tensor)}, or a uint8 [N, 32] tensor in sorted-name order. Names, dtypes
    and shapes are checked here (VerificationError names what differs); check() compares bytes.

    on_failure: "flag" (check() returns the bool tensor) or "assert" (also torch._assert_async).
    hook=True checks before every forward (register_forward_pre_hook); failures accumulate in
    the `ok` tensor until reset().
    """

    def __init__(self, module, expected, *, public_key=None, certificate_chain=None,
                 algorithm=None, on_failure="flag", hook=False):
        if not isinstance(module, torch.nn.Module):
            raise FormatError(f"IntegrityGuard guards an nn.Module, got {type(module).__name__}")
        if on_failure not in ("flag", "assert"):
            raise FormatError(f"on_failure must be 'flag' or 'assert', got {on_failure!r}")
        self.module = module
        self.on_failure = on_failure
        where = _locate(module)
        names = sorted(module.state_dict(keep_vars=True))
        lost = [n for n in names if n not in where]
        if lost:
            raise FormatError(f"cannot find state dict entries {lost[:5]} among the module's "
                              "parameters and buffers (a custom state_dict?)")
        self.names = names
        self._where = [where[n] for n in names]
        self._aliases = []
        tensors = self._all_tensors()
        devices = {t.device for t in tensors}
        if len(devices) > 1:
            raise FormatError(f"the module's tensors are on several devices {sorted(map(str, devices))};"
                              " guard one device per IntegrityGuard")
        device = devices.pop() if devices else torch.device("cpu")
        if isinstance(expected, torch.Tensor):
            if expected.dtype != torch.uint8 or tuple(expected.shape) != (len(names), 32):
                raise FormatError(f"expected digests: a uint8 [{len(names)}, 32] tensor in sorted "
                                  f"name order, got {expected.dtype} {list(expected.shape)}")
            self.algorithm = algorithm or "blake3"
            want = expected.detach().cpu()
        else:
            trusted = expected_mod.resolve(expected, public_key=public_key,
                                           certificate_chain=certificate_chain,
                                           algorithm=algorithm)
            self._check_names(trusted, tensors)
            self.algorithm = trusted.algorithm
            raw = b"".join(trusted.digests[n] for n in names)
            want = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(-1, 32) \
                if raw else torch.empty(0, 32, dtype=torch.uint8)
        # Tied tensors (one Parameter under several names, as GPT-2's wte and lm_head) are
        # hashed once, so their trusted digests must agree.
        first, self._unique = {}, []
        for i, t in enumerate(tensors):
            j = first.setdefault(id(t), i)
            if j == i:
                self._unique.append(i)
            else:
                self._aliases.append((i, j))
        tied = [self.names[i] for i, j in self._aliases if not torch.equal(want[i], want[j])]
        if tied:
            raise VerificationError("tied tensors have different trusted digests", changed=tied)
        self._groups = {j: [self.names[j]] for j in self._unique}
        for i, j in self._aliases:
            self._groups[j].append(self.names[i])
        self._expected = want[self._unique].to(device)
        self._layout = [(tensors[i].dtype, tuple(tensors[i].shape)) for i in self._unique]
        self.ok = torch.ones((), dtype=torch.bool, device=device)
        self._hook = None
        if hook:
            self.attach()

    @classmethod
    def snapshot(cls, module, algorithm="blake3", **kwargs):
        """A guard trusting the module's tensors as they are now (e.g. after an optimizer step)."""
        names = sorted(module.state_dict(keep_vars=True))
        where = _locate(module)
        tensors = [getattr(where[n][0], where[n][1])[where[n][2]] for n in names]
        with torch.no_grad():
            digests = torch.ops.sentry.hash_tensors.default(tensors, algorithm)
        return cls(module, digests, algorithm=algorithm, **kwargs)

    def _check_names(self, trusted, tensors):
        missing = sorted(set(trusted.digests) - set(self.names))
        unexpected = sorted(set(self.names) - set(trusted.digests))
        changed = []
        if trusted.layouts is not None:
            for name, t in zip(self.names, tensors):
                if name in trusted.layouts:
                    dtype, shape = trusted.layouts[name]
                    if (safetensors_format.safetensors_dtype_name(t.dtype) != dtype
                            or tuple(t.shape) != tuple(shape)):
                        changed.append(name)
        if missing or unexpected or changed:
            raise VerificationError(f"{trusted.source}: the module does not match the trusted "
                                    "digests", changed=changed, missing=missing,
                                    unexpected=unexpected)

    def _all_tensors(self):
        # Looked up on every call (dict lookups, cheap): a parameter replaced since the guard
        # was built is the one checked.
        return [getattr(owner, table)[key] for owner, table, key in self._where]

    def _tensors(self):
        """The distinct tensors, one per group of tied names."""
        tensors = self._all_tensors()
        for i, j in self._aliases:
            if tensors[i] is not tensors[j]:
                raise VerificationError("IntegrityGuard: tied tensors are no longer one tensor; "
                                        "build a new guard", changed=[self.names[j], self.names[i]])
        return [tensors[i] for i in self._unique]

    def _digests(self, tensors):
        layout = [(t.dtype, tuple(t.shape)) for t in tensors]
        if layout != self._layout:  # host metadata only: no sync
            bad = [self.names[i] for i, a, b in zip(self._unique, layout, self._layout) if a != b]
            raise VerificationError("IntegrityGuard: tensors changed dtype or shape", changed=bad)
        with torch.no_grad():
            return torch.ops.sentry.hash_tensors.default(tensors, self.algorithm)

    def _want(self, digests):
        want = self._expected
        if want.device != digests.device:  # the module moved since the guard was built
            want = want.to(digests.device)
            if not torch.compiler.is_compiling():
                self._expected = want
        return want

    def check(self):
        """0-dim bool tensor on the module's device: True when every tensor matches. No sync."""
        digests = self._digests(self._tensors())
        ok = (digests == self._want(digests)).all()
        if self.on_failure == "assert":
            torch._assert_async(ok, _ASSERT_MESSAGE)
        return ok

    def check_(self):
        """check(), and fold the result into the sticky `ok` tensor (in place, no sync)."""
        ok = self.check()
        self.ok.logical_and_(ok.to(self.ok.device))
        return ok

    def attach(self):
        """Check before every forward of the module (a forward pre-hook)."""
        if self._hook is None:
            self._hook = self.module.register_forward_pre_hook(self._pre_hook)
        return self

    def _pre_hook(self, _module, _args):
        self.check_()
        return None  # a pre-hook's return value would replace the forward's arguments

    def detach(self):
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        return self

    def refresh(self):
        """Trust the tensors as they are now (after an optimizer step), on the device, no sync."""
        digests = self._digests(self._tensors())
        self._want(digests).copy_(digests)

    def reset(self):
        self.ok.fill_(True)

    def passed(self):
        """Reads the sticky `ok` flag (host sync)."""
        return bool(self.ok.item())

    def report(self):
        """Names of the tensors that differ now (hashes again; host sync)."""
        digests = self._digests(self._tensors())
        differs = (digests != self._want(digests)).any(dim=1).cpu().tolist()
        return sorted(n for j, bad in zip(self._unique, differs) if bad for n in self._groups[j])

    def verify(self):
        """Raises VerificationError naming the tensors that differ now (host sync)."""
        changed = self.report()
        if changed:
            raise VerificationError("IntegrityGuard: the module differs from its trusted digests",
                                    changed=changed)

    def expected_hex(self):
        """{name: trusted digest (hex)}, tied names included."""
        rows = dict(zip(self._unique, digests_hex(self._expected)))
        return {n: rows[j] for j in self._unique for n in self._groups[j]}

    def __repr__(self):
        return (f"IntegrityGuard({type(self.module).__name__}, {len(self.names)} tensors, "
                f"{self.algorithm}, on_failure={self.on_failure!r}, "
                f"hook={'on' if self._hook is not None else 'off'})")
