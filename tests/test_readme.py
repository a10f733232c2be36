"""The README's quickstart runs as written and prints the numbers its comment states."""

import contextlib
import io
import re
from pathlib import Path

import jax
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def quickstart() -> str:
    """The first Python block after the "## Quickstart" heading."""
    text = README.read_text()
    section = text[text.index("## Quickstart"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_quickstart_prints_what_its_comment_says():
    code = quickstart()
    line = next(line for line in code.splitlines() if line.startswith("print(best.log_likelihood"))
    log_likelihood, iterations, converged = line.split("#")[1].split()
    out = io.StringIO()
    with jax.enable_x64(True), contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), {})
    printed = out.getvalue().splitlines()[0].split()
    assert float(printed[0]) == pytest.approx(float(log_likelihood), abs=5e-5)
    assert printed[1:] == [iterations, converged]
