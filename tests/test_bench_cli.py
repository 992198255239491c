"""`sentry bench` and `python3 -m sentry.bench`: real options with help and defaults, one row
printed per measurement with its progress on stderr. Timings themselves are not checked here."""
import json
import os
import subprocess
import sys

from sentry import bench, cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_help_lists_every_option_with_its_default():
    for command in (["-m", "sentry", "bench", "--help"], ["-m", "sentry.bench", "--help"]):
        result = _run(*command)
        assert result.returncode == 0, result.stderr
        for option in ("--models", "--devices", "--algorithms", "--reps", "--source",
                       "--no-naive", "--json"):
            assert option in result.stdout, (command, option)
        assert "(default: 10)" in result.stdout and "(default: shapes)" in result.stdout


def test_bad_option_value_is_a_usage_error():
    result = _run("-m", "sentry", "bench", "--reps", "0")
    assert result.returncode == 2
    assert "--reps: must be a positive integer, got 0" in result.stderr


def test_cuda_without_cuda_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr(bench.torch.cuda, "is_available", lambda: False)
    assert cli.main(["bench", "--devices", "cuda", "--models", "vgg19"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "sentry bench: --devices cuda: CUDA is not available on this machine"


def test_options_pick_the_rows_and_each_row_shows_progress(monkeypatch, capsys, tmp_path):
    # Stand-ins for the two slow parts unrelated to the options: the 1 GiB copy and the
    # CPU thread-scaling table.
    monkeypatch.setattr(bench, "copy_read_bandwidth", lambda device: 1e9)
    monkeypatch.setattr(bench, "cpu_scaling", lambda algorithms: None)
    out = tmp_path / "rows.json"
    code = cli.main(["bench", "--models", "resnet152", "--devices", "cpu", "--algorithms",
                     "blake3", "--reps", "1", "--no-naive", "--json", str(out)])
    assert code == 0
    captured = capsys.readouterr()
    table = [line.split() for line in captured.out.splitlines() if line.startswith("resnet152")]
    assert table == [table[0]] and table[0][:5] == ["resnet152", "932", "0.241", "blake3", "cpu"]
    assert table[0][-2:] == ["-", "-"]  # --no-naive
    assert "bench: [1/1] resnet152 blake3 on cpu: 1 runs" in captured.err
    rows = json.loads(out.read_text())
    assert [(r["model"], r["algorithm"], r["device"]) for r in rows] == [
        ("resnet152", "blake3", "cpu"), ("rows-512x3x32x32", "blake3", "cpu")]
