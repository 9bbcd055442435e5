"""Whole-answer scoring by teacher forcing, checked against greedy decoding by hand, on variable-length prompts.

Answers are built from each model's own greedy continuation so that matches and near-misses both occur:
an answer the model produces, one whose first token is right and second wrong, alternatives that match
only on their full sequence, and an alternative whose *first token* is the argmax but which is not what
greedy decoding produces (the english_french bug: it must not count).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import tlens_icl as ti
from tlens_icl.analyses.accuracy import AccuracyResult
from tlens_icl.engine.runs import answer_scores

MIXED = ti.Task.from_pairs(
    "mixed_lengths",
    [(f"in{i}" if i % 3 else f"in{i} in{i + 1}", f"a{i}" if i % 2 else f"b{i} a{i}") for i in range(20)],
)


def greedy(model, ids: list[int], steps: int) -> list[int]:
    """Greedy continuation by full forwards, one unpadded prompt at a time."""
    out = list(ids)
    with torch.no_grad():
        for _ in range(steps):
            out.append(int(model(torch.tensor([out]))[0, -1].argmax()))
    return out[len(ids):]


def other_than(tok: int, vocab: int) -> int:
    return (tok + 7) % vocab


def rig(model, batch):
    """The batch with answers built from greedy decoding; expected exact match and first-token top-1."""
    vocab = model.cfg.d_vocab
    g = [greedy(model, batch.tokens[i, : int(batch.query_pos[i]) + 1].tolist(), 3) for i in range(len(batch))]
    answers, accepted, exact, first = [], [], [], []
    for i, gi in enumerate(g):
        bad2 = [gi[0], other_than(gi[1], vocab)]
        kind = i % 5
        if kind == 0:    # the model's own two tokens: a match
            ans, alts, em, ft = gi[:2], [], 1.0, 1.0
        elif kind == 1:  # first token right, second wrong: first-token top-1 but no match
            ans, alts, em, ft = bad2, [], 0.0, 1.0
        elif kind == 2:  # wrong answer, but a 3-token alternative greedy decoding produces
            ans, alts, em, ft = [other_than(gi[0], vocab)], [gi[:3]], 1.0, 0.0
        elif kind == 3:  # wrong answer; an alternative that starts with the argmax but then diverges
            ans, alts, em, ft = [other_than(gi[0], vocab), gi[1]], [bad2], 0.0, 0.0
        else:            # wrong two-token answer, a one-token alternative that is the argmax
            ans, alts, em, ft = [other_than(gi[0], vocab), gi[0]], [gi[:1]], 1.0, 1.0
        answers.append(tuple(ans))
        accepted.append(tuple(dict.fromkeys([tuple(ans), *(tuple(a) for a in alts)])))
        exact.append(em)
        first.append(ft)
    rigged = replace(batch, answer_ids=tuple(answers), accepted=tuple(accepted),
                     answer_tokens=torch.tensor([a[0] for a in answers]))
    return rigged, torch.tensor(exact), torch.tensor(first), g


def test_exact_match_and_logprob_equal_greedy_decoding(any_model):
    batch = ti.make_prompts(any_model, MIXED, n=10, n_shots=2, seed=3)
    assert len(set(batch.query_pos.tolist())) > 1  # prompts of different lengths in one batch
    rigged, exact, first, g = rig(any_model, batch)
    s = answer_scores(any_model, rigged, batch_size=3, keep_query_logits=True)
    assert torch.equal(s.exact_match, exact)
    assert torch.equal(s.first_token_top1, first)
    assert torch.equal(s.n_answer_tokens, torch.tensor([float(len(a)) for a in rigged.answer_ids]))
    with torch.no_grad():
        for i in range(len(batch)):  # by hand: one unpadded forward per row with its answer appended
            prompt = rigged.tokens[i, : int(rigged.query_pos[i]) + 1].tolist()
            ans = list(rigged.answer_ids[i])
            logp = any_model(torch.tensor([prompt + ans]))[0].log_softmax(-1)
            ref = sum(float(logp[len(prompt) - 1 + k, t]) for k, t in enumerate(ans))
            assert abs(float(s.answer_logprob[i]) - ref) < 1e-4
            assert abs(float(s.first_token_prob[i]) - float(logp[len(prompt) - 1, ans[0]].exp())) < 1e-5
            assert int(s.query_logits[i].argmax()) == g[i][0]


def test_icl_accuracy_reports_every_metric_and_names_the_chosen_one(native_model, tmp_path):
    res = ti.icl_accuracy(native_model, MIXED, shots=[0, 2], n=8, seed=1, batch_size=3)
    assert res.metric == "exact_match" and res.info["metric"] == "exact_match"
    assert torch.equal(res.correct, res.exact_match)
    assert bool((res.exact_match <= res.first_token_correct).all())  # no alternatives: a match starts right
    assert len(set(res.n_answer_tokens.unique().tolist())) > 1  # answers of several token lengths
    batch = ti.make_prompts(native_model, MIXED, n=8, n_shots=2, seed=1)
    s = answer_scores(native_model, batch)
    assert torch.equal(res.exact_match[0, 1], s.exact_match) and torch.equal(res.answer_logprob[0, 1], s.answer_logprob)
    ft = ti.icl_accuracy(native_model, MIXED, shots=[0, 2], n=8, seed=1, metric="first_token")
    assert ft.metric == "first_token" and torch.equal(ft.correct, res.first_token_correct)
    assert res.info["prepend_bos"] is True and res.info["items"]["mixed_lengths"]["usable"] == 20
    df = res.to_dataframe()
    assert {"metric", "exact_match", "first_token_accuracy", "mean_answer_logprob"} <= set(df.columns)
    back = AccuracyResult.load(res.save(tmp_path / "acc"))
    for f in ("correct", "exact_match", "first_token_correct", "answer_logprob", "n_answer_tokens", "answer_prob"):
        assert torch.equal(getattr(back, f), getattr(res, f))
    assert back.metric == "exact_match" and back.info == res.info
    with pytest.raises(ti.TlensICLError, match="metric"):
        ti.icl_accuracy(native_model, MIXED, shots=[0], n=2, metric="first")
    with pytest.raises(ti.TlensICLError, match="shot"):
        ti.icl_accuracy(native_model, MIXED, shots=[], n=2)


def test_first_token_accuracy_overstates_multi_token_answers(word_tokenizer):
    """A model that always says a0: right on 'a0', first-token right but wrong on 'a0 b1', wrong on 'b2'."""
    from conftest import build_model

    model = build_model("native", word_tokenizer)
    with torch.no_grad():
        model.b_U[word_tokenizer.convert_tokens_to_ids("a0")] += 1e4
    task = ti.Task.from_pairs("a0_model", [(f"in{i}", ["a0", f"a0 b{i}", f"b{i}"][i % 3]) for i in range(24)])
    res = ti.icl_accuracy(model, task, shots=[0, 2], n=24, seed=0)
    kind = torch.tensor([[int(q.input[2:]) % 3 for q in ti.make_prompts(model, task, n=24, n_shots=0).queries]] * 2)
    assert torch.equal(res.correct[0], (kind == 0).float()) and torch.equal(res.exact_match[0], res.correct[0])
    assert torch.equal(res.first_token_correct[0], (kind < 2).float())
    ft = ti.icl_accuracy(model, task, shots=[0, 2], n=24, seed=0, metric="first_token")
    assert torch.equal(ft.correct[0], (kind < 2).float()) and ft.metric == "first_token"
    assert float(ft.accuracy().mean()) > float(res.accuracy().mean())


def test_alternatives_count_on_full_sequences_only(native_model):
    """A multi-token alternative whose first token is the model's argmax is not an answer (english_french)."""
    batch = ti.make_prompts(native_model, MIXED, n=6, n_shots=1, seed=0)
    with torch.no_grad():
        logits = native_model(batch.tokens)[torch.arange(6), batch.query_pos]
    top = logits.argmax(-1).tolist()
    wrong = [(t + 1) % native_model.cfg.d_vocab for t in top]
    accepted = tuple(((w,), (t, w)) for t, w in zip(top, wrong))  # answer wrong; alternative starts with the argmax
    scored = ti.engine.scoring.accepted_top1(logits, accepted)
    assert torch.equal(scored, torch.zeros(6))
    assert torch.equal(ti.engine.scoring.accepted_top1(logits, tuple(((w,), (t,)) for t, w in zip(top, wrong))),
                       torch.ones(6))  # a one-token alternative is a whole answer
