"""The command line as a user meets it: one naming, help with defaults, instant --help, --out semantics."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from tlens_icl.cli.main import build_parser, main

ROOT = Path(__file__).resolve().parent.parent


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_help_and_tasks_import_no_torch():
    code = ("import sys, contextlib, io\n"
            "from tlens_icl.cli.main import build_parser, main\n"
            "p = build_parser()\n"
            "for name in ['run', 'mediate', 'vectors', 'decodability', 'attention-ratio']:\n"
            "    with contextlib.redirect_stdout(io.StringIO()):\n"
            "        try: p.parse_args([name, '--help'])\n"
            "        except SystemExit: pass\n"
            "with contextlib.redirect_stdout(io.StringIO()) as buf: main(['tasks'])\n"
            "assert 'bitwise_xor' in buf.getvalue()\n"
            "heavy = [m for m in ('torch', 'transformer_lens', 'transformers', 'matplotlib') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr


def test_import_tlens_icl_is_lazy():
    run = subprocess.run([sys.executable, "-c", "import sys, tlens_icl; tlens_icl.Task; tlens_icl.list_tasks();"
                          "assert 'torch' not in sys.modules; assert tlens_icl.indirect_effect.__name__ == "
                          "'indirect_effect'; assert 'torch' in sys.modules; print(len(tlens_icl.__all__))"],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    import tlens_icl

    for name in tlens_icl.__all__:  # every public name resolves
        assert getattr(tlens_icl, name) is not None, name
    with pytest.raises(AttributeError):
        tlens_icl.no_such_name  # noqa: B018


def test_every_option_has_help_and_shows_its_default():
    for name, sub in _subparsers(build_parser()).items():
        text = sub.format_help()
        for action in sub._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
            d = action.default
            if action.option_strings and d not in (None, False, True, [], "") and "%(default)" not in action.help:
                shown = " ".join(map(str, d)) if isinstance(d, (list, tuple)) else str(d)
                assert f"(default: {shown})" in " ".join(text.split()), f"{name} {action.option_strings}: default"


def test_tasks_are_positional_in_every_subcommand():
    for name, sub in _subparsers(build_parser()).items():
        flags = {s for a in sub._actions for s in a.option_strings if a.help != argparse.SUPPRESS}
        assert not flags & {"--task", "--tasks"}, name
        if name not in ("tasks", "models", "study", "study-table", "forming"):  # the studies' tasks are their protocol's
            assert any(a.dest == "task_names" for a in sub._actions), name


def test_deprecated_task_flags_still_parse(capsys):
    args = build_parser().parse_args(["accuracy", "--tasks", "bitwise_xor", "bitwise_and"])
    from tlens_icl.cli.common import tasks_of

    assert tasks_of(args) == ["bitwise_xor", "bitwise_and"]
    assert "deprecated" in capsys.readouterr().err


def test_vectors_method_names_match_the_analysis():
    from tlens_icl.workflows.compare import METHODS
    from tlens_icl.cli.vectors import METHOD_NAMES

    assert tuple(METHOD_NAMES) == tuple(METHODS)


def test_out_refuses_a_non_empty_folder_before_any_work(tmp_path, capsys, monkeypatch):
    (tmp_path / "old.txt").write_text("x")
    monkeypatch.setattr("tlens_icl.models.load_model", lambda name: pytest.fail("model loaded"))
    for argv in (["run"], ["accuracy", "bitwise_xor"], ["mediate", "bitwise_xor"], ["decodability", "bitwise_and"],
                 ["vectors", "uppercase"], ["attention-ratio", "bitwise_xor"]):
        assert main([*argv, "--out", str(tmp_path)]) == 2
        assert "not empty" in capsys.readouterr().err and "--overwrite" not in (tmp_path / "old.txt").read_text()


def test_out_with_overwrite_writes_report(tmp_path, capsys):
    (tmp_path / "old.txt").write_text("x")
    assert main(["accuracy", "bitwise_xor", "--shots", "0", "2", "--n", "6", "--out", str(tmp_path), "--overwrite"]) == 0
    names = {p.name for p in tmp_path.iterdir()}
    assert {"index.html", "accuracy.png", "accuracy.csv", "meta.json", "old.txt"} <= names
    html = (tmp_path / "index.html").read_text()
    assert "accuracy.csv" in html and "data:image/png;base64," in html and "bitwise_xor" in html


def test_accuracy_on_a_task_the_embedded_model_never_saw_says_so(capsys):
    assert main(["accuracy", "antonym", "--shots", "0", "--n", "4"]) == 0
    err = capsys.readouterr().err
    assert "was not trained on antonym" in err and "bitwise_xor" in err


def test_attention_ratio_default_prints_no_nan(capsys):
    assert main(["attention-ratio", "bitwise_xor", "--n", "4"]) == 0
    out = capsys.readouterr().out
    assert "nan" not in out.lower() and "1-shot: share on demo_output per layer" in out
    assert main(["attention-ratio", "bitwise_xor", "--n", "4", "--shots", "0", "2"]) == 0
    out = capsys.readouterr().out
    assert "0-shot" in out and "n/a" in out and "nan" not in out.lower()  # no demonstrations at 0 shots: said so


# ---- every choice is checked before the model loads (issue 24) ----------------------------------------------
#: Options that take any value of their type (a path, a name resolved by the loader, a seed), with why.
FREE = {"--model": "resolved by the model loader", "--out": "checked before any work (test above)", "--seed": "any int",
        "--models": "a folder for trained seeds, created when missing"}


def _bad_value(action: argparse.Action) -> str:
    return "-7" if getattr(action.type, "__name__", "").startswith("int") or action.type in (int, float) else "bogus_x"


def test_every_option_refuses_a_bad_value_before_the_model_loads(monkeypatch, capsys):
    """For each subcommand and each option that takes a value, a bad value (a negative count, an unknown name)
    is refused with exit status 2, naming the option or value, and no model is loaded."""
    monkeypatch.setattr("tlens_icl.models.load_model", lambda *a, **k: pytest.fail("model loaded"))
    monkeypatch.setattr("tlens_icl.models.loading.load_model", lambda *a, **k: pytest.fail("model loaded"))
    task_for = {"attention-ratio": ["bitwise_xor"], "show": ["bitwise_xor"]}
    checked = 0
    for name, sub in _subparsers(build_parser()).items():
        for action in sub._actions:
            opt = next((o for o in action.option_strings if o.startswith("--")), None)
            if opt is None or action.nargs == 0 or opt in FREE or action.help == argparse.SUPPRESS:
                continue
            bad = _bad_value(action)
            argv = [name, *task_for.get(name, ["bitwise_xor"] if name not in ("tasks", "models", "forming") else []), opt, bad]
            try:
                code = main(argv)
            except SystemExit as e:
                code = e.code
            err = capsys.readouterr().err
            assert code == 2, f"{' '.join(argv)}: accepted (exit {code})"
            assert opt in err or bad in err, f"{' '.join(argv)}: the error does not name the option: {err!r}"
            checked += 1
    assert checked > 40


def test_unknown_task_is_refused_before_loading_and_without_the_training_note(monkeypatch, capsys):
    monkeypatch.setattr("tlens_icl.models.load_model", lambda *a, **k: pytest.fail("model loaded"))
    for argv in (["accuracy", "bitwise_xr"], ["mediate", "bitwise_xr"], ["run", "bitwise_xr"],
                 ["attention-ratio", "bitwise_xr"], ["mediate", "bitwise_xor", "--corruption", "other_task_labels",
                                                       "--other-task", "bitwise_xr"]):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
        err = capsys.readouterr().err
        assert code == 2 and "Unknown task 'bitwise_xr'" in err and "bitwise_xor" in err, (argv, err)
        assert "was not trained" not in err, err


def test_resume_is_suggested_only_where_the_command_has_it(tmp_path, capsys, monkeypatch):
    (tmp_path / "old.txt").write_text("x")
    monkeypatch.setattr("tlens_icl.models.load_model", lambda *a, **k: pytest.fail("model loaded"))
    for argv, resumable in ((["run"], True), (["mediate", "bitwise_xor"], True), (["accuracy", "bitwise_xor"], False),
                            (["vectors", "uppercase"], False), (["decodability", "bitwise_and"], False)):
        assert main([*argv, "--out", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert "not empty" in err and ("--resume" in err) == resumable, (argv, err)
        help_text = _subparsers(build_parser())[argv[0]].format_help()
        assert ("--resume" in help_text) == resumable


def test_run_is_sized_by_the_options_run_pipeline_takes(monkeypatch, capsys):
    import inspect

    import tlens_icl.workflows.pipeline as pipeline

    seen = {}

    def fake_run(model, **kwargs):
        seen.update(kwargs)
        raise SystemExit(0)

    monkeypatch.setattr(pipeline, "run_pipeline", fake_run)
    monkeypatch.setattr(sys.modules["tlens_icl.cli.main"], "load_model_for", lambda args, tasks: object())
    with pytest.raises(SystemExit):
        main(["run", "--shots", "4", "--n", "12", "--n-mean", "9", "--n-corrupted", "5", "--k", "3", "--seed", "2"])
    assert {k: seen[k] for k in ("n_shots", "n", "n_mean", "n_corrupted", "k", "seed")} == \
        {"n_shots": 4, "n": 12, "n_mean": 9, "n_corrupted": 5, "k": 3, "seed": 2}
    sizes = {p for p in inspect.signature(pipeline.run_pipeline).parameters if p.startswith("n") or p in ("k", "seed")}
    assert sizes <= set(seen), sizes - set(seen)


def test_cli_vocabularies_match_the_library():
    from tlens_icl.analyses.representations.activations import SITES
    from tlens_icl.cli import common
    from tlens_icl.engine.scoring import METRICS
    from tlens_icl.prompts.batch import ROLES
    from tlens_icl.prompts.pairs import CORRUPTIONS
    from tlens_icl.prompts.templates import _TEMPLATES

    assert set(common.CORRUPTION_NAMES) == set(CORRUPTIONS) - {"identity"}
    assert set(common.SITE_NAMES) == set(SITES)
    assert set(common.AIE_METRIC_NAMES) == set(METRICS) - {"logit_diff"}
    assert set(common.REGION_ROLES) == set(ROLES) - {"pad", "answer"}
    assert set(common.TEMPLATE_NAMES) <= set(_TEMPLATES)
