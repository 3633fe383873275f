"""docs/quickstart.ipynb is committed executed, and it still runs as written."""

import json
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "quickstart.ipynb"


def outputs_text(cell) -> str:
    parts = []
    for output in cell.get("outputs", []):
        parts.append(output.get("text", ""))
        parts.extend(
            str(v) for k, v in output.get("data", {}).items() if k.startswith("text/")
        )
    return "\n".join(parts)


def test_the_committed_notebook_has_its_outputs():
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    code = [cell for cell in cells if cell["cell_type"] == "code"]
    assert all(cell["outputs"] for cell in code)
    assert any(
        "image/png" in o.get("data", {}) for cell in code for o in cell["outputs"]
    )


@pytest.mark.slow  # the notebook's API calls run in test_api
def test_the_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("KLIPJAX_CACHE_DIR", "")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    text = [outputs_text(cell) for cell in code]
    assert text[0].strip() == "18"
    assert "klip clip_eps=0.2" in text[3] and "kl_fixed clip_eps=0.1" in text[3]
    assert "'identical_params': True" in text[4] and "'pairs': 6" in text[4]
    assert any(
        o.output_type == "display_data" and "image/png" in o.data
        for o in code[5].outputs
    )
    assert os.listdir(tmp_path) == []  # the notebook writes nothing
