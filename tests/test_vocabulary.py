"""One vocabulary (docs/ARCHITECTURE.md, "Vocabulary"): every public signature is read and held to it.

The deviations still open are listed here by name; the lists may only shrink (a test fails when an entry is
no longer needed, so a fixed deviation is struck off).
"""

from __future__ import annotations

import inspect
import re
import typing

import pytest

import tlens_icl
from tlens_icl._validate import annotations, literal_options
from tlens_icl.prompts.spec import STREAMS

#: prompt counts named otherwise than ``n`` / ``n_<stream>`` (function -> parameter), still open.
OTHER_COUNTS = {("head_ablation", "loss_n"),
                ("head_dynamics", "n_corrupted")}
#: public functions taking a model that are not first-argument ``model`` yet.
MODEL_NOT_FIRST: set[str] = set()
#: a count parameter that is not a prompt count (sizes of the model, resamples, ...).
NOT_PROMPT_COUNTS = {"n_layers", "n_heads", "n_random", "n_permutations", "n_shuffles", "n_resamples", "n_devices",
                     "n_shots", "n_kept"}


def public_functions() -> dict[str, typing.Callable]:
    out = {}
    for name in tlens_icl.__all__:
        obj = getattr(tlens_icl, name)
        if inspect.isfunction(obj):
            out[name] = obj
    return out


hints = annotations  # the same reader @checked uses


def test_there_are_public_functions_to_check():
    assert len(public_functions()) >= 15


def test_model_is_the_first_parameter():
    late = {name for name, fn in public_functions().items()
            if "model" in (ps := list(inspect.signature(fn).parameters)) and ps[0] != "model"}
    assert late <= MODEL_NOT_FIRST, f"model must be the first parameter of {sorted(late - MODEL_NOT_FIRST)}"
    assert MODEL_NOT_FIRST <= late, f"fixed, strike off MODEL_NOT_FIRST: {sorted(MODEL_NOT_FIRST - late)}"


def test_one_name_for_a_prompt_count():
    allowed = {"n"} | {f"n_{s}" for s in STREAMS}
    seen = set()
    for name, fn in public_functions().items():
        for p in inspect.signature(fn).parameters:
            is_count = (p.startswith("n_") or p.endswith("_n")) and p not in NOT_PROMPT_COUNTS
            if is_count and p not in allowed:
                seen.add((name, p))
    assert seen <= OTHER_COUNTS, f"a prompt count is n or n_<stream> ({sorted(allowed)}): {sorted(seen - OTHER_COUNTS)}"
    assert OTHER_COUNTS <= seen, f"fixed, strike off OTHER_COUNTS: {sorted(OTHER_COUNTS - seen)}"


def test_n_shots_is_one_count_and_a_sweep_is_named_shots():
    for name, fn in public_functions().items():
        h = hints(fn)
        if "n_shots" in h:
            assert h["n_shots"] is int, f"{name}(n_shots=...) must be one int (a sweep is `shots`), got {h['n_shots']}"
        if "shots" in h:
            assert typing.get_origin(h["shots"]) is not None, f"{name}(shots=...) must be a sequence of ints"


def test_every_mode_is_a_literal_checked_at_the_boundary():
    """A mode parameter's allowed values live in its Literal annotation; @checked reads it (one place)."""
    modes = 0
    for name, fn in public_functions().items():
        for p, ann in hints(fn).items():
            if literal_options(ann) is not None:
                modes += 1
                assert getattr(fn, "__checked__", False), f"{name} takes the mode {p!r} but is not @checked"
    assert modes >= 5


def test_a_wrong_mode_is_refused_with_the_allowed_values(native_model):
    from conftest import without_typechecker

    with without_typechecker(), pytest.raises(tlens_icl.TlensICLError, match=r"positions must be one of \('all', "
                                                                             r"'query'\)"):
        tlens_icl.head_ablation(native_model, "antonym", {"a": tlens_icl.head_scores(native_model)},
                                positions="everywhere")


def test_the_glossary_names_every_rule():
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "ARCHITECTURE.md").read_text()
    glossary = text[text.index("## Vocabulary"):]
    for word in ("`model`", "`n`", "`n_<stream>`", "`n_shots`", "`shots`", "`seed`", "`batch_size`", "`progress`"):
        assert re.search(re.escape(word), glossary), word
