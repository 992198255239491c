"""The command line (cli), the hashing benchmark (bench) and the CLI progress line."""
