"""Reading untrusted input files (positional reads by the C++ reader, GPU-direct reads) and
writing output files atomically. Imports only sentry.errors."""
