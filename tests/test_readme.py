"""Every code block of README.md runs as written, in order, on the embedded model.

Python blocks run in one shared namespace (like a notebook). A block whose first line is
``# needs: <model>`` runs only where ``tlens_icl.load_model(<model>)`` succeeds, and is reported as skipped
otherwise; a block that needs a real LLM (SmolLM2, Gemma 3, Qwen2.5) runs in the ``real_llm`` tier instead, on
its own (``ti`` imported), so the rest of the README is checked without downloading a model. In bash blocks every ``tlens-icl ...`` line runs through the CLI's ``main`` (exit code 0; a line
whose comment says ``needs: <model>`` likewise only where that model loads); the
two install commands at the top are CI itself (``.ci/run`` runs the test command verbatim, checked in
tests/test_notebooks.py) and the main job they start is ``tests/test_pipeline.py``. Everything runs in a
temporary folder, so the README's ``outputs/...`` paths are created there.
"""

from __future__ import annotations

import re
import shlex
import warnings
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
NEEDS = re.compile(r"^#\s*needs:\s*(\S+)")


def blocks(language: str) -> list[tuple[int, str]]:
    """``(line number, code)`` of every fenced block in ``language``."""
    text = README.read_text(encoding="utf-8")
    return [(text[: m.start()].count("\n") + 1, m.group(2)) for m in FENCE.finditer(text) if m.group(1) == language]


def _real_llm(name: str) -> bool:
    from tlens_icl.models.gguf import DOWNLOADS

    return name in DOWNLOADS


def _model_loads(name: str) -> bool:
    import tlens_icl

    try:
        tlens_icl.load_model(name)
    except Exception:  # noqa: BLE001 - any failure means "not available here"
        return False
    return True


def test_readme_has_python_and_cli_blocks():
    assert len(blocks("python")) >= 6 and len(blocks("bash")) >= 3


