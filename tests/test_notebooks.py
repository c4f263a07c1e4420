"""Every notebook in ``notebooks/`` runs top to bottom on a real kernel, with no API key.

The kernel is this interpreter (``sys.executable -m ipykernel_launcher``),
from a kernel spec written to a temporary directory: no installed kernel
spec is needed, and none in the user's Jupyter directories (which may name
another Python) can be picked by mistake. Notebooks are kept without
outputs; a test checks that too.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a Jupyter kernel per notebook

nbformat = pytest.importorskip("nbformat", reason="the notebook tests need nbformat")
nbclient = pytest.importorskip("nbclient", reason="the notebook tests need nbclient")
pytest.importorskip("ipykernel", reason="the notebook tests need ipykernel")
pytest.importorskip("matplotlib", reason="the notebooks need matplotlib")
kernelspec = pytest.importorskip("jupyter_client.kernelspec")
manager_module = pytest.importorskip("jupyter_client.manager")

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
KERNEL = "rxllm-test-python"
CELL_TIMEOUT = 120
# How many marble diagrams each notebook shows (at least).
DIAGRAMS = {"compose.ipynb": 1, "replay.ipynb": 3, "tool_calls.ipynb": 1}
MARBLE_SVG = 'class="rxllm-marbles"'


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kernels")
    spec = root / KERNEL
    spec.mkdir()
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": "rxllm tests", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel))
    return root


def test_there_are_notebooks() -> None:
    assert {path.name for path in NOTEBOOKS} >= {
        "compose.ipynb",
        "replay.ipynb",
        "tool_calls.ipynb",
    }


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.name for path in NOTEBOOKS])
def test_notebook_is_saved_without_outputs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{path.name}: clear the outputs before saving"
            )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.name for path in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path: Path, kernel_dir: Path, tmp_path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    specs = kernelspec.KernelSpecManager(kernel_dirs=[str(kernel_dir)], ensure_native_kernel=False)
    manager = manager_module.AsyncKernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"OPENAI_BASE_URL", "OPENAI_API_KEY", "RXLLM_DB_URL"}
    }
    env["MPLBACKEND"] = "Agg"
    client = nbclient.NotebookClient(
        notebook,
        km=manager,
        timeout=CELL_TIMEOUT,
        startup_timeout=120,
        allow_errors=False,
        resources={"metadata": {"path": str(tmp_path)}},  # the kernel's working directory
    )
    executed = client.execute(env=env)  # ``env`` goes to the kernel manager's start_kernel
    errors = [
        output
        for cell in executed.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "error"
    ]
    assert errors == []

    diagrams = [
        (cell, output)
        for cell in executed.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if MARBLE_SVG in output.get("data", {}).get("image/svg+xml", "")
    ]
    assert len(diagrams) >= DIAGRAMS.get(path.name, 0), [cell.source for cell, _ in diagrams]
    live = 0
    for cell, output in diagrams:
        svg = output["data"]["image/svg+xml"]
        assert svg.startswith("<svg") and 'class="marble"' in svg, cell.source
        assert MARBLE_SVG in output["data"].get("text/html", "")
        if "LiveMarbles(" in cell.source:
            # Shown empty at first, then updated in place to the whole stream.
            live += 1
            assert 'data-kind="finished"' in svg and 'data-kind="text"' in svg
    assert live == (1 if path.name == "replay.ipynb" else 0)
