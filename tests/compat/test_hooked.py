"""HookedTransformer (TransformerLens 3): the adapter, exact KV reuse, mediation vs the loop and vs
transformer_lens.patching, vectors, decodability - on GPT-2-, NeoX- and Llama-style models with biases."""

from __future__ import annotations

import warnings

import pytest
import torch
import transformer_lens.patching as tl_patching

import tlens_icl as ti
from tlens_icl.analyses.vectors.common import mean_head_activations
from tlens_icl.analyses.vectors.function_vectors import function_vector_from_heads
from tlens_icl.analyses.vectors.task_vectors import task_vector_from_prompts
from tlens_icl.errors import ModelStateError
from tlens_icl.models import adapter

TOL = 1e-5
SMALL = dict(n_mean=4, n=3, n_shots=3)


def ragged_tokens(model, n_rows=4, width=19, seed=0):
    """Right-padded rows of different lengths (BOS first); returns tokens and each row's last real position."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(4, int(model.cfg.d_vocab), (n_rows, width), generator=gen)
    tokens[:, 0] = 1
    last = torch.tensor([width - 1, 7, 12, 3][:n_rows])
    for i, q in enumerate(last):
        tokens[i, q + 1:] = 0  # <pad> after the row's end
    return tokens, last


# ---- the adapter ------------------------------------------------------------------------------------
def test_adapter_reports_the_hooked_family(hooked_model):
    caps = adapter.capabilities(hooked_model)
    assert adapter.family(hooked_model) == "tl3_hooked" and adapter.is_hooked_transformer(hooked_model)
    assert (caps.position_ids, caps.mask_4d, caps.past_kv, caps.start_at_layer_skips) == (False, False, "tl", True)
    assert caps.pattern_edit and caps.resid_mid_edit
    assert adapter.device_of(hooked_model) == torch.device("cpu") and adapter.dtype_of(hooked_model) == torch.float32
    assert adapter.attn_output_bias(hooked_model).shape == (hooked_model.cfg.n_layers, hooked_model.cfg.d_model)


def test_forward_refuses_what_a_hooked_transformer_cannot_take(hooked_model, monkeypatch):
    tokens, _ = ragged_tokens(hooked_model)
    calls = []
    monkeypatch.setattr(type(hooked_model), "forward", lambda *a, **k: calls.append(1))
    with pytest.raises(ModelStateError, match="position_ids"):
        adapter.forward(hooked_model, tokens, position_ids=torch.zeros_like(tokens))
    with pytest.raises(ModelStateError, match="2-D"):
        adapter.forward(hooked_model, tokens, attention_mask=torch.zeros(4, 1, 19, 19))
    assert not calls


def test_the_pattern_probe_tells_hooked_from_tl3_native_bridge(hooked_model, embedded_model):
    assert adapter.capabilities(hooked_model).pattern_edit
    assert adapter.family(embedded_model) == "tl3_bridge"
    assert not adapter.capabilities(embedded_model).pattern_edit  # TL3 native attention ignores the edit
    assert adapter.pattern_edits_ignored(embedded_model) and not adapter.pattern_edits_ignored(hooked_model)


# ---- KV reuse helpers ---------------------------------------------------------------------------------
def test_query_copies_on_a_prefix_cache_equal_the_full_forward(hooked_model):
    tokens, q = ragged_tokens(hooked_model)
    rows = torch.arange(len(q))
    with torch.no_grad():
        full, cache = hooked_model.run_with_cache(tokens)
        full = full[rows, q]
        kv = adapter.prefix_cache(hooked_model, tokens, q)
        one = adapter.query_forward(hooked_model, adapter.expand_cache(kv, 1), tokens[rows, q])
        five = adapter.query_forward(hooked_model, adapter.expand_cache(kv, 5), tokens[rows, q].repeat_interleave(5))
        layer = hooked_model.cfg.n_layers - 1
        resid = cache[f"blocks.{layer}.hook_resid_pre"][rows, q]
        late = adapter.query_forward(hooked_model, adapter.expand_cache(kv, 1), resid, start_at_layer=layer)
    torch.testing.assert_close(one, full, atol=TOL, rtol=0)
    torch.testing.assert_close(five.view(len(q), 5, -1), full[:, None].expand(-1, 5, -1), atol=TOL, rtol=0)
    torch.testing.assert_close(late, full, atol=TOL, rtol=0)


def test_a_patched_copy_equals_a_patched_full_forward(hooked_model):
    """Copy j of each row patches head j's hook_z at the query: the same logits as one patched full forward."""
    tokens, q = ragged_tokens(hooked_model)
    rows, n_heads, layer = torch.arange(len(q)), hooked_model.cfg.n_heads, 0
    value = torch.randn(hooked_model.cfg.d_head, generator=torch.Generator().manual_seed(3))

    def patch_copies(z, hook):
        z = z.clone().view(len(q), n_heads, 1, n_heads, -1)
        z[:, torch.arange(n_heads), 0, torch.arange(n_heads)] = value
        return z.view(len(q) * n_heads, 1, n_heads, -1)

    with torch.no_grad():
        kv = adapter.expand_cache(adapter.prefix_cache(hooked_model, tokens, q), n_heads)
        with hooked_model.hooks(fwd_hooks=[(f"blocks.{layer}.attn.hook_z", patch_copies)]):
            copies = adapter.query_forward(hooked_model, kv, tokens[rows, q].repeat_interleave(n_heads))
        for head in range(n_heads):
            def patch_full(z, hook, head=head):
                z = z.clone()
                z[rows, q, head] = value
                return z

            ref = hooked_model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", patch_full)])[rows, q]
            torch.testing.assert_close(copies.view(len(q), n_heads, -1)[:, head], ref, atol=TOL, rtol=0)


