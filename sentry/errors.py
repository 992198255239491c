"""Sentry's exceptions. Every message names the file, field or tensor at fault."""


class SentryError(Exception):
    """Base of Sentry's errors."""


class FormatError(SentryError, ValueError):
    """Malformed or unsupported input: a bundle, key, certificate, safetensors header, ..."""


class VerificationError(SentryError):
    """A signature or digest check failed. Lists what differed, by tensor or file name.

    changed: names whose digest (or dtype/shape) differs; missing: signed but absent;
    unexpected: present but not signed; ranks: in the distributed checks, the ranks whose bytes
    (or layout) are at fault.
    """

    def __init__(self, message, *, changed=(), missing=(), unexpected=(), ranks=()):
        self.changed = list(changed)
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.ranks = sorted(set(ranks))
        details = []
        for label, names in (("changed", self.changed), ("missing", self.missing),
                             ("unexpected", self.unexpected)):
            if names:
                shown = ", ".join(names[:10]) + (f", ... ({len(names)} in all)" if len(names) > 10 else "")
                details.append(f"{label}: {shown}")
        super().__init__(message + ("; " + "; ".join(details) if details else ""))
