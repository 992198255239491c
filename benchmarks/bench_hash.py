"""Hashing benchmark (see sentry/tools/bench.py): `python benchmarks/bench_hash.py --help`."""
import sys

from sentry.tools.bench import main

if __name__ == "__main__":
    sys.exit(main())
