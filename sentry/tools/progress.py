"""A progress line on stderr for long CLI work (signing, verifying, hashing large models).

What is measured is the bytes this process has read (``rchar`` of /proc/self/io): model files
are read by C++ threads and hashlib, and counting the process's reads needs no hook in any of
them. Against the model's size on disk that gives a fraction and a rate. Where /proc/self/io
does not exist, nothing is shown.

By default (``enabled=None``) the line appears only when stderr is a terminal and the work has
taken more than DELAY seconds; it is rewritten in place and erased at the end, so output that
goes to a file or a pipe stays exactly as without it. ``enabled=True`` (``--progress``) shows it
anyway, one line per INTERVAL, and a last line with the total; ``False`` never.
"""
import contextlib
import os
import sys
import threading
import time

#: Seconds of work before the first progress line (when not asked for explicitly).
DELAY = 2.0
#: Seconds between updates.
INTERVAL = 0.5


def bytes_read():
    """Bytes this process has read so far (all threads), or None where the system does not
    say."""
    try:
        with open("/proc/self/io") as f:
            for line in f:
                if line.startswith("rchar:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def size_on_disk(path):
    """Bytes of the regular files at or under ``path`` (symbolic links not followed): what
    signing or verifying it reads, give or take ignored files."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        try:
            return os.stat(path).st_size
        except OSError:
            return 0
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if not os.path.islink(os.path.join(root, name)):
                total += st.st_size
    return total


def _amount(n):
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


class _Reporter:
    def __init__(self, label, total, stream, forced, counter, start_bytes):
        self.label, self.total, self.stream, self.forced = label, total, stream, forced
        self.counter = counter
        self.start_bytes = start_bytes
        self.start = time.monotonic()
        self.shown = False
        self.done = threading.Event()

    def line(self):
        now = self.counter()
        n = 0 if now is None else max(0, now - self.start_bytes)
        seconds = time.monotonic() - self.start
        text = f"{self.label}: {_amount(n)}"
        if self.total:
            text += f" of {_amount(self.total)} read ({min(100, 100 * n // self.total)}%)"
        else:
            text += " read"
        if seconds > 0:
            text += f", {n / seconds / 1e9:.2f} GB/s"
        return text

    def show(self):
        if self.forced:
            print(self.line(), file=self.stream, flush=True)
        else:
            # back to the line's start: what stdout prints next (sentry hash) overwrites it
            self.stream.write("\r\033[K" + self.line() + "\r")
            self.stream.flush()
        self.shown = True

    def run(self):
        if self.done.wait(0 if self.forced else DELAY):
            return
        while True:
            self.show()
            if self.done.wait(INTERVAL):
                return

    def finish(self, failed):
        if self.forced and not failed:
            print(self.line() + f" in {time.monotonic() - self.start:.1f} s", file=self.stream,
                  flush=True)
        elif self.shown and not self.forced:  # leave the terminal as it was
            self.stream.write("\r\033[K")
            self.stream.flush()


@contextlib.contextmanager
def reporting(label, total_bytes, enabled=None, stream=None, counter=bytes_read):
    """Shows progress on ``stream`` (stderr) while the block runs: see the module docs."""
    stream = stream if stream is not None else sys.stderr
    start = None if enabled is False or (enabled is None and not stream.isatty()) else counter()
    if start is None:
        yield
        return
    reporter = _Reporter(label, total_bytes, stream, enabled is True, counter, start)
    thread = threading.Thread(target=reporter.run, name="sentry-progress", daemon=True)
    thread.start()
    failed = True
    try:
        yield
        failed = False
    finally:
        reporter.done.set()
        thread.join()
        reporter.finish(failed)
