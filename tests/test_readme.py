"""Every ```python block of the README runs as written (```py blocks need network and are skipped)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_runnable_blocks():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(BLOCKS[index], f"README.md block {index}", "exec"), {"__name__": "__readme__"})


def test_quickstart_example_runs(tmp_path, capsys):
    import runpy
    import sys

    script = README.parent / "examples" / "quickstart.py"
    argv = sys.argv
    sys.argv = [str(script), "--output", str(tmp_path / "qs")]
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = argv
    assert "reload identical: True" in capsys.readouterr().out
