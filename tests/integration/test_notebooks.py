"""The example notebooks run as written: nbclient executes every cell in a fresh kernel of this environment,
against the test Prefect server (the notebook starts its pipeline run, approves it from a later cell and reads
the deliverable with the reference runtime)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("name", ["quickstart.ipynb"])
def test_the_notebook_runs_top_to_bottom_and_approves_its_run(
    name: str, prefect_server_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nbformat
    from nbclient import NotebookClient

    pytest.importorskip("torch", reason="the notebook runs the reference runtime (the `reference` extra)")
    monkeypatch.setenv("PREFECT_API_URL", prefect_server_url)
    notebook = nbformat.read(EXAMPLES / name, as_version=4)
    resources = {"metadata": {"path": str(tmp_path)}}
    client = NotebookClient(notebook, timeout=600, kernel_name="python3", resources=resources)
    client.execute()

    text = "\n".join(
        output.get("text", "") + str(output.get("data", {}).get("text/plain", ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    assert "Waiting for approval of plan " in text
    assert "approved by notebook for plan " in text
    assert "best_model.json" in text