def test_every_python_block_runs(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    skipped = []
    for line, code in blocks("python"):
        need = NEEDS.match(code.lstrip())
        if need and _real_llm(need.group(1)):
            continue  # test_real_llm_blocks_run
        if need and not _model_loads(need.group(1)):
            skipped.append(f"README.md:{line} needs {need.group(1)}")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                exec(compile(code, f"README.md:{line}", "exec"), namespace)
        except Exception as e:  # noqa: BLE001 - report which block failed
            pytest.fail(f"the README block at line {line} failed: {type(e).__name__}: {e}")
        finally:
            plt.close("all")
    if skipped:
        warnings.warn("README blocks not run here: " + "; ".join(skipped), stacklevel=1)
    check_readme_claims(namespace)


@pytest.mark.real_llm
def test_real_llm_blocks_run(tmp_path, monkeypatch):
    """The README blocks on a real LLM (``# needs: smollm2-135m``, ...), each on its own with ``ti`` imported."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.chdir(tmp_path)
    needing = [(line, code, m.group(1)) for line, code in blocks("python")
               if (m := NEEDS.match(code.lstrip())) and _real_llm(m.group(1))]
    assert needing, "the README has no block on a real LLM"
    ran = 0
    for line, code, name in needing:
        if not _model_loads(name):
            continue
        namespace: dict = {"__name__": "__readme__"}
        exec("import tlens_icl as ti", namespace)
        try:
            exec(compile(code, f"README.md:{line}", "exec"), namespace)
        except Exception as e:  # noqa: BLE001 - report which block failed
            pytest.fail(f"the README block at line {line} failed: {type(e).__name__}: {e}")
        finally:
            plt.close("all")
        ran += 1
    if not ran:
        pytest.skip(f"none of {sorted({n for _, _, n in needing})} can be loaded here")


def check_readme_claims(ns: dict) -> None:
    """What the README's comments say about outputs is what the code returns."""
    model, aie = ns["model"], ns["aie"]
    top, mean = aie.top_heads(4), aie.mean()
    assert all(float(mean[a]) >= float(mean[b]) for a, b in zip(top, top[1:]))          # "largest AIE first"
    decoded = ns["fv"].decode(model, 5)
    assert len(decoded) == 5 and all(isinstance(t, str) and isinstance(x, float) for t, x in decoded)
    assert model.to_string(ns["ids"][0]) == "<bos> cat -> CAT"                            # the quoted generation
    assert ns["combined"].task == "uppercase+capitalize"
    assert list(ns["lo"].shape) == list(ns["hi"].shape) == list(mean.shape) == [4, 8]
    assert len(repr(ns["acc"]).splitlines()) <= 4 and "tensor(" not in repr(ns["acc"])      # "a compact repr"


def test_every_cli_line_runs(tmp_path, monkeypatch, capsys):
    from tlens_icl.cli.main import main

    monkeypatch.chdir(tmp_path)
    lines = [(line, cmd) for line, code in blocks("bash") for cmd in code.splitlines()
             if cmd.startswith("tlens-icl ")]
    assert len(lines) >= 8
    for line, cmd in lines:
        need = re.search(r"needs:\s*(\S+)", cmd)
        if need and not _model_loads(need.group(1)):
            continue  # e.g. training checkpoints that a fresh clone does not have
        argv = shlex.split(cmd.split("  #")[0].split(" # ")[0])[1:]
        code = main(argv)
        out = capsys.readouterr()
        assert code == 0, f"README.md:{line}: `{cmd}` exited {code}: {out.err[-500:]}"
        assert "nan" not in out.out.split(), f"README.md:{line}: `{cmd}` printed nan"


def test_result_surface_table_lists_every_result_and_view():
    """The README's 'what each result adds' table names every Result class, whether `.table()` is a pivot,
    the functions that make it (top level or in their module, returning the class) and each public method the
    class adds to the base surface."""
    import importlib
    import inspect
    import pkgutil
    import sys

    import tlens_icl
    from tlens_icl.results.base import Result

    for m in pkgutil.walk_packages(tlens_icl.__path__, "tlens_icl."):
        if not any(part in m.name for part in (".cli", ".embedded", "__main__")):
            importlib.import_module(m.name)

    def subclasses(c):
        for s in c.__subclasses__():
            yield s
            yield from subclasses(s)

    #: a maker that is not at the top level is found in the module that defines it (docs/ARCHITECTURE.md)
    defined = {name: obj for mod in list(sys.modules.values()) if getattr(mod, "__name__", "").startswith("tlens_icl.")
               for name, obj in vars(mod).items() if inspect.isfunction(obj) and obj.__module__ == mod.__name__}
    text = README.read_text()
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(\w+)` \|.*$", text, re.M)}
    base = set(dir(Result))
    classes = {c for c in subclasses(Result) if c.__module__.startswith("tlens_icl.")}
    assert classes, "no Result classes found"
    for cls in classes:
        assert cls.__name__ in rows, f"README result table lacks {cls.__name__}"
        cells = [c.strip() for c in rows[cls.__name__].strip("|").split("|")]
        makers, table_cell, views = cells[1], cells[2], cells[3]
        own = {n for n in dir(cls) if not n.startswith("_") and n not in base
               and inspect.isfunction(inspect.getattr_static(cls, n))}
        listed = set(re.findall(r"`(\w+)`", views))
        assert listed == own, f"{cls.__name__}: README lists {sorted(listed)}, the class adds {sorted(own)}"
        assert (cls.table is not Result.table) == ("to_dataframe" not in table_cell), cls.__name__
        for fn in re.findall(r"`(\w+)`", makers):
            maker = getattr(tlens_icl, fn, None) if fn in tlens_icl.__all__ else defined.get(fn)
            assert callable(maker), f"{fn} (README, {cls.__name__}) is neither tlens_icl.{fn} nor defined in a module"
            returns = str(inspect.signature(maker).return_annotation)
            assert cls.__name__ in returns, f"{fn} (README, {cls.__name__}) returns {returns}"
