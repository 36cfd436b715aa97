"""The example notebooks execute, on a tiny slice, against the vLLM server of the test run.

Each notebook reads its backend from ``ADAPTIVE_TTC_BASE_URL`` / ``ADAPTIVE_TTC_MODEL`` and its size from
``ADAPTIVE_TTC_NOTEBOOK_SLICE``. The notebooks run in a fresh kernel whose working directory is a temporary one;
the executed copies are never written back (the committed outputs come from a full run).
"""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
CELL_TIMEOUT_S = 180  # the slowest cell (notebook 03's collection) takes about 40 s on 2 busy cores
SLICE = "1"  # one problem each (notebook 03 trains on its minimum of four questions)

pytestmark = pytest.mark.vllm


def test_the_four_example_notebooks_are_there() -> None:
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(
    path: Path, vllm_url: str, vllm_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADAPTIVE_TTC_BASE_URL", vllm_url)  # the kernel inherits this process's environment
    monkeypatch.setenv("ADAPTIVE_TTC_MODEL", vllm_model)
    monkeypatch.setenv("ADAPTIVE_TTC_NOTEBOOK_SLICE", SLICE)
    before = sorted(EXAMPLES.iterdir())
    notebook = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},  # the kernel's working directory
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, when a cell fails
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sorted(EXAMPLES.iterdir()) == before, "executing the notebook left files in examples/"
