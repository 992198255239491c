"""Sentry's exceptions. Every message names the file, field or tensor at fault."""

import os


class SentryError(Exception):
    """Base of Sentry's errors."""


class FormatError(SentryError, ValueError):
    """Malformed or unsupported input: a bundle, key, certificate, safetensors header, ..."""


class VerificationError(SentryError):
    """A signature or digest check failed. Lists what differed, by tensor or file name.

    changed: names whose digest (or dtype/shape) differs; missing: signed but absent;
    unexpected: present but not signed. ``shown`` maps a name to how the message shows it (a
    single-file model's resource ``.`` is shown as the file).
    """

    def __init__(self, message, *, changed=(), missing=(), unexpected=(), shown=None):
        self.changed = list(changed)
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        details = []
        for label, names in (("changed", self.changed), ("missing", self.missing),
                             ("unexpected", self.unexpected)):
            if names:
                names = [shown.get(n, n) for n in names] if shown else names
                listed = ", ".join(names[:10]) + (f", ... ({len(names)} in all)" if len(names) > 10 else "")
                details.append(f"{label}: {listed}")
        super().__init__(message + ("; " + "; ".join(details) if details else ""))


class DependencyError(SentryError, RuntimeError):
    """An optional package a feature needs is missing or too old; the message names the
    install command."""


class OptionNeeded(FormatError):
    """Input refused unless an option allows it. ``option`` is the Python keyword
    (``allow_symlinks``); str() names it as the Python API spells it (``allow_symlinks=True``),
    ``spelled(text)`` as another interface does (the CLI's ``--allow-symlinks``)."""

    def __init__(self, template, option):
        self.template = template
        self.option = option
        super().__init__(template.format(option=f"{option}=True"))

    def spelled(self, spelling):
        return self.template.format(option=spelling)


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