def test_kv_helpers_refuse_a_bridge(embedded_model):
    tokens = torch.ones(1, 4, dtype=torch.long)
    with pytest.raises(ModelStateError, match="HookedTransformer"):
        adapter.prefix_cache(embedded_model, tokens, torch.tensor([2]))


# ---- mediation: the exact loop and transformer_lens.patching -------------------------------------------
def test_mediation_takes_the_kv_route_without_a_warning(hooked_model, task_a):
    """A HookedTransformer has no position_ids, but its own KV cache + start_at_layer give the exact kv route."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        auto = ti.indirect_effect(hooked_model, task_a, **SMALL)
    assert not [w for w in caught if "falling back" in str(w.message)]
    assert auto.method == "fast"
    naive = ti.indirect_effect(hooked_model, task_a, method="naive", **SMALL)
    torch.testing.assert_close(auto.effects, naive.effects, atol=1e-5, rtol=0, equal_nan=True)


def test_mediation_equals_a_hand_written_loop(hooked_model, task_a):
    res = ti.indirect_effect(hooked_model, task_a, method="naive", **SMALL)
    pairs = ti.make_prompt_pairs(hooked_model, task_a, n=3, n_shots=3, corruption="shuffled_labels", seed=0)
    base, rows = pairs.corrupted, torch.arange(3)
    with torch.no_grad():
        probs = lambda logits: logits[rows, base.query_pos].softmax(-1)[rows, base.answer_tokens]  # noqa: E731
        corrupted = probs(hooked_model(base.tokens))
        for layer in range(hooked_model.cfg.n_layers):
            for head in range(hooked_model.cfg.n_heads):
                def put(z, hook, head=head, layer=layer):
                    z = z.clone()
                    z[rows, base.query_pos, head] = res.mean_z[0, layer, head]
                    return z

                patched = probs(hooked_model.run_with_hooks(base.tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", put)]))
                torch.testing.assert_close(res.effects[0, layer, head], patched - corrupted, atol=TOL, rtol=0)


def test_head_patching_equals_transformer_lens_patching(hooked_model, task_a):
    """Rows of different lengths (BPE): TL's by-pos sweep per row at its own query; all_pos and resid_pre batched."""
    import pandas as pd

    pairs = ti.make_prompt_pairs(hooked_model, task_a, n=3, n_shots=3, corruption="shuffled_labels", seed=0)
    q = pairs.corrupted.query_pos
    assert len(set(q.tolist())) > 1
    n_layers, n_heads = hooked_model.cfg.n_layers, hooked_model.cfg.n_heads

    def metric_of(p):
        rows = torch.arange(len(p))
        return lambda logits: logits[rows, p.corrupted.query_pos].softmax(-1)[rows, p.clean.answer_tokens].mean()

    def cache_of(p, suffix):
        return hooked_model.run_with_cache(p.clean.tokens, names_filter=lambda n: n.endswith(suffix))[1]

    by_pos = torch.zeros(n_layers, n_heads, len(pairs))
    with torch.no_grad():
        for i in range(len(pairs)):
            row = pairs.select([i])
            cells = pd.DataFrame([(layer, int(q[i]), head) for layer in range(n_layers) for head in range(n_heads)],
                                 columns=["layer", "pos", "head"])
            by_pos[:, :, i] = tl_patching.get_act_patch_attn_head_out_by_pos(
                hooked_model, row.corrupted.tokens, cache_of(row, "hook_z"), metric_of(row),
                index_axis_names=None, index_df=cells).reshape(n_layers, n_heads)
        all_pos = tl_patching.get_act_patch_attn_head_out_all_pos(hooked_model, pairs.corrupted.tokens,
                                                                  cache_of(pairs, "hook_z"), metric_of(pairs))
        resid = tl_patching.get_act_patch_resid_pre(hooked_model, pairs.corrupted.tokens,
                                                    cache_of(pairs, "hook_resid_pre"), metric_of(pairs))
    torch.testing.assert_close(ti.head_patching(hooked_model, pairs).patched(), by_pos, atol=TOL, rtol=0)
    torch.testing.assert_close(ti.head_patching(hooked_model, pairs, position="all").patched().mean(-1), all_pos,
                               atol=TOL, rtol=0)
    torch.testing.assert_close(ti.activation_patching(hooked_model, pairs, site="resid_pre").patched().mean(-1), resid,
                               atol=TOL, rtol=0)


