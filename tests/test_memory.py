"""Memory-bounded analyses: rows per forward from a budget, and back-off on out-of-memory without losing work.

A fake allocator (a forward pre-hook on the embedding) raises ``torch.OutOfMemoryError`` whenever a
forward carries more rows than it "has room for", from the k-th forward on - so the run is cut mid-way,
after some chunks already finished at the full size. The analysis must finish with the same numbers as a
run that never ran out of memory, re-running only the chunk that failed, with one warning.
"""
from __future__ import annotations

import warnings

import pytest
import torch

import tlens_icl as ti
from tlens_icl.engine.runs import in_chunks
from tlens_icl.models.adapter import BUDGET_ENV, memory_budget, parse_bytes


class FakeAllocator:
    """Raises OOM for forwards of more than ``room`` rows, from forward number ``after`` on."""

    def __init__(self, room: int, after: int):
        self.room, self.after, self.calls, self.ok = room, after, [], []

    def __call__(self, module, args):
        rows = args[0].shape[0]
        self.calls.append(rows)
        if len(self.calls) > self.after and rows > self.room:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (fake allocator)")
        self.ok.append(rows)

    def install(self, model):
        return model.embed.register_forward_pre_hook(self)


@pytest.fixture()
def fresh_model(tokenizer):
    """A model of its own (the back-off warning is shown once per model)."""
    from conftest import build_model

    return build_model("native", tokenizer)


@pytest.mark.parametrize("after", [0, 3])
def test_icl_accuracy_backs_off_and_equals_the_unbounded_run(fresh_model, task_a, after):
    kw = dict(shots=[0, 2], n=9, seed=0, batch_size=4)
    ref = ti.icl_accuracy(fresh_model, task_a, **kw)
    fake = FakeAllocator(room=1, after=after)
    handle = fake.install(fresh_model)
    try:
        with pytest.warns(UserWarning, match="out of memory in answer_scores with 4 rows per forward; continuing with 2"):
            got = ti.icl_accuracy(fresh_model, task_a, **kw)
    finally:
        handle.remove()
    assert torch.equal(got.correct, ref.correct) and torch.allclose(got.answer_prob, ref.answer_prob, rtol=1e-5)
    assert torch.equal(got.first_token_correct, ref.first_token_correct)
    assert torch.allclose(got.answer_logprob, ref.answer_logprob, rtol=1e-5, atol=1e-6)
    assert len(fake.calls) > len(fake.ok), "the fake allocator never ran out"
    assert sum(fake.ok) == 2 * 9, "rows were lost or computed twice"
    assert all(r <= 1 for r in fake.ok[after:]) and (after == 0 or fake.ok[0] == 4)


def test_activations_back_off_mid_run_without_losing_rows(fresh_model, task_a, task_b):
    kw = dict(shots=(2,), n=7, seed=1, sites=["resid_post", "z"], batch_size=4)
    ref = ti.task_activations(fresh_model, [task_a, task_b], **kw)
    fake = FakeAllocator(room=2, after=1)
    handle = fake.install(fresh_model)
    try:
        with pytest.warns(UserWarning, match="out of memory in collect_activations"):
            got = ti.task_activations(fresh_model, [task_a, task_b], **kw)
    finally:
        handle.remove()
    assert torch.allclose(got.resid_post, ref.resid_post, atol=1e-6) and torch.allclose(got.z, ref.z, atol=1e-6)
    assert len(fake.calls) > len(fake.ok) and sum(fake.ok) == 2 * 7 and fake.ok[0] == 4


def test_query_logits_back_off_in_the_engine_row_plan(fresh_model, task_a):
    """Rows sorted by query position and cut after it: a chunk that fails is split, each row once, in the caller's order."""
    from tlens_icl.engine.runs import query_logits

    batch = ti.make_prompts(fresh_model, task_a, n=9, n_shots=2, seed=4)
    ref = query_logits(fresh_model, batch, batch_size=4)
    fake = FakeAllocator(room=3, after=1)
    handle = fake.install(fresh_model)
    try:
        with pytest.warns(UserWarning, match="out of memory in query_logits with 4 rows per forward; continuing with 2"):
            got = query_logits(fresh_model, batch, batch_size=4)
    finally:
        handle.remove()
    assert torch.allclose(got, ref, atol=1e-5) and sum(fake.ok) == 9 and fake.ok[0] == 4 and max(fake.ok[1:]) <= 2


