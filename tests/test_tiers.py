"""The test tiers (pytest markers ``slow``, ``real_llm``, ``tl3``, ``notebook``) stay true to what they name.

``real_llm`` is kept honest twice: at run time, ``conftest._real_llm_guard`` fails any test that loads a named
real LLM without the marker (before a download starts); and here, statically, every test module that names a
real LLM or a notebook's ``requires_model`` must apply the marker, or say below why it needs none.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TIERS = ("slow", "real_llm", "tl3", "notebook")
#: Modules that name a real LLM without loading one, and why.
NAMES_ONLY = {
    "test_models.py": "checks SmolLM2's entry in list_models() (a table); loads only in-memory and fake models",
    "test_gguf.py": "checks the pinned download table; loads a fake model split over fake wheels",
    "test_notebook_text.py": "reads the notebooks' text",
    "test_tiers.py": "checks that the guard refuses an unmarked load, before anything is downloaded",
    "test_public_api.py": "loads a stored study result of Gemma from studies/ (a file), never the model",
}


def test_tiers_are_registered_documented_and_all_run_by_default(pytestconfig):
    registered = {m.split(":")[0].strip() for m in pytestconfig.getini("markers")}
    addopts = pytestconfig.getini("addopts")
    assert set(TIERS) <= registered and "--strict-markers" in addopts
    assert "-m" not in addopts  # nothing deselected by default
    readme = (ROOT / "README.md").read_text()
    test_command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    runs = re.findall(r"-m pytest([^&]*)", test_command)
    assert len(runs) == 2 and not any(" -m " in f" {args} " for args in runs), runs  # every tier runs
    development = readme[readme.index("## Development"):]
    for tier in TIERS:
        assert f'-m {tier}' in development or f'-m "not {tier}"' in development, f"README: how to run {tier}"


def test_an_unmarked_test_cannot_load_a_real_llm():
    import tlens_icl as ti

    with pytest.raises(pytest.fail.Exception, match="not marked real_llm"):
        ti.load_model("smollm2-135m")  # refused before any download


def test_modules_that_name_a_real_llm_carry_the_marker():
    from tlens_icl.models.gguf import DOWNLOADS

    names = re.compile("|".join(re.escape(n) for n in [*DOWNLOADS, "requires_model"]))
    unmarked = []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        text = path.read_text()
        if names.search(text) and "pytest.mark.real_llm" not in text and path.name not in NAMES_ONLY:
            unmarked.append(str(path.relative_to(ROOT)))
    assert not unmarked, f"these name a real LLM but mark no test real_llm (or add them to NAMES_ONLY): {unmarked}"
    stale = [name for name in NAMES_ONLY if not (ROOT / "tests" / name).is_file()]
    assert not stale, f"NAMES_ONLY lists missing modules: {stale}"


def test_real_llm_notebooks_are_in_the_real_llm_tier():
    from test_notebooks import RUNS, required_model

    marked = {p.id: any(m.name == "real_llm" for m in p.marks) for p in RUNS}
    assert marked == {p.values[0].stem: bool(required_model(p.values[0])) for p in RUNS}
    assert any(marked.values()) and not all(marked.values())


def test_every_slow_name_still_names_a_test_or_fixture():
    from conftest import SLOW

    for module, names in SLOW.items():
        text = (ROOT / "tests" / module).read_text()
        for name in names:
            name = name.removeprefix("fixture:")
            assert re.search(rf"^def {name}\(", text, re.M), f"conftest.SLOW: {module} no longer defines {name}"
