"""The task library: schema validity, loading, registry, interchange with datasets, splits."""

from __future__ import annotations

import json
from collections import Counter

import jsonschema
import pytest

import tlens_icl as ti
from tlens_icl.errors import EmptyTaskError, UnknownTaskError
from tlens_icl.tasks import task_dir

SHIPPED = sorted(p.stem for p in task_dir().glob("*.json") if p.stem != "schema")


def test_library_size_and_families():
    assert len(SHIPPED) >= 45
    cats = Counter(ti.load_task(n).category for n in SHIPPED)
    for family in ("knowledge", "procedural", "bitwise", "regression", "reading", "pos", "extractive"):
        assert cats[family] >= 1, family
    assert {f"bitwise_{op}" for op in ("and", "or", "xor", "nand", "nor", "xnor")} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_task_file_valid(name):
    schema = json.loads((task_dir() / "schema.json").read_text())
    doc = json.loads((task_dir() / f"{name}.json").read_text(encoding="utf-8"))
    jsonschema.validate(doc, schema)
    task = ti.load_task(name)  # also runs TaskItem's own checks
    assert task.name == name and len(task) >= 20
    assert task.source and task.license
    keys = [(it.group, it.input) for it in task.items]
    assert len(set(keys)) == len(keys), "duplicate inputs (within a group)"
    for it in task.items:
        if it.meta.get("relevant"):
            assert it.meta["relevant"] in it.input
            assert all(d in it.input for d in it.meta.get("distractors", []))


def test_bitwise_answers_are_correct():
    ops = {"and": lambda a, b: a & b, "or": lambda a, b: a | b, "xor": lambda a, b: a ^ b,
           "nand": lambda a, b: ~(a & b), "nor": lambda a, b: ~(a | b), "xnor": lambda a, b: ~(a ^ b)}
    for op, fn in ops.items():
        task = ti.load_task(f"bitwise_{op}")
        for it in task.items:
            a, b = it.input.split()
            k = len(a)
            assert it.output == format(fn(int(a, 2), int(b, 2)) & (2**k - 1), f"0{k}b")


def test_unknown_task_suggests_close_names():
    with pytest.raises(UnknownTaskError, match="Did you mean 'bitwise_xor'"):
        ti.load_task("bitwise_xorr")
    with pytest.raises(KeyError):  # also a KeyError for dict-style callers
        ti.load_task("no_such_task_at_all")


def test_empty_task_rejected():
    with pytest.raises(EmptyTaskError):
        ti.Task.from_pairs("empty", [])
    with pytest.raises(EmptyTaskError):
        ti.Task.from_dataset({"input": [], "output": []}, "empty")
    t = ti.Task.from_pairs("t", [("x", "y")])
    with pytest.raises(EmptyTaskError):
        t.filter(lambda it: False)


def test_interchange_roundtrips(tmp_path):
    task = ti.Task.from_pairs("rt", [("a", "b"), ("c", "d"), ("e", "f")], category="custom", description="d")
    ds = task.to_dataset()
    assert ds.column_names[:2] == ["input", "output"] and ds.num_rows == 3
    back = ti.Task.from_dataset(ds, "rt", category="custom", description="d")
    assert back.items == task.items
    path = task.to_json(tmp_path / "rt.json")
    assert ti.Task.from_json(path).items == task.items
    shipped = ti.load_task("bitwise_and").to_dataset()
    assert shipped.num_rows == len(ti.load_task("bitwise_and"))


def test_register_task_makes_it_loadable(tmp_path):
    task = ti.Task.from_pairs("my_registered_task", [("a", "b"), ("c", "d")])
    ti.register_task(task)
    assert "my_registered_task" in ti.list_tasks()
    assert ti.load_task("my_registered_task") is task
    with pytest.raises(ti.TlensICLError, match="already exists"):
        ti.register_task(task)
    with pytest.raises(ti.TlensICLError, match="already exists"):
        ti.register_task(ti.Task.from_pairs("bitwise_and", [("a", "b")]))


def test_split_is_disjoint_deterministic_and_group_aware():
    task = ti.load_task("bitwise_xor")
    tr, te = task.split(0.25, seed=1)
    assert {it.input for it in tr.items}.isdisjoint({it.input for it in te.items})
    assert len(tr) + len(te) == len(task)
    assert task.split(0.25, seed=1)[1].items == te.items
    reg = ti.load_task("linear_regression")
    tr, te = reg.split(0.25, seed=0)
    assert {it.group for it in tr.items}.isdisjoint({it.group for it in te.items})


def test_list_tasks_by_category():
    bitwise = ti.list_tasks("bitwise")
    assert len(bitwise) == 6 and all(n.startswith("bitwise_") for n in bitwise)
    with pytest.raises(ti.TlensICLError):
        ti.list_tasks("nonsense")
