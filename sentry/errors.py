"""Sentry's exceptions. Every message names the file, field or tensor at fault."""


class SentryError(Exception):
    """Base of Sentry's errors."""


class FormatError(SentryError, ValueError):
    """Malformed or unsupported input: a bundle, key, certificate, safetensors header, ..."""


class VerificationError(SentryError):
    """A signature or digest check failed. Lists what differed, by tensor or file name.

    changed: names whose digest (or dtype/shape) differs; missing: signed but absent;
    unexpected: present but not signed.
    """

    def __init__(self, message, *, changed=(), missing=(), unexpected=()):
        self.changed = list(changed)
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        details = []
        for label, names in (("changed", self.changed), ("missing", self.missing),
                             ("unexpected", self.unexpected)):
            if names:
                shown = ", ".join(names[:10]) + (f", ... ({len(names)} in all)" if len(names) > 10 else "")
                details.append(f"{label}: {shown}")
        super().__init__(message + ("; " + "; ".join(details) if details else ""))


class DependencyError(SentryError, RuntimeError):
    """An optional package a feature needs is missing or too old; the message names the
    install command."""
