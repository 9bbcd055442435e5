"""The main job (`tlens-icl run`) end to end on the embedded model."""

from __future__ import annotations

import pandas as pd

import tlens_icl as ti
from tlens_icl.analyses.causal.mediation import IndirectEffectResult
from tlens_icl.cli.main import main


def test_main_job_writes_results_and_fv_restores_zero_shot(tmp_path, capsys):
    assert main(["run", "--n", "16", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "mean zero-shot accuracy" in printed
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


def test_model_card_script_measures_with_the_library(tmp_path):
    from tlens_icl.cli.card import main as card_main

    out = tmp_path / "CARD.md"
    assert card_main(["--n", "16", "--out", str(out)]) == 0
    text = out.read_text()
    for section in ("ICL accuracy", "Function vectors", "Task decodability", "bitwise family", "word family"):
        assert section in text
