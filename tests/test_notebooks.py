"""Both notebooks execute headless, top to bottom, with JAXFIT_NOTEBOOK_QUICK=1 (a run of
seconds), so a notebook that breaks fails CI; they are committed with outputs cleared."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sumsq", "stepfit"])
def test_notebook_executes_and_shows_its_plots(name, tmp_path, monkeypatch):
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code)  # committed cleared
    source = "\n".join(cell.source for cell in code)
    assert "jaxfit.train(" in source and "jaxfit.open(" in source and "import json" not in source  # the Python API, no JSON by hand
    monkeypatch.setenv("JAXFIT_NOTEBOOK_QUICK", "1")
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    images = [output for cell in code for output in cell.outputs if "image/png" in output.get("data", {})]
    assert len(images) >= 2  # at least the reduced run's plots (the committed full-length ones where present)
