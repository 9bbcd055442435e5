"""The top level of tlens_icl (docs/ARCHITECTURE.md, "Public API"): about 40 names, no aliases of old names or of
0.1 module paths, and ``tlens_icl.load`` reads a result whose class nothing has imported yet."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import tlens_icl

ROOT = Path(__file__).resolve().parent.parent


def test_the_top_level_is_small_and_every_name_resolves():
    assert 30 <= len(tlens_icl.__all__) <= 40, len(tlens_icl.__all__)
    for name in tlens_icl.__all__:
        obj = getattr(tlens_icl, name)
        assert obj is getattr(importlib.import_module(tlens_icl._WHERE[name]), name), name


@pytest.mark.parametrize("name", ["IndirectEffectResult", "usable_task", "model_tasks", "CORRUPTIONS", "ROLES",
                                  "function_vector_sweep", "head_overlap", "ModelStateError", "lag_scores"])
def test_names_that_left_the_top_level_are_gone_and_live_in_their_module(name):
    with pytest.raises(AttributeError):
        getattr(tlens_icl, name)
    old = subprocess.run(["git", "show", "53f0af1:tlens_icl/__init__.py"], capture_output=True, text=True, cwd=ROOT)
    if old.returncode:
        pytest.skip("no git history here")
    home = next(mod for mod, names in _old_exports(old.stdout).items() if name in names)
    assert getattr(importlib.import_module(home), name) is not None


def _old_exports(source: str) -> dict[str, tuple[str, ...]]:
    import ast

    for node in ast.parse(source).body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "_EXPORTS":
            return ast.literal_eval(node.value)
    raise AssertionError("no _EXPORTS")


@pytest.mark.parametrize("old", ["tlens_icl.pairs", "tlens_icl.evaluate", "tlens_icl.analyses.mediation"])
def test_0_1_module_paths_are_gone(old):
    sys.modules.pop(old, None)
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(old)
    with pytest.raises(AttributeError):
        getattr(tlens_icl, old.split(".")[1] if old.count(".") == 1 else "no_such")


def test_load_finds_a_result_class_that_nothing_imported():
    folder = ROOT / "studies" / "cross_model" / "gemma-3-270m" / "accuracy"
    code = ("import sys, tlens_icl\n"
            "assert 'tlens_icl.analyses.accuracy' not in sys.modules\n"
            f"r = tlens_icl.load({str(folder)!r})\n"
            "print(type(r).__module__, type(r).__name__)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["tlens_icl.analyses.accuracy", "AccuracyResult"]
