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
import operator

import torch

from sentry_ops import digests_hex

from ..oms import trusted_digests as expected_mod
from ..formats import safetensors_format
from ..errors import FormatError, VerificationError

_ASSERT_MESSAGE = ("sentry.IntegrityGuard: a guarded tensor differs from its trusted digest "
                   "(guard.report() names it)")


_TABLES = ("_parameters", "_buffers", "_modules")


def _walk(root):
    """The module tree as state_dict() walks it: [(prefix, module)] in named_modules order
    (remove_duplicate=False: a module reached twice is there twice) and every parameter and
    buffer slot [(module index, table, key, value, guarded)], guarded when its value belongs in
    the state dict (not None, not a non-persistent buffer). Plain Python, so that dynamo traces
    it (and guards on what it reads) when check() is compiled."""
    modules, slots = [], []
    for prefix, module in root.named_modules(remove_duplicate=False):
        index = len(modules)
        modules.append((prefix, module))
        for key, value in module._parameters.items():
            slots.append((index, "_parameters", key, value, value is not None))
        off = module._non_persistent_buffers_set
        for key, value in module._buffers.items():
            slots.append((index, "_buffers", key, value, value is not None and key not in off))
    return modules, slots


def _named(modules, slots):
    """{state dict name: slot index} of the guarded slots."""
    where = {}
    for s, (index, _table, key, _value, guarded) in enumerate(slots):
        if guarded:
            prefix = modules[index][0]
            name = prefix + "." + key if prefix else key
            if where.setdefault(name, s) != s:
                raise FormatError(f"two tensors of the module are named '{name}'")
    return where


def _state(module):
    """(its _Structure, the state dict's names sorted, their tensors)."""
    structure = _Structure(module)
    names = sorted(module.state_dict(keep_vars=True))
    lost = [n for n in names if n not in structure.where]
    if lost:
        raise FormatError(f"cannot find state dict entries {lost[:5]} among the module's "
                          "parameters and buffers (a custom state_dict?)")
    return structure, names, list(structure.picker(names)(structure.find()))


def _current(root):
    """{state dict name: tensor} as the module is now."""
    modules, slots = _walk(root)
    return {name: slots[s][3] for name, s in _named(modules, slots).items()}


def _pick(indices):
    """A C-speed function taking a sequence to the tuple of its items at `indices`."""
    if not indices:
        return lambda _seq: ()
    if len(indices) == 1:
        return lambda seq, i=indices[0]: (seq[i],)
    return operator.itemgetter(*indices)


class _Structure:
    """A walk of the module (_walk), and what to look at to see, with host-side lookups only,
    that a new walk would find the same slots: find() does that with map() and operator, a few C
    calls per module and per slot, instead of walking again in Python.

    It compares: every module is still its parent's child under its key; every _parameters,
    _buffers and _modules table keeps its length; every known slot is still there, still None
    or not None, and every buffer keeps its persistence. Equal lengths with every known key
    present mean that no key was added or removed, so the walk's names are unchanged.
    """

    def __init__(self, root):
        modules, slots = _walk(root)
        self.where = _named(modules, slots)
        self.names = sorted(self.where)
        objects = [m for _, m in modules]
        n = len(objects)
        index = {prefix: i for i, (prefix, _) in enumerate(modules)}
        child_of = [(index[prefix.rpartition(".")[0]], prefix.rpartition(".")[2], m)
                    for prefix, m in modules[1:]]
        empty_children = [(i, k) for i, m in enumerate(objects)
                          for k, c in m._modules.items() if c is None]
        # tables[t * n + i] is module i's table _TABLES[t]
        self._table_owners = objects * len(_TABLES)
        self._table_names = [t for t in _TABLES for _ in range(n)]
        self._sizes = [len(getattr(m, t)) for t, m in zip(self._table_names, self._table_owners)]
        self._parent_tables = _pick([2 * n + p for p, _, _ in child_of])
        self._child_keys = [k for _, k, _ in child_of]
        self._children = [c for _, _, c in child_of]
        self._empty_tables = _pick([2 * n + i for i, _ in empty_children])
        self._empty_keys = [k for _, k in empty_children]
        self._slot_tables = _pick([_TABLES.index(t) * n + i for i, t, _, _, _ in slots])
        self._slot_keys = [k for _, _, k, _, _ in slots]
        self._nones = [None] * max(len(slots), len(empty_children))
        self._none_pattern = [v is None for _, _, _, v, _ in slots]
        buffers = [(objects[i], k) for i, t, k, _, _ in slots if t == "_buffers"]
        self._buffer_owners = [m for m, _ in buffers]
        self._buffer_keys = [k for _, k in buffers]
        self._buffer_off = [k in m._non_persistent_buffers_set for m, k in buffers]

    def picker(self, names):
        """A function taking find()'s values to the tensors of `names`."""
        return _pick([self.where[n] for n in names])

    def find(self):
        """Every slot's value as it is now, or None when the module's structure changed."""
        try:
            tables = list(map(getattr, self._table_owners, self._table_names))
            if (list(map(len, tables)) != self._sizes
                    or not all(map(operator.is_, map(operator.getitem, self._parent_tables(tables),
                                                     self._child_keys), self._children))
                    or not all(map(operator.is_, map(operator.getitem, self._empty_tables(tables),
                                                     self._empty_keys), self._nones))):
                return None
            values = list(map(operator.getitem, self._slot_tables(tables), self._slot_keys))
            if (list(map(operator.is_, values, self._nones)) != self._none_pattern
                    or list(map(operator.contains, map(_OFF, self._buffer_owners),
                                self._buffer_keys)) != self._buffer_off):
                return None
        except (KeyError, TypeError, AttributeError):  # a key gone, a table replaced
            return None
        return values