def test_in_chunks_keeps_finished_chunks_and_refuses_one_row_that_does_not_fit():
    done = []

    def work(sl):
        if sl.stop - sl.start > 2 and sl.start >= 4:
            raise torch.OutOfMemoryError("out of memory")
        done.append((sl.start, sl.stop))

    with pytest.warns(UserWarning, match="continuing with 2"):
        assert in_chunks(10, 4, work, what="test") == 2
    assert done == [(0, 4), (4, 6), (6, 8), (8, 10)]

    def never(sl):
        raise torch.OutOfMemoryError("out of memory")

    with pytest.raises(torch.OutOfMemoryError), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        in_chunks(3, 2, never)
    with pytest.raises(ValueError, match="boom"):  # other errors are not retried
        in_chunks(3, 2, lambda sl: (_ for _ in ()).throw(ValueError("boom")))


def test_the_budget(monkeypatch, native_model):
    assert parse_bytes("2GiB") == 2 << 30 and parse_bytes("512MiB") == 512 << 20 and parse_bytes("1.5GB") == 1_500_000_000
    monkeypatch.setenv(BUDGET_ENV, "64MiB")
    assert memory_budget(native_model) == 64 << 20
    monkeypatch.setenv(BUDGET_ENV, "lots")
    with pytest.raises(ValueError, match="not a size"):
        memory_budget(native_model)


@pytest.mark.parametrize("arch, method, route", [("llama", "fast", "kv"), ("native", "fast", "copies"),
                                                 ("native", "naive", "naive")])
def test_query_engine_backs_off_mid_run_on_every_route(tokenizer, task_a, arch, method, route):
    """The intervention engine's own chunk loop: a chunk that runs out of memory is re-run with half the rows,
    finished chunks are kept, and the effects equal an unbounded run's."""
    from conftest import build_model

    model = build_model(arch, tokenizer)  # a model of its own: the warning is shown once per model
    pairs = ti.make_prompt_pairs(model, task_a, n=9, n_shots=2, seed=2)
    heads = [(0, 1), (1, 0), (1, 3)]
    ref = ti.head_patching(model, pairs, heads=heads, method=method, batch_size=4)
    assert ref.info["engine"] == route
    fake = FakeAllocator(room=2, after=2)
    handle = fake.install(model)
    try:
        with pytest.warns(UserWarning, match="out of memory in query_interventions with 4 rows per forward; "
                                             "continuing with 2"):
            got = ti.head_patching(model, pairs, heads=heads, method=method, batch_size=4)
    finally:
        handle.remove()
    assert got.info["engine"] == route
    torch.testing.assert_close(got.effects, ref.effects, atol=1e-6, rtol=1e-5, equal_nan=True)
    torch.testing.assert_close(got.corrupted_metric, ref.corrupted_metric, atol=1e-6, rtol=1e-5)
    assert len(fake.calls) > len(fake.ok), "the fake allocator never ran out"
    assert fake.ok[:2] == [4, 4] and max(fake.ok[2:]) <= 2, "forwards ran at full size until the first failure"


def test_head_ablation_sweep_backs_off_mid_run(fresh_model, task_a):
    """The ablation sweep's chunk loop (mean ablation at every position) backs off the same way."""
    kw = dict(ks=(0, 2), n_random=0, n=7, n_shots=2, loss=False, batch_size=4)
    scores = {"a": torch.tensor([[0.1, 0.9, 0.2, 0.0], [0.8, 0.3, 0.0, 0.1]])}
    ref = ti.head_ablation(fresh_model, task_a, scores, **kw)
    fake = FakeAllocator(room=2, after=1)
    handle = fake.install(fresh_model)
    try:
        with pytest.warns(UserWarning, match="out of memory in ablation_sweep"):
            got = ti.head_ablation(fresh_model, task_a, scores, **kw)
    finally:
        handle.remove()
    assert torch.equal(got.correct.nan_to_num(-1), ref.correct.nan_to_num(-1))
    assert len(fake.calls) > len(fake.ok)
