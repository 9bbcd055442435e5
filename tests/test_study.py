"""The cross-model study workflow (tlens_icl.workflows): every step runs and is stored, a re-run resumes, another
protocol is refused, the summary's numbers are those of the stored results, and the verdict rules hold.

Runs on the embedded model with seconds-sized protocol (no download). The stored studies of the real models
(studies/cross_model) are checked against the README's table in test_readme_study_table_matches_stored_results.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch

import tlens_icl as ti
from tlens_icl import workflows as S
from tlens_icl.workflows import summary as SM
from tlens_icl.errors import CheckpointMismatchError

ROOT = Path(__file__).resolve().parent.parent
STORED = ROOT / "studies" / "cross_model"

TINY = S.StudySizes(icl_tasks=("uppercase", "capitalize", "first_letter", "last_letter"), icl_shots=(0, 1, 3), n_icl=6,
                    fv_tasks=("uppercase", "capitalize"), n_mean=6, n_corrupted=3, n_shots=3, k=3, n_val=4, n_test=6,
                    n_tv=4, tv_shots=2, cd_tasks=("uppercase", "capitalize", "first_letter"), n_head_seqs=3,
                    head_seq_length=6, ablation_ks=(0.05, 0.1), n_random=2, n_ablation=4, attention_task=None,
                    rsa_permutations=20, train_fraction=0.5, val_fraction=0.2)


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    model = ti.load_model("icl-tiny")
    out = tmp_path_factory.mktemp("study") / "icl-tiny"
    res = S.run_study(model, out=out, sizes=TINY, seed=0)
    return model, out, res


def test_every_step_is_stored_and_the_protocol_recorded(tiny_study):
    model, out, res = tiny_study
    doc = S.run._read_json(out / "study.json")
    assert doc["complete"] and doc["identity"]["sizes"] == TINY.to_json() and doc["identity"]["model"] == "icl-tiny"
    steps = {"accuracy", "mediation", "tv_icl", "decodability", "rsa", "head_scores", "ablation",
             *(f"{kind}/{t}" for kind in ("fv_val", "fv_test", "tv_val", "tv_test") for t in TINY.fv_tasks)}
    assert set(doc["seconds"]) == steps and set(res) == steps
    assert not (out / S.run.PARTIAL).exists()  # the finer units of long steps are removed once they finish
    loaded = S.load_study(out)
    assert set(loaded) - {"study"} == steps
    assert torch.equal(loaded["mediation"].effects.nan_to_num(), res["mediation"].effects.nan_to_num())
    # splits are disjoint and the FV/TV test layer is the one chosen on validation items
    parts = S.run.splits(model, TINY, 0)
    for p in parts.values():
        sets = [{(i.input, i.output) for i in p[k].items} for k in ("train", "val", "test")]
        assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    val = torch.stack([res[f"fv_val/{t}"].accuracy().mean(0) for t in TINY.fv_tasks]).mean(0)
    assert res[f"fv_test/{TINY.fv_tasks[0]}"].layers == (res["fv_val/uppercase"].layers[S.first_argmax(val)],)
    assert doc["fv_layer"] == res["fv_test/uppercase"].layers[0]


def test_a_rerun_loads_every_step_and_another_protocol_is_refused(tiny_study, monkeypatch):
    model, out, res = tiny_study
    for name in ("icl_accuracy", "indirect_effect", "function_vector_sweep", "task_vector_sweep", "task_activations",
                 "head_scores", "head_ablation", "task_vector"):
        monkeypatch.setattr(S.run, name, lambda *a, **k: pytest.fail("a finished step was recomputed"))
    again = S.run_study(model, out=out, sizes=TINY, seed=0)
    assert torch.equal(again["accuracy"].correct, res["accuracy"].correct)
    with pytest.raises(CheckpointMismatchError, match="seed"):
        S.run_study(model, out=out, sizes=TINY, seed=1)
    with pytest.raises(CheckpointMismatchError, match="sizes"):
        S.run_study(model, out=out, sizes=dataclasses.replace(TINY, n_icl=5), seed=0)


def test_an_interrupted_step_resumes_from_its_units(tmp_path, monkeypatch):
    model = ti.load_model("icl-tiny")
    sizes = dataclasses.replace(TINY, icl_tasks=("uppercase", "capitalize", "first_letter"),
                                cd_tasks=("uppercase", "capitalize", "first_letter"))
    real = S.run.indirect_effect

    def crash(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(S.run, "indirect_effect", crash)
    with pytest.raises(KeyboardInterrupt):
        S.run_study(model, out=tmp_path / "s", sizes=sizes)
    assert (tmp_path / "s" / "accuracy" / "meta.json").is_file() and not (tmp_path / "s" / "mediation").exists()
    def no_accuracy(*a, **k):
        raise RuntimeError("icl_accuracy called")

    monkeypatch.setattr(S.run, "icl_accuracy", no_accuracy)
    monkeypatch.setattr(S.run, "indirect_effect", real)
    with pytest.raises(RuntimeError, match="icl_accuracy called"):  # the stored accuracy was loaded; tv_icl needs it
        S.run_study(model, out=tmp_path / "s", sizes=sizes)
    assert (tmp_path / "s" / "mediation" / "meta.json").is_file()


def test_the_summary_is_computed_from_the_stored_results(tiny_study):
    _, out, res = tiny_study
    s = S.study_summary(out)
    acc = res["accuracy"]
    assert s["icl"]["mean"] == pytest.approx(acc.correct.mean((0, 2)).tolist())  # equal n per task: mean of means
    for j in range(len(acc.n_shots)):
        assert s["icl"]["lo"][j] <= s["icl"]["mean"][j] <= s["icl"]["hi"][j]
    top = res["mediation"].top_heads(TINY.k)
    assert [h["head"] for h in s["aie"]["top"]] == [f"L{h.layer}H{h.head}" for h in top]
    L = res["mediation"].effects.shape[1]
    # each head's depth layer / (L - 1) is stored to 4 decimals, the mean is over those
    assert s["depth"]["fv_mean"] == pytest.approx(sum(round(h.layer / (L - 1), 4) for h in top) / len(top))
    for setting in ("zero_shot", "shuffled_labels"):
        w = torch.stack([res[f"fv_test/{t}"].correct[s["fv"]["settings"].index(setting), 0] for t in TINY.fv_tasks])
        wo = torch.stack([res[f"fv_test/{t}"].baseline_correct[s["fv"]["settings"].index(setting)] for t in TINY.fv_tasks])
        assert s["fv"][setting]["with"][0] == pytest.approx(float(w.mean()))
        assert s["fv"][setting]["lift"][0] == pytest.approx(float(w.mean() - wo.mean()))
    tv = torch.stack([res[f"tv_test/{t}"].correct[0, 0] for t in TINY.fv_tasks])
    icl = res["tv_icl"].correct[:, 1]
    if icl.mean() > 0:
        assert s["tv"]["ratio"][0] == pytest.approx(float(tv.mean() / icl.mean()))
    cd = res["decodability"].scores()
    assert [p["cd"] for p in s["cd"]["peaks"]] == pytest.approx(cd.max(1).values.tolist())
    table = S.cross_model_table([s, {**s, "label": "again"}])
    assert len(table) == len(S.FINDINGS) and list(table.columns)[-1] == "agrees?"
    assert (table["icl-tiny"] == table["again"]).all()


def test_an_unfinished_study_is_summarized_only_where_its_steps_finished(tiny_study, tmp_path):
    import json
    import shutil

    _, out, _ = tiny_study
    part = tmp_path / "part"
    shutil.copytree(out, part)
    doc = json.loads((part / "study.json").read_text())
    del doc["complete"]
    (part / "study.json").write_text(json.dumps(doc))
    for step in ["ablation", "rsa", *[p.name for p in part.glob("tv_test/*")]]:
        shutil.rmtree(part / step if (part / step).exists() else part / "tv_test" / step)
    with pytest.raises(ti.TlensICLError, match="partial=True"):
        S.study_summary(part)
    full, s = S.study_summary(out), S.study_summary(part, partial=True)
    assert not s["complete"] and set(s["missing"]) == {"ablation", "rsa", "tv", *full["missing"]}
    assert s["icl"] == full["icl"] and s["fv"] == full["fv"] and s["cd"] == full["cd"]
    table = S.cross_model_table([full, {**s, "label": "part"}])
    by = dict(zip(table["finding"], table["part"]))
    tv_rows = [f.claim for f in S.FINDINGS if "TV" in f.claim]
    assert tv_rows and all(by[c].startswith("not run") for c in tv_rows)
    if "attention" in full["missing"]:  # a finished study without the step says so; an unfinished one: not run
        att = next(f.claim for f in S.FINDINGS if "attention" in f.claim)
        assert dict(zip(table["finding"], table["icl-tiny"]))[att] == "not measured" and by[att].startswith("not run")
    assert not any(by[c].startswith("not run") for c in by if "rises with shots" in c and "ICL" in c)
    agree = dict(zip(table["finding"], table["agrees?"]))
    assert all("part" not in agree[c] and "(all)" not in agree[c] for c in tv_rows)  # its verdict is left out
    figs = S.cross_model_figures([full, {**s, "label": "part"}])
    labels = {name: [ax.get_title() for ax in fig.axes] + [t.get_text() for ax in fig.axes
                                                            for t in (ax.get_legend().get_texts() if ax.get_legend() else [])]
              for name, fig in figs.items()}
    assert "part" in [t.get_text() for t in figs["head_depths"].axes[0].get_xticklabels()]  # there it is shown
    assert set(figs) == {"head_depths", "ablation", "fv_lift", "layers", "shots"}
    assert not any("part" in t for t in labels["layers"] + labels["ablation"])  # no TV, no ablation: left out there


def test_paired_bootstrap_and_interval_rules():
    a = torch.tensor([[1.0, 1.0, 0.0, 1.0], [1.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    point, lo, hi = SM._diff(a, b)
    assert point == pytest.approx(0.5) and lo <= point <= hi
    assert SM._diff(a, a) == (0.0, 0.0, 0.0)  # paired: identical conditions have no spread at all
    nan = a.clone()
    nan[0, 3] = float("nan")  # a missing slot is dropped, not counted as 0
    assert SM._mean(nan)[0] == pytest.approx((2 / 3 + 3 / 4) / 2)
    assert SM._sign((0.1, 0.01, 0.2)) == 1 and SM._sign((0.1, -0.01, 0.2)) == 0 and SM._sign((-0.1, -0.2, -0.05)) == -1
    assert SM._separates((0.8, 0.7, 0.9), (0.2, 0.1, 0.69)) == 1 and SM._separates((0.8, 0.7, 0.9), (0.2, 0.1, 0.7)) == 0
    assert SM._combine({"A": "yes", "B": "yes"}, 2) == "yes (all)"
    assert SM._combine({"A": "yes", "B": "yes"}, 3) == "yes"  # a third model has not run this step
    assert SM._combine({"A": "yes", "B": "no", "C": "yes"}, 3) == "no: B; yes: A, C"
    assert SM._combine({}, 2) == "not run"


def test_first_argmax_breaks_near_ties_by_the_lowest_index():
    assert S.first_argmax([0.2, 0.5, 0.5 + 1e-9, 0.1]) == 1  # a rounding difference cannot move the choice
    assert S.first_argmax([0.2, 0.5, 0.5 + 1e-3]) == 2
    assert S.first_argmax([float("nan"), 0.3, 0.3]) == 1
    with pytest.raises(ti.TlensICLError):
        S.first_argmax([float("nan")])


def test_sizes_are_validated_before_any_work(tmp_path):
    with pytest.raises(ti.TlensICLError, match="cd_tasks must be among icl_tasks"):
        dataclasses.replace(TINY, cd_tasks=("antonym",))
    with pytest.raises(ti.TlensICLError, match="n_icl"):
        dataclasses.replace(TINY, n_icl=0)
    model = ti.load_model("icl-tiny")
    with pytest.raises(ti.TlensICLError, match="too few single-token items"):
        S.run_study(model, out=tmp_path / "x", sizes=dataclasses.replace(TINY, n_mean=10_000))
    with pytest.raises(ti.TlensICLError, match="sizes must be one of"):
        S.run_study(model, out=tmp_path / "y", sizes="huge")


def test_cli_refuses_a_used_folder_before_loading_and_prints_the_table(tiny_study, tmp_path, capsys, monkeypatch):
    from tlens_icl import cli

    _, out, _ = tiny_study
    monkeypatch.setattr("tlens_icl.models.load_model", lambda *a, **k: pytest.fail("loaded the model"))
    assert cli.main(["study", "icl-tiny", "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert cli.main(["study-table", str(out), "--out", str(tmp_path / "t")]) == 0
    text = capsys.readouterr().out
    assert text.count("\n") >= len(S.FINDINGS) + 1 and "| finding | paper | icl-tiny | agrees? |" in text
    assert {p.name for p in (tmp_path / "t").iterdir()} >= {"table.md", "table.csv", "head_depths.png", "ablation.png"}


def test_readme_study_table_matches_stored_results():
    """Every number of the README's cross-model table is regenerated from the committed studies."""
    folders = sorted(STORED.glob("*/study.json"))
    if not folders:
        pytest.skip("no stored studies yet")
    order = [f.parent for f in folders]
    order.sort(key=lambda p: list(SM.LABELS).index(p.name) if p.name in SM.LABELS else 99)
    expected = S.table_markdown(S.cross_model_table([S.study_summary(f, partial=True) for f in order]))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- study-table:start -->\n(.*?)\n<!-- study-table:end -->", readme, re.S)
    assert m, "the README has no study table between its markers"
    assert m.group(1).strip() == expected.strip()


def test_stored_studies_figures_read_cleanly():
    """The cross-model figures of the committed studies (four models with long names): no text overlaps another,
    nothing outside the figure, every axis labelled (what a reviewer would check on notebook 08)."""
    import matplotlib

    matplotlib.use("Agg")
    from figures_at_depth import layout_problems

    folders = [f.parent for f in STORED.glob("*/study.json")]
    if len(folders) < 2:
        pytest.skip("fewer than two stored studies")
    folders.sort(key=lambda p: list(SM.LABELS).index(p.name) if p.name in SM.LABELS else 99)
    figs = S.cross_model_figures([S.study_summary(f, partial=True) for f in folders])
    assert {name: layout_problems(fig) for name, fig in figs.items()} == {name: [] for name in figs}


def test_run_study_refuses_a_non_model_before_writing_anything(tmp_path):
    """Bad input fails with the library's error before any forward pass or file is written."""
    with pytest.raises(ti.TlensICLError, match="model"):
        S.run_study("icl-tiny", out=tmp_path / "s", sizes=TINY)
    assert not (tmp_path / "s").exists()
