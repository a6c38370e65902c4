"""The demo notebooks run top to bottom on the bundled model (small grids).

They are executed once per checkout: ``docs/tools/notebooks.py`` (which ``make docs`` runs
before ``make test``'s pytest) writes each executed copy to ``build/notebooks/`` with the hash
of the notebook and the package's sources, and these tests reuse a copy whose hash matches
this checkout's, executing the notebook themselves otherwise. nbclient raises on the first cell
that fails, so a copy exists only for a notebook that ran; the tests also check its outputs.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _executor() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "_docs_notebooks", ROOT / "docs" / "tools" / "notebooks.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(name: str) -> None:
    pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    executor = _executor()
    notebook = ROOT / "demos" / name
    executed = executor.execute(notebook)  # reuses build/notebooks/ when its hash matches
    stamp = executed.with_suffix(".sha256")
    assert stamp.read_text() == executor.source_hash(notebook)
    nb = nbformat.read(executed, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and all(cell.get("execution_count") for cell in code), "a cell did not run"
    outputs = [o for cell in code for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]


@pytest.mark.model
@pytest.mark.slow
def test_continuous_tokens_notebook_runs():
    _run("continuous_tokens.ipynb")


@pytest.mark.model
@pytest.mark.slow
def test_lines_of_thought_notebook_runs():
    _run("lines_of_thought.ipynb")