# ---- vectors and decodability ---------------------------------------------------------------------------
def test_function_vector_is_the_hand_computed_sum_and_steers(hooked_model, task_a):
    batch = ti.make_prompts(hooked_model, task_a, n=4, n_shots=3, seed=1)
    mean_z = mean_head_activations(hooked_model, batch)
    heads = [(0, 1), (1, 2)]
    fv = function_vector_from_heads(hooked_model, mean_z, heads)
    expected = sum(mean_z[layer, head] @ hooked_model.W_O[layer, head].detach() for layer, head in heads)
    torch.testing.assert_close(fv.vector, expected, atol=1e-6, rtol=0)
    with_bias = function_vector_from_heads(hooked_model, mean_z, heads, include_bias=True)
    torch.testing.assert_close(with_bias.vector - fv.vector, hooked_model.b_O[[0, 1]].detach().sum(0), atol=1e-6, rtol=0)
    zero = ti.make_prompts(hooked_model, task_a, n=4, n_shots=0, seed=2)
    with torch.no_grad():
        plain = hooked_model(zero.tokens)
        with ti.steer(hooked_model, fv.to_steering_vector(layer=0, coeff=0.0), query_pos=zero.query_pos):
            same = hooked_model(zero.tokens)
        with ti.steer(hooked_model, fv.to_steering_vector(layer=0, coeff=5.0), query_pos=zero.query_pos):
            moved = hooked_model(zero.tokens)
    assert torch.equal(plain, same) and not torch.equal(plain, moved)


def test_task_vector_patched_back_is_a_no_op(hooked_model, task_a):
    batch = ti.make_prompts(hooked_model, task_a, n=3, n_shots=3, seed=0)
    tv = task_vector_from_prompts(hooked_model, batch.select([0]))
    with torch.no_grad():
        plain = hooked_model(batch.tokens[:1])
        with ti.steer(hooked_model, tv.to_steering_vector(layer=1), query_pos=batch.query_pos[:1]):
            patched = hooked_model(batch.tokens[:1])
    torch.testing.assert_close(patched, plain, atol=TOL, rtol=0)


def test_decodability_runs_on_a_hooked_transformer(hooked_model, task_a, task_b):
    acts = ti.task_activations(hooked_model, [task_a, task_b], shots=[0, 3], n=8, layers=[1])
    res = ti.concept_decodability(acts)
    assert res.correct.shape == (2, 1, 16) and 0.0 <= float(res.correct.mean()) <= 1.0


def test_generate_on_a_hooked_transformer(ht_llama, task_a):
    zero = ti.make_prompts(ht_llama, task_a, n=3, n_shots=1, seed=0)
    toks = zero.tokens[:1, : int(zero.query_pos[0]) + 1]
    v = torch.zeros(ht_llama.cfg.d_model)
    with torch.no_grad():
        plain = ht_llama.generate(toks, max_new_tokens=3, do_sample=False, verbose=False, stop_at_eos=False)
    same = ti.generate(ht_llama, toks, steering=ti.SteeringVector(v, 0), max_new_tokens=3, stop_at_eos=False)
    assert torch.equal(plain, same)
    batched = ti.generate(ht_llama, zero, max_new_tokens=3, stop_at_eos=False)  # padded rows, each as alone
    for i in range(3):
        n = int(zero.query_pos[i]) + 1
        alone = ti.generate(ht_llama, zero.tokens[i:i + 1, :n], max_new_tokens=3, stop_at_eos=False)
        assert batched[i, : n + 3].tolist() == alone[0].tolist()


def test_function_vector_bias_on_a_bias_free_tl3_bridge(tokenizer):
    """TL3 bridges raise TypeError (not AttributeError) for b_O on bias-free attention; the adapter reads None."""
    from conftest import build_model  # tests/conftest.py (this folder's conftest is compat.conftest)

    llama = build_model("llama", tokenizer, biases=False)
    assert adapter.family(llama) == "tl3_bridge" and adapter.attn_output_bias(llama) is None
    mean_z = torch.randn(llama.cfg.n_layers, llama.cfg.n_heads, llama.cfg.d_head)
    with_bias = function_vector_from_heads(llama, mean_z, [(0, 1)], include_bias=True)
    assert torch.equal(with_bias.vector, function_vector_from_heads(llama, mean_z, [(0, 1)]).vector)
