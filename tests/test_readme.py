"""The README's library snippet runs as-is, and its processor table matches the code."""

import re
from pathlib import Path

from dynfx.table import processor_table

README = Path(__file__).resolve().parent.parent / "README.md"


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_snippet_runs():
    blocks = _python_blocks()
    assert blocks, "README has no python snippet"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102
    y, comp = namespace["y"], namespace["comp"]
    assert y.shape == (4, 2, 44100)
    assert namespace["gain_db"].shape == (4, 44100)
    assert comp.count_num_parameters() == 6


def test_readme_table_is_current():
    assert processor_table() in README.read_text()


def test_readme_quick_start():
    text = README.read_text()
    assert "make train" in text and "make test" in text
