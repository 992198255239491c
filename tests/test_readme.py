"""README.md's Python blocks run as written, in order, in one namespace, in an empty directory.

Convention: blocks are device-agnostic (`device = "cuda" if torch.cuda.is_available() else
"cpu"`), so all of them run on CPU. A line that only makes sense on a GPU ends with the comment
`# GPU only`; without CUDA it is replaced by `pass`, keeping the block's indentation and line
numbers. Tracebacks name README.md and its line.
"""
import os
import re

import torch

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
GPU_ONLY = "# GPU only"


def python_blocks(text):
    """(first line number, code) of every ```python block, in order."""
    blocks = []
    for m in re.finditer(r"^```python\n(.*?)^```$", text, re.S | re.M):
        blocks.append((text.count("\n", 0, m.start(1)) + 1, m.group(1)))
    return blocks


def runnable(code, cuda):
    if cuda:
        return code
    lines = code.split("\n")
    for i, line in enumerate(lines):
        if line.rstrip().endswith(GPU_ONLY):
            lines[i] = line[:len(line) - len(line.lstrip())] + "pass"
    return "\n".join(lines)


def test_block_extraction_and_gpu_only_lines():
    text = "x\n```python\na = 1\nif a:\n    b = a.cuda()  # GPU only\n```\n```\nsh\n```\n"
    [(line, code)] = python_blocks(text)
    assert line == 3 and code == "a = 1\nif a:\n    b = a.cuda()  # GPU only\n"
    assert runnable(code, cuda=False) == "a = 1\nif a:\n    pass\n"
    assert runnable(code, cuda=True) == code


def test_readme_python_blocks_run_in_order(tmp_path, monkeypatch):
    with open(README) as f:
        blocks = python_blocks(f.read())
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme"}
    cuda = torch.cuda.is_available()
    for line, code in blocks:
        # Leading newlines make the compiled line numbers README.md's.
        compiled = compile("\n" * (line - 1) + runnable(code, cuda), README, "exec")
        try:
            exec(compiled, namespace)
        except Exception as exc:
            raise AssertionError(f"README.md: the block at line {line} fails") from exc
