"""Resumable long runs (``tlens_icl.results.checkpoint``): units written at once, loaded on a re-run.

The defining property: a run interrupted after unit k and re-run with the same arguments computes only
the units not yet finished and returns a result bit-identical to a run that was never interrupted.
"""
from __future__ import annotations

import json

import pytest
import torch

import tlens_icl as ti
from tlens_icl.errors import CheckpointMismatchError, ResultFileError, TlensICLError
from tlens_icl.models.loading import model_tasks
from tlens_icl.results.checkpoint import Checkpoint, NoCheckpoint, open_checkpoint


def _same(a, b) -> bool:
    """Exact equality of nested unit values (dtype, shape and bits of every tensor; NaN equal to NaN)."""
    if isinstance(a, torch.Tensor):
        return (isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape
                and torch.equal(a.view(torch.uint8) if a.dtype != torch.bool else a,
                                b.view(torch.uint8) if b.dtype != torch.bool else b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and a != a:
        return isinstance(b, float) and b != b
    return type(a) is type(b) and a == b


def test_a_unit_round_trips_exactly(tmp_path):
    value = {"z": torch.randn(3, 4, dtype=torch.bfloat16), "effects": torch.tensor([1.5, float("nan"), -0.0]),
             "kept": torch.tensor([0, 2, 5]), "mask": torch.tensor([True, False]), "n": 7, "name": "toy/a b",
             "pair": (0.1, None, [1, 2]), "nan": float("nan"), "nested": {"t": torch.zeros(0, 2)}}
    ck = Checkpoint(tmp_path, {"analysis": "test"})
    calls = []
    first = ck.unit("task 1/mean", lambda: calls.append(1) or value)
    again = Checkpoint(tmp_path, {"analysis": "test"}).unit("task 1/mean", lambda: calls.append(1) or value)
    assert calls == [1] and first is value and _same(again, value)
    assert Checkpoint(tmp_path, {"analysis": "test"}).done() == ["task 1/mean"]


def test_a_unit_that_fails_leaves_nothing_behind(tmp_path):
    ck = Checkpoint(tmp_path, {"analysis": "test"})
    ck.unit("a", lambda: torch.ones(2))

    def boom():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ck.unit("b", boom)
    assert ck.done() == ["a"]
    assert sorted(p.name for p in (tmp_path / "units").iterdir()) == ["a.safetensors"]


def test_another_run_in_the_same_folder_is_refused_naming_the_difference(tmp_path):
    open_checkpoint(tmp_path, "indirect_effect", {"n_mean": 10, "tasks": ["a", "b"]})
    with pytest.raises(CheckpointMismatchError, match=r"arguments\.n_mean: 10 -> 20"):
        open_checkpoint(tmp_path, "indirect_effect", {"n_mean": 20, "tasks": ["a", "b"]})
    with pytest.raises(CheckpointMismatchError, match="analysis"):
        open_checkpoint(tmp_path, "pipeline", {"n_mean": 10, "tasks": ["a", "b"]})
    assert json.loads((tmp_path / "run.json").read_text())["arguments"]["n_mean"] == 10


def test_the_model_is_part_of_the_run(tmp_path, native_model):
    open_checkpoint(tmp_path, "x", {}, native_model)
    open_checkpoint(tmp_path, "x", {}, native_model)
    with pytest.raises(CheckpointMismatchError, match="run.model"):
        open_checkpoint(tmp_path, "x", {}, ti.load_model("icl-tiny"))


def test_a_damaged_unit_is_reported_not_silently_recomputed(tmp_path):
    ck = Checkpoint(tmp_path, {"analysis": "test"})
    ck.unit("a", lambda: torch.ones(2))
    (tmp_path / "units" / "a.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ResultFileError, match="delete it to recompute"):
        Checkpoint(tmp_path, {"analysis": "test"}).unit("a", lambda: torch.ones(2))


def test_bad_values_and_keys_are_refused(tmp_path):
    ck = Checkpoint(tmp_path, {"analysis": "test"})
    with pytest.raises(TlensICLError, match="cannot hold a object"):
        ck.unit("a", lambda: {"x": object()})
    with pytest.raises(TlensICLError, match="non-empty string"):
        ck.unit("", lambda: 1)
    assert ck.done() == []


def test_without_a_folder_everything_is_computed():
    ck = open_checkpoint(None, "x", {})
    assert isinstance(ck, NoCheckpoint)
    assert ck.unit("a", lambda: 3) == 3 and ck.unit("a", lambda: 4) == 4 and ck.computed == 2 and ck.done() == []


# ---- the 18-task universal-head scan, cut short and resumed ---------------------------------------------
class Interrupted(Exception):
    pass


def _interrupt_after(monkeypatch, module, name, k):
    """Make ``module.name`` raise on its (k+1)-th call; returns the list counting calls."""
    calls = []
    real = getattr(module, name)

    def wrapped(*args, **kwargs):
        if len(calls) == k:
            raise Interrupted(f"injected after unit {k}")
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)
    return calls


@pytest.mark.parametrize("k", [0, 3, 5])
def test_an_interrupted_scan_resumes_to_the_bit_identical_result(native_model, task_a, task_b, tmp_path, monkeypatch, k):
    from tlens_icl.analyses.causal import mediation
    from tlens_icl.results.base import tensors_equal

    kw = dict(n_mean=4, n=5, n_shots=2, seed=3, batch_size=2, corruption="shuffled_labels")
    tasks = [task_a, task_b]
    uninterrupted = ti.indirect_effect(native_model, tasks, checkpoint=tmp_path / "a", **kw)
    # Units: per task one mean/clean unit and ceil(5 / 2) = 3 patch chunks -> 8 units.
    assert len(Checkpoint(tmp_path / "a", json.loads((tmp_path / "a" / "run.json").read_text())).done()) == 8
    with monkeypatch.context() as m:
        _interrupt_after(m, mediation, "_patch_chunk", k)
        with pytest.raises(Interrupted):
            ti.indirect_effect(native_model, tasks, checkpoint=tmp_path / "b", **kw)
    run = json.loads((tmp_path / "b" / "run.json").read_text())
    done = Checkpoint(tmp_path / "b", run).done()
    assert sum(key.split("/")[1] == "patch" for key in done) == k  # every finished chunk was kept
    with monkeypatch.context() as m:
        patched = _interrupt_after(m, mediation, "_patch_chunk", 10**6)
        means = _interrupt_after(m, mediation, "_mean_and_clean", 10**6)
        resumed = ti.indirect_effect(native_model, tasks, checkpoint=tmp_path / "b", **kw)
    assert len(patched) == 6 - k, "finished chunks were recomputed (or unfinished ones skipped)"
    assert len(means) == 2 - sum(key.endswith("/mean") for key in done)
    assert tensors_equal(resumed, uninterrupted)
    # ... and a checkpoint changes nothing: the same call without a folder gives the same numbers.
    assert tensors_equal(ti.indirect_effect(native_model, tasks, **kw), uninterrupted)


def test_resuming_with_other_arguments_is_refused(native_model, task_a, tmp_path):
    kw = dict(n_mean=2, n=2, n_shots=2, batch_size=2)
    ti.indirect_effect(native_model, task_a, checkpoint=tmp_path, seed=0, **kw)
    with pytest.raises(CheckpointMismatchError, match="prompts"):
        ti.indirect_effect(native_model, task_a, checkpoint=tmp_path, seed=1, **kw)


def test_the_main_job_resumes_after_an_interruption(tmp_path, monkeypatch):
    """run_pipeline on the embedded model, cut in the middle of its function-vector sweeps, then resumed."""
    from tlens_icl.workflows import pipeline
    from tlens_icl.results.base import tensors_equal

    model = ti.load_model("icl-tiny")
    tasks = model_tasks(model, "bitwise")[:2] + model_tasks(model, "word")[:2]
    kw = dict(tasks=tasks, n=6, n_mean=3, n_corrupted=3, n_shots=5, k=3, seed=1)
    whole = pipeline.run_pipeline(model, checkpoint=tmp_path / "a", **kw)
    n_tasks = len(whole["fv_sweeps"])
    with monkeypatch.context() as m:
        _interrupt_after(m, pipeline, "function_vector_sweep", 2)
        with pytest.raises(Interrupted):
            pipeline.run_pipeline(model, checkpoint=tmp_path / "b", **kw)
    with monkeypatch.context() as m:
        sweeps = _interrupt_after(m, pipeline, "function_vector_sweep", 10**6)
        accuracy = _interrupt_after(m, pipeline, "icl_accuracy", 10**6)
        from tlens_icl.analyses.causal import mediation
        patched = _interrupt_after(m, mediation, "_patch_chunk", 10**6)
        resumed = pipeline.run_pipeline(model, checkpoint=tmp_path / "b", **kw)
    assert len(sweeps) == 2 * n_tasks - 2 and len(patched) == 0  # only the unfinished sweeps (validation, test) ran again
    assert len(accuracy) == 1  # the call runs, but every (task, shots) unit is loaded
    assert tensors_equal(resumed["accuracy"], whole["accuracy"])
    for fam in whole["mediation"]:
        assert tensors_equal(resumed["mediation"][fam], whole["mediation"][fam])
    for t in whole["fv_sweeps"]:
        assert tensors_equal(resumed["fv_sweeps"][t], whole["fv_sweeps"][t])
    assert resumed["fv_layer"] == whole["fv_layer"] and resumed["fv_table"].equals(whole["fv_table"])


def test_cli_resume_flags(tmp_path, capsys):
    from tlens_icl.cli.main import main

    (tmp_path / "x").write_text("an earlier run")
    assert main(["mediate", "uppercase", "--n-mean", "2", "--n-corrupted", "2", "--out", str(tmp_path)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["run", "--out", str(tmp_path), "--resume", "--overwrite"]) == 2
    assert "Pass one of them" in capsys.readouterr().err
