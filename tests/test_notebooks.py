"""Every notebook in notebooks/ runs headless on the embedded model (notebooks are tested docs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def needs_tl3(path: Path) -> bool:
    """Notebooks that need TransformerLens 3 + SAELens (metadata ``tlens_icl.requires``); tests/compat runs them."""
    import json

    return "transformer-lens<4" in json.loads(path.read_text()).get("metadata", {}).get("tlens_icl", {}).get("requires", "")


NOTEBOOKS = [p for p in sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb")) if not needs_tl3(p)]


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
    import nbformat
    from nbclient import NotebookClient

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
