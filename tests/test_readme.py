"""The README's Python quickstart runs as written, on the packaged classifier."""

from __future__ import annotations

import contextlib
import io
import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_quickstart_runs_and_points_at_the_object():
    text = README.read_text()
    section = text.split("## Quickstart", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), {})
    deletion_auc, pointing = out.getvalue().split()
    assert 0.0 <= float(deletion_auc) < 0.5
    assert pointing == "True"
