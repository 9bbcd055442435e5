"""The main job (`tlens-icl run`) end to end on the embedded model, and the report a reader opens."""

from __future__ import annotations

import re
import stat
from html.parser import HTMLParser
from urllib.parse import unquote

import pandas as pd
import pytest
import torch

import tlens_icl as ti
from tlens_icl.analyses.accuracy import AccuracyResult
from tlens_icl.analyses.causal.mediation import IndirectEffectResult
from tlens_icl.cli.main import main
from tlens_icl.models.loading import model_tasks
from tlens_icl.viz.html import BUNDLE_MARK


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
    assert set(acc["task"]) == set(model_tasks(model))
    mean_by_shots = acc.groupby("n_shots")["accuracy"].mean()
    assert mean_by_shots[8] > mean_by_shots[0] + 0.5          # the shipped model learns in context
    fv = pd.read_csv(tmp_path / "function_vectors.csv")
    assert fv["gain"].mean() > 0.3                             # function vectors restore zero-shot accuracy
    assert (fv["zero_shot_ci_low"] <= fv["zero_shot"]).all() and (fv["zero_shot_plus_fv"] <= fv["plus_fv_ci_high"]).all()
    for fam in ("word", "bitwise"):
        med = IndirectEffectResult.load(tmp_path / f"mediation_{fam}")
        assert (tmp_path / f"mediation_{fam}" / f"aie_{fam}.png").exists() and med.effects.shape[1:3] == (4, 8)
    assert (tmp_path / "function_vector_sweep.png").exists()


def test_fv_table_and_accuracy_table_share_their_zero_shot_prompts(run_dir):
    """One prompt set per headline: the FV table's zero-shot column is first-token top-1 on the accuracy table's
    0-shot prompts (icl-tiny's answers are one token, so it equals the exact-match column too)."""
    acc = AccuracyResult.load(run_dir / "accuracy")
    fv = pd.read_csv(run_dir / "function_vectors.csv").set_index("task")
    s0 = acc.n_shots.index(0)
    for t in acc.tasks:
        assert fv.loc[t, "zero_shot"] == pytest.approx(float(acc.first_token_correct[acc.tasks.index(t), s0].mean()))
        assert fv.loc[t, "zero_shot"] == pytest.approx(float(acc.correct[acc.tasks.index(t), s0].mean()))
    assert "the columns are equal" in (run_dir / "index.html").read_text()


