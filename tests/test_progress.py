"""Long CLI work shows progress (issue 12): a line on stderr when stderr is a terminal and the
work takes a while, erased at the end; nothing at all when stderr is a file or a pipe; every
interval and a total with --progress."""
import io
import os

import pytest

from sentry import progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def _counter(values):
    it = iter(values)
    last = [0]

    def read():
        last[0] = next(it, last[0])
        return last[0]
    return read


@pytest.fixture
def fast(monkeypatch):
    monkeypatch.setattr(progress, "DELAY", 0.0)
    monkeypatch.setattr(progress, "INTERVAL", 0.01)


def _run(stream, enabled, counter, total=4_000_000_000):
    import time

    with progress.reporting("sentry verify", total, enabled, stream, counter):
        time.sleep(0.2)


def test_a_terminal_gets_a_line_rewritten_in_place_and_erased(fast):
    term = Terminal()
    _run(term, None, _counter([0, 1_000_000_000, 2_000_000_000]))
    out = term.getvalue()
    assert "sentry verify: 1.00 GB of 4.00 GB read (25%)" in out
    assert "2.00 GB of 4.00 GB read (50%)" in out
    assert "\n" not in out and out.endswith("\r\033[K")  # nothing left behind


def test_a_short_job_on_a_terminal_shows_nothing(monkeypatch):
    monkeypatch.setattr(progress, "DELAY", 5.0)
    term = Terminal()
    with progress.reporting("sentry sign", 10, None, term, _counter([0, 10])):
        pass
    assert term.getvalue() == ""


def test_a_file_or_pipe_gets_nothing_unless_asked(fast):
    plain = io.StringIO()
    _run(plain, None, _counter([0, 5, 10]))
    assert plain.getvalue() == ""
    _run(plain, True, _counter([0, 2_000_000, 3_000_000]))
    lines = plain.getvalue().splitlines()
    assert lines and all(line.startswith("sentry verify: ") for line in lines)
    assert "\r" not in plain.getvalue() and lines[-1].endswith(" s")  # the total, then done


def test_never_when_told_not_to(fast):
    term = Terminal()
    _run(term, False, _counter([0, 1, 2]))
    assert term.getvalue() == ""


def test_the_counter_is_this_processs_reads(tmp_path):
    if progress.bytes_read() is None:
        pytest.skip("no /proc/self/io here")
    data = os.urandom(3 << 20)
    (tmp_path / "f").write_bytes(data)
    before = progress.bytes_read()
    with open(tmp_path / "f", "rb") as f:
        assert f.read() == data
    assert progress.bytes_read() - before >= len(data)
    assert progress.size_on_disk(tmp_path) == len(data) == progress.size_on_disk(tmp_path / "f")


@pytest.mark.parametrize("command", ["sign", "verify", "hash"])
def test_cli_progress_option(cli, tmp_path, command):
    from sentry.crypto import PrivateKey, write_private_key, write_public_key

    if progress.bytes_read() is None:
        pytest.skip("no /proc/self/io here")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "w.bin").write_bytes(os.urandom(3 << 20))
    key = PrivateKey.generate()
    write_private_key(tmp_path / "key.pem", key)
    write_public_key(tmp_path / "key.pub", key.public_key())
    sign = ["sign", "model", "--private-key", "key.pem", "--signature", "m.sig"]
    args = {"sign": sign,
            "verify": ["verify", "model", "--signature", "m.sig", "--public-key", "key.pub"],
            "hash": ["hash", "model/w.bin"]}[command]
    if command == "verify":
        assert cli(tmp_path, *sign).returncode == 0
    quiet = cli(tmp_path, *args)  # stderr is not a terminal here: nothing but the result
    assert quiet.returncode == 0 and quiet.stderr == ""
    if command == "sign":
        os.unlink(tmp_path / "m.sig")
    shown = cli(tmp_path, *args, "--progress")
    assert shown.returncode == 0 and shown.stdout == quiet.stdout
    last = shown.stderr.splitlines()[-1]
    assert last.startswith(f"sentry {command}: ") and "of 3.1 MB read (100%)" in last, last
