"""Hashing benchmark (see sentry/bench.py): `python benchmarks/bench_hash.py --help`."""
import sys

from sentry.bench import main

if __name__ == "__main__":
    sys.exit(main())
