"""The main job (`tlens-icl run`) end to end on the embedded model."""

from __future__ import annotations

import pandas as pd
import pytest

import tlens_icl as ti
from tlens_icl.analyses.causal.mediation import IndirectEffectResult
from tlens_icl.cli.main import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["run", "--n", "16", "--out", str(out)]) == 0
    return out


def test_main_job_writes_results_and_fv_restores_zero_shot(run_dir):
    tmp_path = run_dir
    assert "mean zero-shot accuracy" in (tmp_path / "index.html").read_text().lower()
    acc = pd.read_csv(tmp_path / "accuracy.csv")
    model = ti.load_model("icl-tiny")
    assert set(acc["task"]) == set(ti.model_tasks(model))
    mean_by_shots = acc.groupby("n_shots")["accuracy"].mean()
    assert mean_by_shots[8] > mean_by_shots[0] + 0.5          # the shipped model learns in context
    fv = pd.read_csv(tmp_path / "function_vectors.csv")
    assert fv["gain"].mean() > 0.3                             # function vectors restore zero-shot accuracy
    for fam in ("word", "bitwise"):
        med = IndirectEffectResult.load(tmp_path / f"mediation_{fam}")
        assert (tmp_path / f"mediation_{fam}" / f"aie_{fam}.png").exists() and med.effects.shape[1:3] == (4, 8)
    assert (tmp_path / "function_vector_sweep.png").exists()


def test_run_report_renders_in_headless_chromium(run_dir, tmp_path):
    """index.html in a real browser: every figure decodes, both attention views render, the page is not blank."""
    from browser import inspect_page, ink_fraction

    page = run_dir / "index.html"
    html = page.read_text(encoding="utf-8")
    assert html.count("var CircuitsVis") == 1 and "unpkg.com" not in html  # the bundle inlined once, offline
    for name in ("function_vectors.csv", "accuracy/accuracy.csv", "mediation_word/attention.html"):
        assert f'href="{name}"' in html and (run_dir / name).exists()
    found, shot = inspect_page(page, tmp_path)
    n_figures = len(list(run_dir.rglob("*.png")))
    assert found["images"] == found["loaded"] == n_figures == 4, found
    assert all(w > 300 and h > 200 for w, h in found["sizes"]), found
    assert found["views"] == found["rendered"] == 2, found
    assert ink_fraction(shot) > 0.03


def test_model_card_script_measures_with_the_library(tmp_path):
    from tlens_icl.cli.card import main as card_main

    out = tmp_path / "CARD.md"
    assert card_main(["--n", "16", "--out", str(out)]) == 0
    text = out.read_text()
    for section in ("ICL accuracy", "Function vectors", "Task decodability", "bitwise family", "word family",
                    "Shuffled-label control", "zero-shot prompts share their query"):
        assert section in text
