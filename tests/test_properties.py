"""Defining properties that planted one-line bugs break (issue 10's audit; scripts/mutate.py plants them).

Each test names the bug it guards against. The fixtures make the bugs visible: prompts of different lengths
in one batch (BPE tokenizer, right padding), non-zero biases on every architecture, two tasks at once.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tlens_icl as ti
from tlens_icl.analyses.vectors.common import add_vector, mean_head_activations
from tlens_icl.engine import hooks as H
from tlens_icl.engine.capture import query_z
from tlens_icl.engine.runs import query_logits
from tlens_icl.engine.scoring import rank
from tlens_icl.models.adapter import attn_output_bias
from tlens_icl.results.heads import bootstrap_ci


def variable_batch(model, task, n=5, n_shots=2, seed=0):
    batch = ti.make_prompts(task, model, n=n, n_shots=n_shots, seed=seed)
    assert len(set(batch.query_pos.tolist())) > 1, "the fixture must give rows of different lengths"
    return batch


def row_alone(model, batch, i, names):
    """Activations and logits of row ``i`` run alone, unpadded: here position -1 IS the query."""
    n = int(batch.query_pos[i]) + 1
    with torch.no_grad():
        logits, cache = model.run_with_cache(batch.tokens[i: i + 1, :n], names_filter=lambda x: x in names)
    return logits[0, -1], {k: cache[k][0] for k in names}


# ---- position -1 vs each row's query position ---------------------------------------------------------
def test_logits_and_hook_z_are_read_at_each_rows_query_position(any_model, task_a):
    """Bug: ``logits[:, -1]`` / ``z[:, -1]`` on a right-padded batch reads padding for the shorter rows."""
    batch = variable_batch(any_model, task_a)
    got_logits = query_logits(any_model, batch, batch_size=2)
    got_z, fast_logits = query_z(any_model, batch.tokens, batch.query_pos, batch_size=2)
    names = [H.z(layer) for layer in range(any_model.cfg.n_layers)]
    for i in range(len(batch)):
        ref_logits, cache = row_alone(any_model, batch, i, names)
        torch.testing.assert_close(got_logits[i], ref_logits.float(), atol=1e-4, rtol=0)
        torch.testing.assert_close(fast_logits[i], ref_logits.float(), atol=1e-4, rtol=0)
        for layer in range(any_model.cfg.n_layers):
            torch.testing.assert_close(got_z[i, layer], cache[H.z(layer)][-1].float(), atol=1e-5, rtol=0)
    acc = ti.icl_accuracy(any_model, task_a, n_shots=[2], n=5, seed=0, batch_size=2)
    torch.testing.assert_close(acc.answer_prob[0, 0], got_logits.softmax(-1)[torch.arange(5), batch.answer_tokens])


def test_attention_pattern_is_read_at_each_rows_query_position(native_model, task_a):
    """Bug: ``pattern[:, :, -1]`` reads a padding row's attention."""
    batch = variable_batch(native_model, task_a, n=4, n_shots=3)
    res = ti.attention_ratio(native_model, batch, relevant="demo_output", irrelevant="demo_input", batch_size=4)
    names = [H.pattern(layer) for layer in range(native_model.cfg.n_layers)]
    for i in range(len(batch)):
        _, cache = row_alone(native_model, batch, i, names)
        n = int(batch.query_pos[i]) + 1
        for layer in range(native_model.cfg.n_layers):
            at_q = cache[H.pattern(layer)][:, -1, :n]  # [head, key] of the row's own last token
            rel = (at_q * batch.mask("demo_output")[i, :n]).sum(-1)
            irr = (at_q * batch.mask("demo_input")[i, :n]).sum(-1)
            torch.testing.assert_close(res.relevant_mass[i, layer], rel.float(), atol=1e-5, rtol=0)
            torch.testing.assert_close(res.irrelevant_mass[i, layer], irr.float(), atol=1e-5, rtol=0)


