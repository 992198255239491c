"""Argument types shared by the command line (cli) and the benchmark's own parser (bench)."""
import argparse


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value
