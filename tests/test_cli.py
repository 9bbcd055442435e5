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
        if name not in ("tasks", "models"):
            assert any(a.dest == "task_names" for a in sub._actions), name


def test_deprecated_task_flags_still_parse(capsys):
    args = build_parser().parse_args(["accuracy", "--tasks", "bitwise_xor", "bitwise_and"])
    from tlens_icl.cli.common import tasks_of

    assert tasks_of(args) == ["bitwise_xor", "bitwise_and"]
    assert "deprecated" in capsys.readouterr().err


def test_vectors_method_names_match_the_analysis():
    from tlens_icl.analyses.vectors.compare import METHODS
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