_OFF = operator.attrgetter("_non_persistent_buffers_set")
_LAYOUT = operator.attrgetter("dtype", "shape")


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
        structure, names, tensors = _state(module)
        self.names = names
        self._walked = structure.names  # a re-walk must find these names, no more, no fewer
        self._aliases = []
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
        self._pick_unique = _pick(self._unique)
        self._pick_tied = _pick([i for i, _ in self._aliases]), _pick([j for _, j in self._aliases])
        self._adopt(structure)
        self.ok = torch.ones((), dtype=torch.bool, device=device)
        self._hook = None
        if hook:
            self.attach()

    @classmethod
    def snapshot(cls, module, algorithm="blake3", **kwargs):
        """A guard trusting the module's tensors as they are now (e.g. after an optimizer step)."""
        _, _, tensors = _state(module)
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

    def _adopt(self, structure):
        self._structure = structure
        self._pick_all = structure.picker(self.names)

    def _find(self):
        """(the distinct tensors, None), or (None, why) when the module no longer holds tensors of
        the guarded names, dtypes and shapes: why = (message, changed, missing, unexpected).

        Eager: the _Structure's cheap look, and a new walk when it says the structure changed (a
        submodule or tensor swapped in under the same name is then the one hashed). Compiled:
        a plain walk, traced once; dynamo guards on what it reads, so a changed structure
        recompiles and comes back here."""
        if torch.compiler.is_compiling():  # dynamo runs neither itemgetter nor map(is_, ...)
            current = _current(self.module)
            walked = sorted(current)
            if walked != self._walked:
                return None, self._names_changed(walked)
            tensors = [current[n] for n in self.names]
            tied = all(tensors[i] is tensors[j] for i, j in self._aliases)
            distinct = [tensors[i] for i in self._unique]
            layout = [(t.dtype, tuple(t.shape)) for t in distinct]
        else:
            values = self._structure.find()
            if values is None:
                structure = _Structure(self.module)
                if structure.names != self._walked:
                    return None, self._names_changed(structure.names)
                self._adopt(structure)
                values = structure.find()
                if values is None:
                    raise FormatError("IntegrityGuard: cannot follow the module's structure "
                                      "(a _parameters, _buffers or _modules that is not a dict?)")
            tensors = self._pick_all(values)
            first, second = self._pick_tied
            tied = all(map(operator.is_, first(tensors), second(tensors)))
            distinct = self._pick_unique(tensors)
            layout = list(map(_LAYOUT, distinct))  # (dtype, torch.Size): equal to the tuples
        if not tied:
            untied = sorted({self.names[k] for i, j in self._aliases
                             if tensors[i] is not tensors[j] for k in (i, j)})
            return None, ("tied tensors are no longer one tensor; build a new guard",
                          untied, [], [])
        if layout != self._layout:  # host metadata only: no sync
            bad = [n for i, now, want in zip(self._unique, layout, self._layout)
                   if now != want for n in self._groups[i]]
            return None, ("tensors changed dtype or shape", sorted(bad), [], [])
        return distinct, None

    def _names_changed(self, walked):
        unexpected = sorted(set(walked) - set(self._walked))
        hint = ""
        if any(n.startswith("parametrizations.") or ".parametrizations." in n
               for n in unexpected):
            hint = (" (torch.nn.utils.parametrize moved a guarded tensor under "
                    "'parametrizations': the forward now computes it from other tensors)")
        return ("tensors were added to or removed from the module since the guard was built"
                + hint, [], sorted(set(self._walked) - set(walked)), unexpected)

    @staticmethod
    def _error(why):
        message, changed, missing, unexpected = why
        return VerificationError("IntegrityGuard: " + message, changed=changed, missing=missing,
                                 unexpected=unexpected)

    def _tensors(self):
        """The distinct tensors, one per group of tied names; VerificationError if the module
        no longer holds the guarded ones."""
        tensors, why = self._find()
        if why is not None:
            raise self._error(why)
        return list(tensors)

    def _digests(self, tensors):
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
        """0-dim bool tensor on the module's device: True when every tensor matches. No sync.

        When the module no longer holds the guarded names, dtypes and shapes (or tied tensors
        were untied), eager check() raises VerificationError naming them; compiled, it returns
        False (a graph cannot raise) and report() names them."""
        tensors, why = self._find()
        if why is not None:
            if not torch.compiler.is_compiling():
                raise self._error(why)
            ok = torch.zeros((), dtype=torch.bool, device=self._expected.device)
        else:
            digests = self._digests(tensors)
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
        """Names of the tensors that differ now (hashes again; host sync), added and removed
        ones included."""
        tensors, why = self._find()
        if why is not None:
            return sorted(set(why[1]) | set(why[2]) | set(why[3]))
        digests = self._digests(tensors)
        differs = (digests != self._want(digests)).any(dim=1).cpu().tolist()
        return sorted(n for j, bad in zip(self._unique, differs) if bad for n in self._groups[j])

    def verify(self):
        """Raises VerificationError naming the tensors that differ now (host sync)."""
        tensors, why = self._find()
        if why is not None:
            raise self._error(why)
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
