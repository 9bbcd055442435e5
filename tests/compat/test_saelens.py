"""tlens_icl and SAELens in one environment; the SAE notebook runs (small) and hands off at the same hook."""

from __future__ import annotations

import json
import os
from importlib.metadata import version
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "05_transformerlens3_saelens.ipynb"


def test_tlens_icl_and_saelens_import_together():
    import sae_lens

    import tlens_icl
    from tlens_icl.models.adapter import tl_major

    assert tl_major() == 3 and version("sae-lens") == sae_lens.__version__
    assert int(version("sae-lens").split(".")[0]) >= 6 and tlens_icl.load_model is not None


def test_the_notebook_is_marked_for_this_tier_and_committed_with_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    assert "transformer-lens<4" in nb["metadata"]["tlens_icl"]["requires"]
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert not any(o.get("output_type") == "error" for o in outputs)


@pytest.mark.notebook
def test_sae_notebook_runs_small(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("TLENS_ICL_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(NOTEBOOK.parents[1]), os.environ.get("PYTHONPATH", "")]))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "same point: True" in text and "cache vs library pass, max |diff|: 0.0" in text
    plain, with_fv = (float(x) for x in
                      __import__("re").search(r"'plain': ([\d.]+), 'with FV': ([\d.]+)", text).groups())
    assert with_fv > plain  # the function vector, applied by plain TransformerLens, lifts zero-shot accuracy
