"""ICL evaluation: accuracy equals a by-hand argmax check; results round-trip; CLI works."""

from __future__ import annotations

import torch

import tlens_icl as ti
from tlens_icl.analyses.accuracy import AccuracyResult
from tlens_icl.results.base import tensors_equal
from tlens_icl.tasks import TaskItem


def test_accuracy_matches_hand_computation(any_model, task_a):
    res = ti.icl_accuracy(any_model, task_a, shots=[0, 3], n=6, seed=1)
    for j, shots in enumerate((0, 3)):
        batch = ti.make_prompts(any_model, task_a, n=6, n_shots=shots, seed=1)
        with torch.no_grad():
            logits = any_model(batch.tokens)
        rows = torch.arange(6)
        final = logits[rows, batch.query_pos]
        assert torch.equal(res.correct[0, j], (final.argmax(-1) == batch.answer_tokens).float())
        assert torch.allclose(res.answer_prob[0, j], final.softmax(-1)[rows, batch.answer_tokens], atol=1e-5)
    df = res.to_dataframe()
    assert list(df["n_shots"]) == [0, 3] and (df["ci_low"] <= df["accuracy"]).all() and (df["accuracy"] <= df["ci_high"]).all()


def test_accuracy_counts_alternatives(native_model):
    # every item accepts every output: a random model is then "right" whenever it predicts any output token
    outs = [f"a{i}" for i in range(6)]
    items = tuple(TaskItem(f"in{i}", outs[i], tuple(o for o in outs if o != outs[i])) for i in range(6))
    task = ti.Task("alts", items)
    res = ti.icl_accuracy(native_model, task, shots=[2], n=6)
    batch = ti.make_prompts(native_model, task, n=6, n_shots=2)
    with torch.no_grad():
        pred = native_model(batch.tokens)[torch.arange(6), batch.query_pos].argmax(-1)
    allowed = set(native_model.tokenizer.convert_tokens_to_ids(outs))
    assert res.correct[0, 0].tolist() == [float(int(p) in allowed) for p in pred]


def test_result_save_load_roundtrip(native_model, task_a, tmp_path):
    res = ti.icl_accuracy(native_model, [task_a], shots=[0, 1], n=4)
    back = AccuracyResult.load(res.save(tmp_path / "acc"))
    assert tensors_equal(res, back)
    assert "<img" in res._repr_html_()


def test_cli_lists_tasks_and_shows_prompts(capsys, embedded_model):
    from tlens_icl.cli.main import main

    assert main(["tasks", "--category", "bitwise"]) == 0
    assert "bitwise_xor" in capsys.readouterr().out
    assert main(["show", "bitwise_xor", "--shots", "2", "--n", "1", "--roles"]) == 0
    out = capsys.readouterr().out
    assert "answer_position" in out and "->" in out
    assert main(["models"]) == 0 and "icl-tiny" in capsys.readouterr().out
    assert main(["show", "bitwise_xorr"]) == 2
    assert "Did you mean" in capsys.readouterr().err
