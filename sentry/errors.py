"""Sentry's exceptions. Every message names the file, field or tensor at fault."""

import dataclasses
import os


class SentryError(Exception):
    """Base of Sentry's errors."""


class FormatError(SentryError, ValueError):
    """Malformed or unsupported input: a bundle, key, certificate, safetensors header, ..."""


class VerificationError(SentryError):
    """A signature or digest check failed. Lists what differed, by tensor or file name.

    changed: names whose digest (or dtype/shape) differs; missing: signed but absent;
    unexpected: present but not signed; ranks: in the distributed checks, the ranks whose bytes
    (or layout) are at fault. ``shown`` maps a name to how the message shows it (a
    single-file model's resource ``.`` is shown as the file).
    """

    def __init__(self, message, *, changed=(), missing=(), unexpected=(), ranks=(), shown=None):
        self.changed = list(changed)
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.ranks = sorted(set(ranks))
        details = []
        for label, names in (("changed", self.changed), ("missing", self.missing),
                             ("unexpected", self.unexpected)):
            if names:
                names = [shown.get(n, n) for n in names] if shown else names
                listed = ", ".join(names[:10]) + (f", ... ({len(names)} in all)" if len(names) > 10 else "")
                details.append(f"{label}: {listed}")
        super().__init__(message + ("; " + "; ".join(details) if details else ""))


class SentryWarning(UserWarning):
    """Something done differently than asked or expected, but safely (e.g. a file named
    .safetensors that is not one, signed as a plain file); the message names the file."""


class DependencyError(SentryError, RuntimeError):
    """An optional package a feature needs is missing or too old; the message names the
    install command."""


@dataclasses.dataclass(frozen=True)
class Option:
    """An option named in an error message: its Python keyword, and how the Python API writes
    it there (default: the keyword)."""

    keyword: str
    python: str = None


class Worded:
    """Mixin of errors whose message names options: built from strings and Options; str()
    spells each Option as the Python API does, ``spelled(names)`` as another interface does
    (the CLI's {"allow_symlinks": "--allow-symlinks", ...})."""

    def _wording(self, parts):
        self.parts = parts
        return self.spelled({})

    def spelled(self, names):
        return "".join(p if isinstance(p, str) else names.get(p.keyword, p.python or p.keyword)
                       for p in self.parts)


class OptionError(Worded, FormatError):
    """Input refused, naming the options that would allow it or that are missing."""

    def __init__(self, *parts):
        super().__init__(self._wording(parts))


class MethodError(Worded, VerificationError):
    """The signature was made by another method than the options given: says which to give."""

    def __init__(self, *parts):
        super().__init__(self._wording(parts))


def error_text(exc, path=None):
    """An exception in words; an OSError without Python's "[Errno N]": "FILE: what", or just
    "what" when the file is ``path`` (already named by the caller)."""
    if not isinstance(exc, OSError):
        return str(exc)
    what = (exc.strerror or str(exc)).lower()
    name = exc.filename
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    if name is None or (path is not None and str(name) == os.fspath(path)):
        return what
    return f"{name}: {what}"
