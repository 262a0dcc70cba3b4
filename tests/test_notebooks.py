"""The workflow notebooks (``notebooks/``), executed as a user runs them, one after the other
in one fresh project, with their parameters cell replaced by small values. Each asserts its
own key results, so a notebook that raises, or whose result is wrong, fails here. They are
stored without outputs and name no folder outside the project."""

from __future__ import annotations

import re
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
ORDER = ["01_generate", "02_inspect", "03_train_ready", "04_find_failures"]
SMALL = {
    "01_generate": 'JOBS = 4\nRESOLUTION = 64\nBATCH = "nb-generate"',
    # the demo's size: its dataset tests' thresholds are set for 8 jobs
    **dict.fromkeys(ORDER[1:], 'JOBS = 8\nRESOLUTION = 64\nBATCH = "nb-demo"'),
}
# An absolute path in a string: a folder of this machine that another user does not have.
ABSOLUTE = re.compile(r"""["'](/(home|root|tmp|work|usr|var|opt|mnt|Users)\b|[A-Z]:\\)""")


def _notebook(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


def test_the_four_notebooks_are_there_stored_clean_and_parametrized():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == ORDER
    for name in ORDER:
        notebook = _notebook(name)
        nbformat.validate(notebook)
        code = [c for c in notebook.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), name
        assert "parameters" in code[0].metadata.get("tags", []), name
        for cell in code:
            assert not ABSOLUTE.search(cell.source), (name, cell.source)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A fresh project's settings for the kernels: data, Dagster home, cache of its own."""
    root = tmp_path_factory.mktemp("notebooks")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VARIO_DATA_DIR", str(root / "data"))
        env.setenv("DAGSTER_HOME", str(root / "home"))
        env.setenv("VARIO_CACHE_DIR", str(root / "cache"))
        env.setenv("VARIO_WORKERS", "2")
        yield root


@pytest.mark.parametrize("name", ORDER)
def test_a_notebook_runs_on_small_settings(project, name, record_property):
    notebook = _notebook(name)
    notebook.cells[1].source = SMALL[name]  # the parameters cell, after the title
    client = NotebookClient(
        notebook,
        timeout=300,  # one cell; the whole notebook takes well under that
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    started = time.monotonic()
    client.execute()  # raises CellExecutionError, with the cell and its traceback
    record_property("seconds", round(time.monotonic() - started, 1))
    errors = [
        o
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "error"
    ]
    assert not errors
