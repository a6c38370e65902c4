"""The demo notebook runs top to bottom on the bundled model (small grids)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.model
@pytest.mark.slow
def test_continuous_tokens_notebook_runs():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(ROOT / "demos" / "continuous_tokens.ipynb", as_version=4)
    # run from the repository root so this checkout's tl_continuous is the one imported
    nbclient.NotebookClient(nb, timeout=900, resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]


@pytest.mark.model
@pytest.mark.slow
def test_lines_of_thought_notebook_runs():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(ROOT / "demos" / "lines_of_thought.ipynb", as_version=4)
    nbclient.NotebookClient(
        nb, timeout=900, startup_timeout=300, resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