def test_layer_is_chosen_on_validation_items_and_reported_on_test_items(monkeypatch):
    """The headline block is the validation argmax even where the test curve peaks elsewhere; fit, validation
    and test items never overlap; the table reports test prompts with intervals."""
    import tlens_icl.workflows.pipeline as pipeline
    from tlens_icl.analyses.vectors.common import LayerSweepResult

    model = ti.load_model("icl-tiny")
    tasks = ["bitwise_and", "bitwise_or"]
    splits = {t: pipeline.task_splits(model, t, seed=0) for t in tasks}
    for s in splits.values():
        fit, val, test = ({it.input for it in s[p].items} for p in ("fit", "val", "test"))
        assert not (fit & val or fit & test or val & test) and len(test) == 51  # the card's held-out pairs

    seen = []

    def fake_sweep(model, fv, task, *, n, seed, **kw):  # validation peaks at block 2, test at block 0
        part = next(p for p, t in splits[task.name].items() if t.items == task.items)
        seen.append((task.name, part))
        peak = 2 if part == "val" else 0
        correct = torch.zeros(1, 4, n)
        for layer in range(4):
            correct[0, layer, : n - 2 * n * abs(layer - peak) // 8] = 1.0
        return LayerSweepResult(correct, correct.clone(), torch.zeros(1, n), torch.zeros(1, n), ("zero_shot",),
                                (0, 1, 2, 3), "function_vector", task.name, {"model": "icl-tiny"})

    monkeypatch.setattr(pipeline, "function_vector_sweep", fake_sweep)
    res = pipeline.run_pipeline(model, tasks=tasks, n=8, n_mean=8, n_corrupted=4, n_shots=4)
    assert sorted(seen) == sorted((t, p) for t in tasks for p in ("val", "test"))
    assert res["fv_layer"] == 2 and max(res["fv_mean_by_layer"], key=res["fv_mean_by_layer"].get) == 0
    table = res["fv_table"]
    assert (table["zero_shot_plus_fv"] == 0.5).all() and (table["n"] == 8).all()   # block 2 on the test prompts
    assert (table["plus_fv_ci_low"] < 0.5).all() and (table["plus_fv_ci_high"] > 0.5).all()
    text = pipeline.headline_text(res)
    assert "block, 2," in text and "validation" in text and "test" in text and "95% CI" in text


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs = []

    def handle_starttag(self, tag, attrs):
        href = dict(attrs).get("href")
        if tag == "a" and href and not href.startswith("#"):
            self.hrefs.append(href)


def test_run_report_links_resolve_and_files_are_readable(run_dir):
    html = (run_dir / "index.html").read_text(encoding="utf-8")
    parser = _Links()
    parser.feed(html)
    assert parser.hrefs
    for href in parser.hrefs:   # a browser percent-decodes an href once: that path must exist
        assert (run_dir / unquote(href)).exists(), f"dead link {href!r}"
    assert parser.hrefs.count("checkpoint/") == 1 and not [h for h in parser.hrefs if h.startswith("checkpoint/") and
                                                            h != "checkpoint/"]
    modes = {p.relative_to(run_dir): stat.S_IMODE(p.stat().st_mode) for p in run_dir.rglob("*") if p.is_file()}
    assert all(m & 0o044 == 0o044 for m in modes.values()), {str(p): oct(m) for p, m in modes.items() if m & 0o044 != 0o044}


def test_report_tables_format_numbers_one_way_and_right_align_them(run_dir):
    html = (run_dir / "index.html").read_text(encoding="utf-8")
    cells = re.findall(r"<td( class=\"num\")?>([^<]*)</td>", html)
    numbers = [text for num, text in cells if num]
    assert numbers and not [t for num, t in cells if not num and re.fullmatch(r"[-\d.e+]+", t)]  # numbers right
    assert not [t for t in numbers if re.fullmatch(r"-?\d+\.\d+", t) and len(t.split(".")[1]) != 3]
    assert "[" not in "".join(t for _, t in cells) and "e-0" not in "".join(numbers)


def test_run_report_renders_in_headless_chromium(run_dir, tmp_path):
    """index.html in a real browser: every figure decodes, one attention view per task renders (named), the page
    is not blank."""
    from browser import ink_fraction, inspect_page

    page = run_dir / "index.html"
    html = page.read_text(encoding="utf-8")
    assert html.count(BUNDLE_MARK) == 1 and "unpkg.com" not in html  # the bundle inlined once, offline
    assert len(html) < 2_000_000  # the gzipped bundle (0.48 MB), 4 figures (~0.6 MB) and 16 small views (~0.6 MB)
    for name in ("function_vectors.csv", "accuracy/accuracy.csv", "mediation_word/attention.html"):
        assert f'href="{name}"' in html and (run_dir / name).exists()
    model = ti.load_model("icl-tiny")
    for t in model_tasks(model):
        assert f"Attention of the top heads on one {t} prompt" in html
    found, shot = inspect_page(page, tmp_path)
    n_figures = len([p for p in run_dir.rglob("*.png") if "checkpoint" not in p.parts])
    assert found["images"] == found["loaded"] == n_figures == 4, found
    assert all(w > 300 and h > 200 for w, h in found["sizes"]), found
    assert found["views"] == found["rendered"] == len(model_tasks(model)), found
    assert ink_fraction(shot) > 0.03


def test_model_card_script_measures_with_the_library(tmp_path):
    from tlens_icl.cli.card import main as card_main

    out = tmp_path / "CARD.md"
    assert card_main(["--n", "16", "--out", str(out)]) == 0
    text = out.read_text()
    for section in ("ICL accuracy", "Function vectors", "Task decodability", "bitwise family", "word family",
                    "Shuffled-label control", "zero-shot prompts share their query"):
        assert section in text


def test_report_links_are_escaped_and_the_checkpoint_is_one_link(tmp_path):
    """A file whose name holds a literal '%2F' (a checkpoint unit) is linked so that the browser's decoding of the
    href finds it; the files of checkpoint/ are one link to the folder."""
    from tlens_icl.viz.report import render_report

    unit = tmp_path / "checkpoint" / "units" / "fv_sweep%2Fbitwise_and"
    unit.mkdir(parents=True)
    (unit / "meta.json").write_text("{}")
    (tmp_path / "checkpoint" / "run.json").write_text("{}")
    odd = tmp_path / "a b&c%2Fd.csv"
    odd.write_text("x")
    html = render_report(tmp_path, title="t", files=None)
    parser = _Links()
    parser.feed(html)
    for href in parser.hrefs:
        assert (tmp_path / unquote(href)).exists(), href
    assert "a%20b%26c%252Fd.csv" in " ".join(parser.hrefs)
    assert [h for h in parser.hrefs if h.startswith("checkpoint")] == ["checkpoint/"]
    assert "2 files" in html


def test_saved_results_are_readable_by_others(tmp_path):
    import os

    from test_figures import decodability

    old = os.umask(0o022)
    try:
        decodability().save(tmp_path / "cd")
        from tlens_icl.results.checkpoint import open_checkpoint

        ck = open_checkpoint(tmp_path / "ck", "test", {"a": 1})
        ck.unit("x", lambda: torch.zeros(2))
    finally:
        os.umask(old)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".safetensors" for p in files)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in files), \
        {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
