"""Defining properties that planted one-line bugs break (issue 10's audit; scripts/mutate.py plants them).

Each test names the bug it guards against. The fixtures make the bugs visible: prompts of different lengths
in one batch (BPE tokenizer, right padding), non-zero biases on every architecture, two tasks at once.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tlens_icl as ti
from tlens_icl.analyses.causal.mediation import IndirectEffectResult
from tlens_icl.analyses.vectors.function_vectors import (
    FunctionVector,
    function_vector_from_heads,
    function_vector_from_task,
    function_vector_sweep,
)
from tlens_icl.tasks import TaskItem
from tlens_icl.models import adapter
from tlens_icl.analyses.vectors.common import mean_head_activations
from tlens_icl.analyses.vectors.steering import SteeringVector, steer
from tlens_icl.engine import hooks as H
from tlens_icl.engine.capture import query_z
from tlens_icl.engine.runs import query_logits
from tlens_icl.engine.scoring import rank
from tlens_icl.models.adapter import attn_output_bias
from tlens_icl.results.heads import bootstrap_ci


def variable_batch(model, task, n=5, n_shots=2, seed=0):
    batch = ti.make_prompts(model, task, n=n, n_shots=n_shots, seed=seed)
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
    acc = ti.icl_accuracy(any_model, task_a, shots=[2], n=5, seed=0, batch_size=2)
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
    with steer(native_model, SteeringVector(v, 0), query_pos=batch.query_pos.clone()):
        with torch.no_grad():
            got = native_model(batch.tokens)[torch.arange(len(batch)), batch.query_pos]
    for i in range(len(batch)):
        n = int(batch.query_pos[i]) + 1
        with steer(native_model, SteeringVector(v, 0)):  # alone and unpadded, "query" = the last position
            with torch.no_grad():
                ref = native_model(batch.tokens[i: i + 1, :n])[0, -1]
        torch.testing.assert_close(got[i], ref, atol=1e-4, rtol=0)
        assert not torch.allclose(got[i], base[i], atol=1e-3)


# ---- b_O in a function vector -------------------------------------------------------------------------
def test_function_vector_bias_once_per_layer_on_every_architecture(any_model, task_a):
    """Bug: ``b_O`` added once per head double-counts it for two heads of one layer (all archs have biases)."""
    heads = [(0, 0), (1, 1), (1, 3)]  # two heads in layer 1
    mean_z = mean_head_activations(any_model, ti.make_prompts(any_model, task_a, n=3, n_shots=2))
    plain = function_vector_from_heads(any_model, mean_z, heads)
    biased = function_vector_from_heads(any_model, mean_z, heads, include_bias=True)
    b_O = attn_output_bias(any_model)
    if b_O is None:  # Gemma 3 and Qwen2 have no attention output bias (Qwen2's biases are on q/k/v only)
        assert type(any_model.original_model).__name__ in ("Gemma3ForCausalLM", "Qwen2ForCausalLM")
        b_O = torch.zeros(any_model.cfg.n_layers, any_model.cfg.d_model)
    else:
        assert float(b_O[0].abs().sum()) > 0 and float(b_O[1].abs().sum()) > 0, "fixture biases are non-zero"
    from conftest import hand_function_vector

    # by hand: b_O once per layer (and, on Gemma 2/3, through the post-attention norm, where a sum is not additive)
    torch.testing.assert_close(biased.vector, hand_function_vector(any_model, mean_z, heads, include_bias=True),
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(plain.vector, hand_function_vector(any_model, mean_z, heads), atol=1e-5, rtol=1e-5)
    if adapter.attn_post_norm(any_model, 1) is None:
        torch.testing.assert_close(biased.vector - plain.vector, (b_O[0] + b_O[1]).float(), atol=1e-5, rtol=0)


# ---- accepted alternatives with non-zero expected values ------------------------------------------------
def test_alternatives_count_when_the_model_predicts_them(word_model, word_task_a):
    """Bug: scoring only ``answer_tokens`` ignores alternatives; here every counted hit comes from one."""
    batch = ti.make_prompts(word_model, word_task_a, n=8, n_shots=2, seed=0)
    pred = query_logits(word_model, batch).argmax(-1)
    vocab = {i: t for t, i in word_model.tokenizer.get_vocab().items()}
    predicted = {q.input: vocab[int(p)] for q, p in zip(batch.queries, pred)}
    usable = lambda w: w is not None and not w.startswith("<") and w.strip() == w and w  # noqa: E731 - a plain word
    items = tuple(TaskItem(it.input, it.output, (predicted[it.input],))
                  if usable(predicted.get(it.input)) and predicted[it.input] != it.output else it
                  for it in word_task_a.items)
    task = ti.Task(word_task_a.name, items)  # same name, same seed: the same prompts
    res = ti.icl_accuracy(word_model, task, shots=[2], n=8, seed=0)
    again = ti.make_prompts(word_model, task, n=8, n_shots=2, seed=0)
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
    from tlens_icl.workflows.compare import bootstrap_mean_ci

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
    med = ti.indirect_effect(native_model, [task_a, task_b], n_mean=4, n=3, n_shots=2)
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
    batch = ti.make_prompts(any_model, task_a, n=2, n_shots=1)
    v = torch.randn(any_model.cfg.d_model, generator=torch.Generator().manual_seed(1))
    names = [H.resid_pre(0), H.resid_post(0), H.resid_pre(1)]
    with torch.no_grad():
        _, clean = any_model.run_with_cache(batch.tokens, names_filter=lambda n: n in names)
        with steer(any_model, SteeringVector(v, 0, position="all")):
            _, steered = any_model.run_with_cache(batch.tokens, names_filter=lambda n: n in names)
    torch.testing.assert_close(steered[H.resid_pre(0)], clean[H.resid_pre(0)])
    torch.testing.assert_close(steered[H.resid_pre(1)], clean[H.resid_post(0)] + v, atol=1e-5, rtol=0)


def test_layer_sweep_column_l_is_the_vector_at_layer_l(native_model, task_a):
    """Bug: a sweep that injects at ``layers[j] + 1`` (or reports layer j's score under another layer)."""
    fv = function_vector_from_task(native_model, task_a, [(0, 1), (1, 2)], n=3, n_shots=2)
    fv = FunctionVector(3.0 * fv.vector, fv.heads, fv.task, None, fv.info)
    sweep = function_vector_sweep(native_model, fv, task_a, settings=("zero_shot",), n=4, seed=0)
    batch = ti.make_prompts(native_model, task_a, n=4, n_shots=0, seed=0)
    for j, layer in enumerate(sweep.layers):
        with steer(native_model, fv.to_steering_vector(layer=layer), query_pos=batch.query_pos):
            logits = query_logits(native_model, batch, batch_size=len(batch))
        p = logits.softmax(-1)[torch.arange(4), batch.answer_tokens]
        torch.testing.assert_close(sweep.answer_prob[0, j], p, atol=1e-6, rtol=0)
    assert not torch.allclose(sweep.answer_prob[0, 0], sweep.answer_prob[0, 1])


def test_task_vector_replaces_the_residual_after_block_l(native_model, task_a):
    tv = ti.task_vector(native_model, task_a, n=3, n_shots=2)
    batch = ti.make_prompts(native_model, task_a, n=3, n_shots=0, seed=1)
    rows = torch.arange(3)
    with torch.no_grad(), ti.steer(native_model, tv.to_steering_vector(layer=0), query_pos=batch.query_pos):
        _, cache = native_model.run_with_cache(batch.tokens, names_filter=lambda n: n == H.resid_pre(1))
    torch.testing.assert_close(cache[H.resid_pre(1)][rows, batch.query_pos], tv.at(0).expand(3, -1))


# ---- discrete decisions from floats: near-ties by a fixed rule, not by float rounding (issue 21) -----------
def _rounding_noise(x, seed, rel=1e-7):
    """``x`` as another CPU or route computes it: each value off by float32 rounding (a few ulps)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(x, dtype=torch.float64)
    return x * (1 + rel * torch.randn(x.shape, generator=g, dtype=torch.float64))


def test_knn_neighbours_do_not_depend_on_float_rounding():
    """Bug: neighbours at tied distances (duplicate prompts under two tasks) ordered by whatever rounding gives."""
    from tlens_icl.analyses.representations.decodability import loo_knn_predict

    g = torch.Generator().manual_seed(3)
    base = torch.randn(6, 16, generator=g, dtype=torch.float64)
    x = base.repeat_interleave(4, 0)  # every point has 3 exact duplicates, each under another label
    labels = np.array([0, 1, 2, 3] * 6)
    for metric in ("cosine", "euclidean"):
        ref = loo_knn_predict(x.numpy(), labels, k=3, metric=metric)
        for seed in range(8):
            got = loo_knn_predict(_rounding_noise(x, seed).numpy(), labels, k=3, metric=metric)
            assert got.tolist() == ref.tolist(), f"rounding noise changed the kNN decision ({metric}, seed {seed})"


def test_top_heads_best_layer_and_top1_do_not_depend_on_float_rounding():
    """Bug: top-k heads, the best layer and the argmax token taken from values tied up to float rounding."""
    from tlens_icl._ties import argbest
    from tlens_icl.analyses.heads.scores import top_heads_of
    from tlens_icl.engine.scoring import accepted_top1, top1

    scores = torch.tensor([[0.3, 0.7, 0.1], [0.7, 0.2, 0.7]])
    for seed in range(8):
        noisy = _rounding_noise(scores, seed).float()
        assert top_heads_of(noisy, 3) == [ti.Head(0, 1), ti.Head(1, 0), ti.Head(1, 2)]  # ties: lower layer, head
        assert int(argbest(_rounding_noise(torch.tensor([0.5, 0.75, 0.75, 0.25]), seed))) == 1
        logits = _rounding_noise(torch.tensor([[1.0, 4.0, 4.0, -2.0], [3.0, 0.0, 3.0, 3.0]]), seed).float()
        assert top1(logits, torch.tensor([1, 0])).tolist() == [1.0, 1.0]  # tied top: the lowest token id
        assert accepted_top1(logits, [[[2]], [[2]]]).tolist() == [0.0, 0.0]


# ---- head ablation: the random control, the loss means, pooled means (issue 21) ----------------------------
@pytest.fixture(scope="module")
def var_task():
    """Inputs of 1-3 tokens: prompts of different lengths in one batch."""
    from conftest import INPUTS, OUTPUTS_A

    return ti.Task.from_pairs("toy_var", [(" ".join([INPUTS[i]] + ["x"] * (i % 3)), OUTPUTS_A[i])
                                          for i in range(len(INPUTS))], category="custom")


def test_random_head_control_seeds_draw_different_head_sets(native_model, var_task):
    """Bug: every seed of the random-heads control draws the same set (the seed not passed on)."""
    from tlens_icl.analyses.heads.ablation import random_heads

    res = ti.head_ablation(native_model, var_task, {"a": torch.rand(2, 4, generator=torch.Generator().manual_seed(0))},
                           ks=(2,), n_random=4, n=3, n_shots=1, loss=False)
    sets = [frozenset(s) for s in res.heads["random"][0]]
    assert len(sets) == 4 and len(set(sets)) == 4, f"the control's seeds drew {sets}"
    assert all(len(s) == 2 for s in sets)
    assert sets[0] == frozenset(str(h) for h in random_heads(2, 4, 2, 0))  # seed 0 * 1000 + 0
    assert len({frozenset(random_heads(4, 8, 3, s)) for s in range(10)}) == 10


def _hand_mean_z(model, tokens, where):
    """Mean ``hook_z`` over the selected positions, from one plain ``run_with_cache`` (float64 sums)."""
    names = [H.z(layer) for layer in range(model.cfg.n_layers)]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    return torch.stack([cache[n][where].double().sum(0) for n in names]) / int(where.sum())


def test_pooled_means_weight_every_position_of_tasks_of_different_sizes(native_model, var_task, task_a):
    """Bug: the mean over several tasks as the mean of per-task means (a small task weighs as much as a big one)."""
    from tlens_icl.analyses.heads.ablation import _pooled_means
    from tlens_icl.engine.ablation import ablation_positions

    small = ti.make_prompts(native_model, task_a, n=2, n_shots=1, seed=1)
    big = ti.make_prompts(native_model, var_task, n=6, n_shots=3, seed=2)
    w_small, w_big = ablation_positions(small, "all"), ablation_positions(big, "all")
    assert int(w_big.sum()) > 3 * int(w_small.sum())
    got = _pooled_means(native_model, [small, big], "all", batch_size=4)
    sums = [_hand_mean_z(native_model, b.tokens, w) * int(w.sum()) for b, w in ((small, w_small), (big, w_big))]
    ref = (sums[0] + sums[1]) / int(w_small.sum() + w_big.sum())
    torch.testing.assert_close(got, ref.float(), atol=1e-6, rtol=1e-5)
    unweighted = (_hand_mean_z(native_model, small.tokens, w_small) + _hand_mean_z(native_model, big.tokens, w_big)) / 2
    assert not torch.allclose(got, unweighted.float(), atol=1e-4), "the fixture must tell the two means apart"


def test_token_loss_ablation_uses_the_means_of_its_own_sequences(native_model, var_task):
    """Bug: ablating heads on the loss sequences with the few-shot prompts' means (another distribution)."""
    from tlens_icl.analyses.heads.token_loss import default_window, episode_data, loss_score
    from tlens_icl.engine.ablation import token_positions

    data = episode_data(native_model, [var_task], n=3, n_shots=2, seed=5)
    scores = torch.zeros(2, 4)
    scores[0, 1], scores[1, 2] = 1.0, 0.9
    res = ti.head_ablation(native_model, var_task, {"a": scores}, ks=(2,), n_random=0, n=3, n_shots=2,
                           loss_data_kind=data)
    bos = native_model.tokenizer.bos_token_id
    means = _hand_mean_z(native_model, data.tokens, token_positions(data.tokens, data.mask, bos)).float()
    early, late = default_window(data)
    ref = loss_score(data.losses(native_model, [ti.Head(0, 1), ti.Head(1, 2)], means), early, late)
    torch.testing.assert_close(res.loss[0, 0, 0], ref, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(res.loss[0, 0, 0], loss_score(data.losses(native_model), early, late), atol=1e-4), \
        "the ablation must change the loss for this test to mean anything"


def test_token_loss_is_read_where_each_slot_predicts_its_token(native_model, var_task):
    """Bug: the loss of slot j read one position off (the position of the token itself, or of the next one)."""
    from tlens_icl.analyses.heads.token_loss import episode_data, text_data
    from tlens_icl.prompts.batch import ROLE_ID

    batch = ti.make_prompts(native_model, var_task, n=3, n_shots=2, seed=4)
    data = episode_data(native_model, [var_task], n=3, n_shots=2, seed=4)
    text = text_data(native_model, [" ".join(["the cat sat on the mat and then it ran"] * 8)], n=2, length=12, seed=1)
    for d in (data, text):
        res = ti.token_loss_score(native_model, d)
        with torch.no_grad():
            logp = native_model(d.tokens).float().log_softmax(-1)
        for i in range(len(d.tokens)):
            if d is data:  # slot j predicts demonstration j's first output token; the last slot, the answer
                firsts = [int(((batch.roles[i] == ROLE_ID["demo_output"]) & (batch.demo_index[i] == j)).nonzero()[0])
                          for j in range(2)]
                targets = firsts + [int(batch.query_pos[i]) + 1]
            else:  # text: slot j predicts token j + 1
                targets = list(range(1, d.tokens.shape[1]))
            hand = torch.stack([-logp[i, p - 1, d.tokens[i, p]] for p in targets])
            torch.testing.assert_close(res.losses[i], hand, atol=1e-5, rtol=1e-5)


# ---- resumable runs: what identifies a run and its units (issue 21) ---------------------------------------
def test_the_prompt_digest_changes_with_the_contents_at_equal_shape():
    """Bug: a digest of the prompts' shapes and dtypes only: another seed's prompts of equal shape look identical."""
    from tlens_icl.results.checkpoint import digest

    a = torch.arange(12).reshape(3, 4)
    b = a.clone()
    b[2, 3] = 99
    assert digest(a) != digest(b) and digest(a) == digest(a.clone())
    assert digest(a, b) != digest(b, a)


def test_a_unit_of_another_run_is_never_reused(native_model, task_a, tmp_path):
    """Bug: a finished unit is reused whatever run wrote it (a unit copied in from another seed's folder)."""
    import shutil

    from tlens_icl.errors import CheckpointMismatchError

    kw = dict(n_mean=3, n=2, n_shots=2, batch_size=2)
    ti.indirect_effect(native_model, task_a, seed=0, checkpoint=tmp_path / "s0", **kw)
    ti.indirect_effect(native_model, task_a, seed=1, checkpoint=tmp_path / "s1", **kw)
    with pytest.raises(CheckpointMismatchError, match="seed"):  # another seed in the same folder
        ti.indirect_effect(native_model, task_a, seed=1, checkpoint=tmp_path / "s0", **kw)
    unit = tmp_path / "s0" / "units" / "0%2Fpatch%2F0.safetensors"
    shutil.copy(tmp_path / "s1" / "units" / unit.name, unit)  # seed 1's chunk into seed 0's run
    with pytest.raises(CheckpointMismatchError, match="another run"):
        ti.indirect_effect(native_model, task_a, seed=0, checkpoint=tmp_path / "s0", **kw)


# ---- loaded results: recorded model properties against the tensors (issue 21) ------------------------------
def test_loading_checks_the_recorded_model_against_the_tensors(native_model, task_a, tmp_path):
    """Bug: a result whose recorded head count, d_model or d_head disagrees with its tensors loads silently."""
    from dataclasses import replace

    from tlens_icl.errors import ResultFileError

    aie = ti.indirect_effect(native_model, task_a, n_mean=2, n=2, n_shots=2)
    assert IndirectEffectResult.load(aie.save(tmp_path / "ok")).info == aie.info
    for key, value, dim in (("n_heads", 3, "head"), ("d_head", 8, "d_head"), ("n_layers", 5, "layer")):
        bad = replace(aie, info={**aie.info, key: value}).save(tmp_path / key)  # saved (digest valid), inconsistent
        with pytest.raises(ResultFileError, match=f"'{dim}' dimension is .*, but the result was made on a model"):
            IndirectEffectResult.load(bad)
