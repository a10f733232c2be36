"""Execute every notebook in notebooks/ so that they never rot.

Each notebook runs top to bottom in a fresh `python3` kernel (installed by ipykernel, part of the
`test` extra) with the repository as its working directory; any cell that raises fails the test.
The notebooks carry their own `assert` cells, which compare jaxem's numbers with independent
computations (scikit-learn, hmmlearn, SciPy, the known truth), so executing them is a test of
those numbers too. The committed notebooks keep their outputs; this test never writes them back.
"""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 300  # generous: a first-time JIT compile on a busy 2-core machine


def test_the_notebooks_are_there():
    names = {path.name for path in NOTEBOOKS}
    assert {"quickstart.ipynb", "custom_latent_models.ipynb", "hmms.ipynb",
            "restarts_and_model_selection.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs(path):
    notebook = nbformat.read(path, as_version=4)
    assert any("assert" in cell.source for cell in notebook.cells if cell.cell_type == "code"), (
        f"{path.name}: has no assert cell checking its numbers")
    client = nbclient.NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(REPO)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as error:
        pytest.fail(f"{path.name}: a cell failed:\n{error}", pytrace=False)