def test_vector_added_at_each_rows_query_position(native_model, task_a):
    """Bug: adding at position -1 of a padded batch edits a pad token, leaving the query untouched."""
    batch = variable_batch(native_model, task_a)
    v = torch.randn(native_model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    base = query_logits(native_model, batch)
    with add_vector(native_model, v, layer=0, query_pos=batch.query_pos.clone()):
        with torch.no_grad():
            got = native_model(batch.tokens)[torch.arange(len(batch)), batch.query_pos]
    for i in range(len(batch)):
        n = int(batch.query_pos[i]) + 1
        with add_vector(native_model, v, layer=0):  # alone and unpadded, "query" = the last position
            with torch.no_grad():
                ref = native_model(batch.tokens[i: i + 1, :n])[0, -1]
        torch.testing.assert_close(got[i], ref, atol=1e-4, rtol=0)
        assert not torch.allclose(got[i], base[i], atol=1e-3)


# ---- b_O in a function vector -------------------------------------------------------------------------
def test_function_vector_bias_once_per_layer_on_every_architecture(any_model, task_a):
    """Bug: ``b_O`` added once per head double-counts it for two heads of one layer (all archs have biases)."""
    heads = [(0, 0), (1, 1), (1, 3)]  # two heads in layer 1
    mean_z = mean_head_activations(any_model, ti.make_prompts(task_a, any_model, n=3, n_shots=2))
    plain = ti.function_vector_from_heads(any_model, mean_z, heads)
    biased = ti.function_vector_from_heads(any_model, mean_z, heads, include_bias=True)
    b_O = attn_output_bias(any_model)
    if b_O is None:  # Gemma 3 and Qwen2 have no attention output bias (Qwen2's biases are on q/k/v only)
        assert type(any_model.original_model).__name__ in ("Gemma3ForCausalLM", "Qwen2ForCausalLM")
        b_O = torch.zeros(any_model.cfg.n_layers, any_model.cfg.d_model)
    else:
        assert float(b_O[0].abs().sum()) > 0 and float(b_O[1].abs().sum()) > 0, "fixture biases are non-zero"
    torch.testing.assert_close(biased.vector - plain.vector, (b_O[0] + b_O[1]).float(), atol=1e-5, rtol=0)
    by_hand = sum(mean_z[l, h] @ any_model.W_O[l, h].detach() for l, h in heads)
    torch.testing.assert_close(plain.vector, by_hand.float(), atol=1e-5, rtol=0)


# ---- accepted alternatives with non-zero expected values ------------------------------------------------
def test_alternatives_count_when_the_model_predicts_them(word_model, word_task_a):
    """Bug: scoring only ``answer_tokens`` ignores alternatives; here every counted hit comes from one."""
    batch = ti.make_prompts(word_task_a, word_model, n=8, n_shots=2, seed=0)
    pred = query_logits(word_model, batch).argmax(-1)
    vocab = {i: t for t, i in word_model.tokenizer.get_vocab().items()}
    predicted = {q.input: vocab[int(p)] for q, p in zip(batch.queries, pred)}
    usable = lambda w: w is not None and not w.startswith("<") and w.strip() == w and w  # noqa: E731 - a plain word
    items = tuple(ti.TaskItem(it.input, it.output, (predicted[it.input],))
                  if usable(predicted.get(it.input)) and predicted[it.input] != it.output else it
                  for it in word_task_a.items)
    task = ti.Task(word_task_a.name, items)  # same name, same seed: the same prompts
    res = ti.icl_accuracy(word_model, task, n_shots=[2], n=8, seed=0)
    again = ti.make_prompts(task, word_model, n=8, n_shots=2, seed=0)
    assert again.prompts == batch.prompts  # alternatives do not change the prompts
    # a one-token alternative is a whole answer (accepted holds full token sequences)
    expected = torch.tensor([float((int(p),) in acc) for p, acc in zip(pred, again.accepted)])
    assert float(expected.sum()) >= 3, "the test needs rows the model answers with an alternative"
    assert torch.equal(res.correct[0, 0], expected)
    assert float((pred == again.answer_tokens).sum()) < float(expected.sum())  # hits beyond the main answer


# ---- bootstrap CI width ---------------------------------------------------------------------------------
def test_bootstrap_ci_width_matches_the_standard_error():
    """Bugs: resampling the wrong axis or count, wrong quantiles, repeats treated as extra data."""
    g = torch.Generator().manual_seed(0)
    sd, n = 2.0, 400
    x = sd * torch.randn(1, 1, n, generator=g)
    lo, hi = bootstrap_ci(x, n_resamples=4000)
    se = float(x.std()) / n ** 0.5
    assert float(hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.12)
    assert float(lo) < float(x.mean()) < float(hi)
    # two tasks: the CI of the task mean has the SE of a mean of two independent means
    y = torch.stack([x[0], 3.0 * sd * torch.randn(1, n, generator=g)])  # [task, cell, example]
    lo2, hi2 = bootstrap_ci(y, n_resamples=4000)
    se2 = 0.5 * (float(y[0].var()) / n + float(y[1].var()) / n) ** 0.5
    assert float(hi2 - lo2) == pytest.approx(2 * 1.96 * se2, rel=0.12)
    # NaN padding (filter_correct) is dropped, not resampled: the width follows the kept count
    padded = torch.cat([x[..., :100], torch.full((1, 1, 300), float("nan"))], -1)
    lo3, hi3 = bootstrap_ci(padded, n_resamples=4000)
    assert float(hi3 - lo3) == pytest.approx(2 * 1.96 * float(x[..., :100].std()) / 10, rel=0.15)
    # scipy-based CI of compare_methods' cells
    from tlens_icl.analyses.vectors.compare import bootstrap_mean_ci

    a, b = bootstrap_mean_ci(x.flatten(), n_resamples=4000)
    assert b - a == pytest.approx(2 * 1.96 * se, rel=0.12)


# ---- rank ties ------------------------------------------------------------------------------------------
def test_rank_counts_only_strictly_better_tokens():
    """Ties count in the answer's favour (rank = number of tokens with a strictly larger logit)."""
    logits = torch.tensor([[2.0, 2.0, 1.0, 1.0, 0.5], [0.0, 3.0, 3.0, 3.0, -1.0]])
    assert rank(logits, torch.tensor([1, 3])).tolist() == [0.0, 0.0]
    assert rank(logits, torch.tensor([2, 4])).tolist() == [2.0, 4.0]
    assert rank(logits, torch.tensor([4, 0])).tolist() == [4.0, 3.0]


# ---- decodability: shuffled-label control, ties, k ----------------------------------------------------
def test_shuffled_label_control_is_the_knn_of_permuted_labels():
    """Bug: scoring permuted predictions against the true labels (or the reverse) makes the control ~= CD."""
    from tlens_icl.analyses.representations.activations import from_arrays
    from tlens_icl.analyses.representations.decodability import loo_knn_predict

    g = torch.Generator().manual_seed(0)
    labels = [f"t{i % 3}" for i in range(60)]
    centres = 5 * torch.randn(3, 8, generator=g)
    x = torch.stack([centres[i % 3] for i in range(60)]) + 0.2 * torch.randn(60, 8, generator=g)
    res = ti.concept_decodability(from_arrays(x[:, None], labels), k=5, n_shuffles=4, seed=7)
    assert float(res.scores()[0, 0]) == 1.0
    y = np.array([i % 3 for i in range(60)])
    rng = np.random.default_rng(7)
    perms = [rng.permutation(y) for _ in range(4)]
    expected = np.mean([(loo_knn_predict(x.numpy(), p, k=5) == p).mean() for p in perms])
    assert float(res.shuffled[0, 0]) == pytest.approx(expected, abs=1e-6)
    assert float(res.shuffled[0, 0]) < 0.6


def test_knn_ties_go_to_the_nearest_tied_neighbour_and_k_used_is_recorded():
    from tlens_icl.analyses.representations.activations import from_arrays
    from tlens_icl.analyses.representations.decodability import loo_knn_predict

    # point 0's neighbours: point 1 (label 1) at distance 1, point 2 (label 2) at distance 2: a 1-1 tie
    x = np.array([[0.0], [1.0], [-2.0], [10.0], [11.0]])
    labels = np.array([0, 1, 2, 2, 1])
    assert loo_knn_predict(x, labels, k=2, metric="euclidean")[0] == 1
    x2 = np.array([[0.0], [-1.0], [2.0], [10.0], [11.0]])  # the nearer of the two is now label 2's
    assert loo_knn_predict(x2, np.array([0, 2, 1, 2, 1]), k=2, metric="euclidean")[0] == 2
    acts = from_arrays(torch.randn(6, 1, 4, generator=torch.Generator().manual_seed(0)), ["a", "b"] * 3)
    res = ti.concept_decodability(acts, k=10, n_shuffles=0)
    assert res.k == 5 and res.info["k_requested"] == 10


# ---- a function vector from a multi-task mediation result -------------------------------------------------
def test_function_vector_of_each_task_of_a_multi_task_mediation(native_model, task_a, task_b):
    """Bug: using ``mean_z[0]`` (or the universal ranking) for every task of a multi-task result."""
    med = ti.indirect_effect(native_model, [task_a, task_b], n_mean=4, n_corrupted=3, n_shots=2)
    assert not torch.allclose(med.mean_z[0], med.mean_z[1])
    for t, name in enumerate(med.tasks):
        fv = ti.function_vector(native_model, med, task=name, k=3)
        heads = med.top_heads(3, task=name)
        ref = sum(med.mean_z[t][h.layer, h.head] @ native_model.W_O[h.layer, h.head].detach() for h in heads)
        torch.testing.assert_close(fv.vector, ref.float(), atol=1e-5, rtol=0)
        assert fv.heads == tuple(tuple(h) for h in heads) and fv.task == name
    universal = ti.function_vector(native_model, med, k=3)  # task=None: first task's means, universal heads
    assert universal.heads == tuple(tuple(h) for h in med.top_heads(3))


# ---- a vector added one layer too late ----------------------------------------------------------------
def test_vector_at_layer_l_enters_the_residual_after_block_l(any_model, task_a):
    """Bug: hooking ``resid_post[L + 1]`` (or ``resid_pre[L + 1]`` of the wrong block) for layer ``L``."""
    batch = ti.make_prompts(task_a, any_model, n=2, n_shots=1)
    v = torch.randn(any_model.cfg.d_model, generator=torch.Generator().manual_seed(1))
    names = [H.resid_pre(0), H.resid_post(0), H.resid_pre(1)]
    with torch.no_grad():
        _, clean = any_model.run_with_cache(batch.tokens, names_filter=lambda n: n in names)
        with add_vector(any_model, v, layer=0, position="all"):
            _, steered = any_model.run_with_cache(batch.tokens, names_filter=lambda n: n in names)
    torch.testing.assert_close(steered[H.resid_pre(0)], clean[H.resid_pre(0)])
    torch.testing.assert_close(steered[H.resid_pre(1)], clean[H.resid_post(0)] + v, atol=1e-5, rtol=0)


def test_layer_sweep_column_l_is_the_vector_at_layer_l(native_model, task_a):
    """Bug: a sweep that injects at ``layers[j] + 1`` (or reports layer j's score under another layer)."""
    fv = ti.function_vector_from_task(native_model, task_a, [(0, 1), (1, 2)], n=3, n_shots=2)
    fv = ti.FunctionVector(3.0 * fv.vector, fv.heads, fv.task, None, fv.info)
    sweep = ti.function_vector_sweep(native_model, fv, task_a, settings=("zero_shot",), n=4, seed=0)
    batch = ti.make_prompts(task_a, native_model, n=4, n_shots=0, seed=0)
    for j, layer in enumerate(sweep.layers):
        with add_vector(native_model, fv, layer=layer, query_pos=batch.query_pos):
            logits = query_logits(native_model, batch, batch_size=len(batch))
        p = logits.softmax(-1)[torch.arange(4), batch.answer_tokens]
        torch.testing.assert_close(sweep.answer_prob[0, j], p, atol=1e-6, rtol=0)
    assert not torch.allclose(sweep.answer_prob[0, 0], sweep.answer_prob[0, 1])


def test_task_vector_replaces_the_residual_after_block_l(native_model, task_a):
    tv = ti.task_vector(native_model, task_a, n=3, n_shots=2)
    batch = ti.make_prompts(task_a, native_model, n=3, n_shots=0, seed=1)
    rows = torch.arange(3)
    with torch.no_grad(), ti.patch_task_vector(native_model, tv, layer=0, query_pos=batch.query_pos):
        _, cache = native_model.run_with_cache(batch.tokens, names_filter=lambda n: n == H.resid_pre(1))
    torch.testing.assert_close(cache[H.resid_pre(1)][rows, batch.query_pos], tv.at(0).expand(3, -1))
