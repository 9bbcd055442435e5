"""Prompt pairs: determinism, corruption semantics, token roles, alignment, bad input."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

import tlens_icl as ti
from tlens_icl.errors import EmptyTaskError, ModelStateError, PairMismatchError, PromptError, TlensICLError
from tlens_icl.prompts.batch import ROLE_ID, PromptBatch
from tlens_icl.prompts.pairs import PromptPairBatch, usable_task


def demo_outputs(batch: PromptBatch, model, row: int, role: str = "demo_output") -> list[str]:
    """Demo output (or input) strings of one row, read back from the token roles."""
    out: dict[int, list[int]] = {}
    for tok, r, d in zip(batch.tokens[row].tolist(), batch.roles[row].tolist(), batch.demo_index[row].tolist()):
        if r == ROLE_ID[role]:
            out.setdefault(d, []).append(tok)
    return [model.tokenizer.decode(v).strip() for _, v in sorted(out.items())]


def test_same_seed_same_prompts_different_seed_different(native_model, task_a):
    a = ti.make_prompt_pairs(native_model, task_a, n=6, n_shots=4, seed=3)
    b = ti.make_prompt_pairs(native_model, task_a, n=6, n_shots=4, seed=3)
    c = ti.make_prompt_pairs(native_model, task_a, n=6, n_shots=4, seed=4)
    assert a.clean.prompts == b.clean.prompts and a.corrupted.prompts == b.corrupted.prompts
    assert torch.equal(a.clean.tokens, b.clean.tokens)
    assert a.clean.prompts != c.clean.prompts


def test_queries_do_not_depend_on_shots(native_model, task_a):
    p0 = ti.make_prompts(native_model, task_a, n=8, n_shots=0, seed=1)
    p5 = ti.make_prompts(native_model, task_a, n=8, n_shots=5, seed=1)
    assert [q.input for q in p0.queries] == [q.input for q in p5.queries]


# Corruption semantics on single-token labels (word-level model); labels of different BPE lengths are issue 9's.
def test_shuffled_labels_permute_demo_outputs(word_model, word_task_a):
    native_model, task_a = word_model, word_task_a
    pairs = ti.make_prompt_pairs(native_model, task_a, n=8, n_shots=5, corruption="shuffled_labels", seed=0)
    assert pairs.aligned
    for i in range(len(pairs)):
        clean, corr = demo_outputs(pairs.clean, native_model, i), demo_outputs(pairs.corrupted, native_model, i)
        assert Counter(clean) == Counter(corr)          # same labels ...
        assert all(x != y for x, y in zip(clean, corr))  # ... none in its own place (cyclic permutation)
    assert torch.equal(pairs.clean.answer_tokens, pairs.corrupted.answer_tokens)
    assert torch.equal(pairs.clean.query_pos, pairs.corrupted.query_pos)


def test_random_and_other_task_labels(word_model, word_task_a, word_task_b):
    native_model, task_a, task_b = word_model, word_task_a, word_task_b
    truth = {it.input: it.output for it in task_a.items}
    pairs = ti.make_prompt_pairs(native_model, task_a, n=6, n_shots=4, corruption="random_labels", seed=0)
    assert pairs.aligned
    for i in range(len(pairs)):
        for y in demo_outputs(pairs.corrupted, native_model, i):
            assert y in task_a.outputs
        inputs = demo_outputs(pairs.corrupted, native_model, i, role="demo_input")
        assert all(truth[x] != y for x, y in zip(inputs, demo_outputs(pairs.corrupted, native_model, i)))
    other = ti.make_prompt_pairs(native_model, task_a, n=4, n_shots=3, corruption="other_task_labels", other_task=task_b)
    for i in range(len(other)):
        assert all(y.startswith("b") for y in demo_outputs(other.corrupted, native_model, i))
    with pytest.raises(TlensICLError, match="other_task"):
        ti.make_prompt_pairs(native_model, task_a, n=2, n_shots=2, corruption="other_task_labels")


def test_identity_zero_shot_and_corrupted_query(word_model, word_task_a):
    native_model, task_a = word_model, word_task_a
    same = ti.make_prompt_pairs(native_model, task_a, n=4, n_shots=3, corruption="identity")
    assert torch.equal(same.clean.tokens, same.corrupted.tokens) and same.aligned
    zs = ti.make_prompt_pairs(native_model, task_a, n=4, n_shots=3, corruption="zero_shot")
    assert not zs.aligned
    assert (zs.corrupted.mask("demo_output").sum() == 0) and torch.equal(zs.clean.answer_tokens, zs.corrupted.answer_tokens)
    with pytest.raises(PairMismatchError, match="position='query'"):
        zs.require_aligned("patching every position")
    cq = ti.make_prompt_pairs(native_model, task_a, n=4, n_shots=3, corruption="corrupted_query")
    assert cq.aligned and (cq.clean.answer_tokens != cq.corrupted.answer_tokens).all()


@pytest.mark.parametrize("template", ["qa", "arrow"])
def test_roles_and_query_position(any_model, task_a, template):
    n_shots = 3
    pairs = ti.make_prompt_pairs(any_model, task_a, n=5, n_shots=n_shots, template=template, seed=2)
    b = pairs.clean
    lengths = b.attention_mask.sum(1)
    assert torch.equal(b.query_pos, lengths - 1)
    rows = torch.arange(len(b))
    assert (b.roles[rows, b.query_pos] == ROLE_ID["answer_position"]).all()
    assert b.prepend_bos == any_model.cfg.default_prepend_bos  # None follows the model (Pythia: no BOS)
    assert ((b.roles[:, 0] == ROLE_ID["bos"]) == b.prepend_bos).all()
    for i in range(len(b)):
        n = int(lengths[i])
        demos = b.demo_index[i, :n][b.roles[i, :n] == ROLE_ID["demo_output"]].unique()
        assert demos.tolist() == list(range(n_shots))
        q_tok = b.tokens[i][b.roles[i] == ROLE_ID["query_input"]]
        assert any_model.tokenizer.decode(q_tok).strip() == b.queries[i].input
    # the answer token is what the tokenizer produces after the prompt
    full = any_model.tokenizer(b.prompts[0] + b.answers[0], add_special_tokens=False)["input_ids"]
    assert full[int(b.query_pos[0]) + 1 - b.prepend_bos] == int(b.answer_tokens[0])  # BOS shifts the prompt by one


def test_prompt_batch_select_trims_padding(native_model):
    task = ti.Task.from_pairs("mixed", [("in1", "a1"), ("in2 in3", "a2"), ("in4", "a4"), ("in5", "a5")])
    b = ti.make_prompts(native_model, task, n=4, n_shots=1, seed=0)
    short = [i for i in range(4) if int(b.attention_mask[i].sum()) < b.tokens.shape[1]]
    assert short, "expected right padding"
    sub = b.select([short[0]])
    assert sub.tokens.shape[1] == int(b.attention_mask[short[0]].sum())
    assert sub.prompts == (b.prompts[short[0]],)


# ---- bad input: each raises a clear error before any forward pass (``forward_counter``: conftest.py) ---
@pytest.fixture()
def word_forward_counter(word_model):
    calls = []
    word_model.add_hook("hook_embed", lambda x, hook: calls.append(1))
    yield calls
    word_model.reset_hooks()


def test_more_shots_than_items(native_model, forward_counter):
    tiny = ti.Task.from_pairs("tiny", [("in1", "a1"), ("in2", "a2"), ("in3", "a3")])
    with pytest.raises(TlensICLError, match="cannot supply 5 demonstrations"):
        ti.icl_accuracy(native_model, tiny, shots=[0, 5], n=2)
    assert not forward_counter


def test_multi_token_answer_required(word_model, word_forward_counter):
    native_model, forward_counter = word_model, word_forward_counter
    task = ti.Task.from_pairs("multi", [("in1", "two words"), ("in2", "a2"), ("in3", "a3"), ("in4", "a4")])
    with pytest.raises(PromptError, match="several tokens"):
        ti.make_prompt_pairs(native_model, task, n=2, n_shots=1, single_token="require")
    kept = usable_task(native_model, task, single_token="filter")
    assert [it.output for it in kept.items] == ["a2", "a3", "a4"]
    assert not forward_counter


def test_prompt_longer_than_context(tokenizer, task_a):
    from conftest import build_model

    short = build_model("native", tokenizer, n_ctx=16)
    calls = []
    short.add_hook("hook_embed", lambda x, hook: calls.append(1))
    with pytest.raises(PromptError, match="exceeds the model's context of 16"):
        ti.icl_accuracy(short, task_a, shots=[8], n=2)
    assert not calls


def test_training_mode_rejected(native_model, task_a, forward_counter):
    native_model.train()
    try:
        with pytest.raises(ModelStateError, match=r"model.eval\(\)"):
            ti.icl_accuracy(native_model, task_a, shots=[1], n=2)
    finally:
        native_model.eval()
    assert not forward_counter


def test_mismatched_pair_lengths(word_model):
    native_model = word_model
    with pytest.raises(PairMismatchError, match="3 tokens but corrupted has 4"):
        PromptPairBatch.from_prompts(native_model, ["in1 -> a1"], ["in1 in2 -> a1"], ["a1"])
    ok = PromptPairBatch.from_prompts(native_model, ["in1 -> a1 \n in2 ->"], ["in1 -> a3 \n in2 ->"], ["a2"])
    assert ok.aligned and int(ok.clean.query_pos[0]) == 6


def test_unknown_tokens_and_padding_text(word_model):
    native_model = word_model
    unknown = ti.Task.from_pairs("unk", [("zzzz", "a1"), ("qqqq", "a2")])
    with pytest.raises(EmptyTaskError, match="representable"):
        ti.make_prompts(native_model, unknown, n=1, n_shots=1)
    pad = ti.Task.from_pairs("pad", [("in1 <pad>", "a1"), ("in2", "a2"), ("in3", "a3")])
    with pytest.raises(PromptError, match="pad/BOS"):
        ti.make_prompts(native_model, pad, n=3, n_shots=1)


def test_unknown_corruption_and_template(native_model, task_a):
    with pytest.raises(TlensICLError, match="shuffled_labels"):
        ti.make_prompt_pairs(native_model, task_a, corruption="shuffle")
    with pytest.raises(TlensICLError, match="arrow"):
        ti.make_prompt_pairs(native_model, task_a, template="todd")
