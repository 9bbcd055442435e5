"""Head and activation patching: cross-checks against transformer_lens.patching, identities, hand-written hooks."""

from __future__ import annotations

import warnings

import pytest
import torch
import transformer_lens.patching as tl_patching

import tlens_icl as ti
from tlens_icl.analyses.causal.patching import ActivationPatchingResult, HeadPatchingResult
from tlens_icl.engine import query as _engine
from tlens_icl.errors import ModelStateError, PairMismatchError, TlensICLError
from tlens_icl.prompts.batch import PromptBatch
from tlens_icl.prompts.pairs import PromptPairBatch
from tlens_icl.results.base import tensors_equal

TOL = 1e-5


@pytest.fixture(scope="module")
def pairs_by_arch():
    cache: dict[int, PromptPairBatch] = {}

    def get(model, task, corruption="shuffled_labels", n=3, n_shots=3, single_token="ignore"):
        key = (id(model), task.name, corruption, n, n_shots, single_token)
        if key not in cache:
            cache[key] = ti.make_prompt_pairs(model, task, n=n, n_shots=n_shots, corruption=corruption, seed=0,
                                              single_token=single_token)
        return cache[key]

    return get


def tl_metric(pairs: PromptPairBatch):
    """TransformerLens-style metric: mean P(clean answer) at each row's query position."""
    rows = torch.arange(len(pairs))
    q, ans = pairs.corrupted.query_pos, pairs.clean.answer_tokens
    return lambda logits: logits[rows, q].softmax(-1)[rows, ans].mean()


def clean_cache(model, pairs, suffixes):
    _, cache = model.run_with_cache(pairs.clean.tokens, names_filter=lambda n: n.endswith(suffixes))
    return cache


def test_query_head_patching_equals_transformer_lens_by_pos(any_model, task_a, pairs_by_arch):
    """Rows of different lengths: TL's by-pos sweep is run per row at that row's own query position."""
    pairs = pairs_by_arch(any_model, task_a)
    q = pairs.corrupted.query_pos
    assert len(set(q.tolist())) > 1, "the BPE fixture gives prompts of different lengths"
    import pandas as pd

    n_layers, n_heads = any_model.cfg.n_layers, any_model.cfg.n_heads
    ref = torch.zeros(n_layers, n_heads, len(pairs))
    for i in range(len(pairs)):
        row = pairs.select([i])
        cells = pd.DataFrame([(layer, int(q[i]), head) for layer in range(n_layers) for head in range(n_heads)],
                             columns=["layer", "pos", "head"])  # TL's by_pos sweep restricted to this row's query
        with torch.no_grad():
            ref[:, :, i] = tl_patching.get_act_patch_attn_head_out_by_pos(
                any_model, row.corrupted.tokens, clean_cache(any_model, row, "hook_z"), tl_metric(row),
                index_axis_names=None, index_df=cells).reshape(n_layers, n_heads)
    fast = ti.head_patching(any_model, pairs, method="fast")
    naive = ti.head_patching(any_model, pairs, method="naive")
    assert fast.method == "fast" and naive.method == "naive"
    torch.testing.assert_close(fast.patched(), ref, atol=TOL, rtol=0)
    torch.testing.assert_close(naive.patched(), ref, atol=TOL, rtol=0)
    torch.testing.assert_close(fast.effects, naive.effects, atol=TOL, rtol=0)


def test_all_position_head_patching_equals_transformer_lens_all_pos(any_model, task_a, pairs_by_arch):
    pairs = pairs_by_arch(any_model, task_a)
    with torch.no_grad():
        ref = tl_patching.get_act_patch_attn_head_out_all_pos(
            any_model, pairs.corrupted.tokens, clean_cache(any_model, pairs, "hook_z"), tl_metric(pairs))
    res = ti.head_patching(any_model, pairs, position="all")
    torch.testing.assert_close(res.patched().mean(-1), ref, atol=TOL, rtol=0)


@pytest.mark.parametrize("site,tl_fn", [("resid_pre", tl_patching.get_act_patch_resid_pre),
                                        ("attn_out", tl_patching.get_act_patch_attn_out),
                                        ("mlp_out", tl_patching.get_act_patch_mlp_out)])
def test_activation_patching_equals_transformer_lens(any_model, task_a, pairs_by_arch, site, tl_fn):
    # one-token labels: shuffling keeps every position aligned (labels of different lengths could not be)
    pairs = pairs_by_arch(any_model, task_a, n=2, n_shots=2, single_token="filter")
    with torch.no_grad():
        ref = tl_fn(any_model, pairs.corrupted.tokens, clean_cache(any_model, pairs, f"hook_{site}"), tl_metric(pairs))
    res = ti.activation_patching(any_model, pairs, site=site)
    assert res.effects.shape == (any_model.cfg.n_layers, pairs.corrupted.tokens.shape[1], 2)
    torch.testing.assert_close(res.patched().mean(-1), ref, atol=TOL, rtol=0)


def test_identity_corruption_gives_exactly_zero(any_model, task_a, pairs_by_arch):
    pairs = pairs_by_arch(any_model, task_a, corruption="identity")
    for kw in ({"method": "fast"}, {"method": "naive"}, {"position": "all"}, {"position": "demo_output"},
               {"direction": "noise"}):
        res = ti.head_patching(any_model, pairs, **kw)
        assert torch.equal(res.effects, torch.zeros_like(res.effects)), kw
        assert torch.equal(res.clean_metric, res.corrupted_metric)
    res = ti.activation_patching(any_model, pairs, site="resid_pre")
    assert torch.equal(res.effects, torch.zeros_like(res.effects))


def patched_prob(model, base: PromptBatch, layer: int, head: int, positions, value) -> torch.Tensor:
    """P(answer) with ``z[:, positions, head]`` set to ``value`` by a hand-written hook."""
    def hook(z, hook):
        z = z.clone()
        z[(*positions, head) if isinstance(positions, tuple) else (positions, head)] = value
        return z

    with torch.no_grad():
        logits = model.run_with_hooks(base.tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", hook)])
    rows = torch.arange(len(base))
    return logits[rows, base.query_pos].softmax(-1)[rows, base.answer_tokens]


def test_hand_written_hook_reproduces_one_head(any_model, task_a, pairs_by_arch):
    pairs = pairs_by_arch(any_model, task_a)
    layer, head = any_model.cfg.n_layers - 1, 1
    rows = torch.arange(len(pairs))
    _, cache = any_model.run_with_cache(pairs.clean.tokens, names_filter=f"blocks.{layer}.attn.hook_z")
    z_clean = cache[f"blocks.{layer}.attn.hook_z"]
    q_c, q_k = pairs.clean.query_pos, pairs.corrupted.query_pos
    # query position, denoising
    expected = patched_prob(any_model, pairs.corrupted, layer, head, (rows, q_k), z_clean[rows, q_c, head])
    res = ti.head_patching(any_model, pairs)
    torch.testing.assert_close(res.patched()[layer, head], expected, atol=TOL, rtol=0)
    # demo-output positions, denoising
    mask = pairs.corrupted.mask("demo_output")
    expected = patched_prob(any_model, pairs.corrupted, layer, head, mask, z_clean[mask][:, head])
    res = ti.head_patching(any_model, pairs, position="demo_output")
    torch.testing.assert_close(res.patched()[layer, head], expected, atol=TOL, rtol=0)


def test_noising_patches_corrupted_values_into_clean_run(native_model, task_a, pairs_by_arch):
    pairs = pairs_by_arch(native_model, task_a)
    layer, head = 1, 2
    rows = torch.arange(len(pairs))
    _, cache = native_model.run_with_cache(pairs.corrupted.tokens, names_filter=f"blocks.{layer}.attn.hook_z")
    z_corr = cache[f"blocks.{layer}.attn.hook_z"][rows, pairs.corrupted.query_pos, head]
    expected = patched_prob(native_model, pairs.clean, layer, head, (rows, pairs.clean.query_pos), z_corr)
    res = ti.head_patching(native_model, pairs, direction="noise")
    torch.testing.assert_close(res.patched()[layer, head], expected, atol=TOL, rtol=0)
    torch.testing.assert_close(res.effects[layer, head], expected - res.clean_metric, atol=TOL, rtol=0)


def test_fast_path_is_exact_in_compatibility_mode(tokenizer, task_a):
    from conftest import build_model

    model = build_model("gpt2", tokenizer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.enable_compatibility_mode(disable_warnings=True)
    pairs = ti.make_prompt_pairs(model, task_a, n=3, n_shots=3)
    fast = ti.head_patching(model, pairs, method="fast")
    assert fast.info["compatibility_mode"] is True
    torch.testing.assert_close(fast.effects, ti.head_patching(model, pairs, method="naive").effects, atol=TOL, rtol=0)


def test_zero_shot_pairs_patch_at_the_query_position(native_model, task_a, pairs_by_arch):
    pairs = pairs_by_arch(native_model, task_a, corruption="zero_shot")
    assert not pairs.aligned
    fast = ti.head_patching(native_model, pairs, method="fast")
    naive = ti.head_patching(native_model, pairs, method="naive")
    torch.testing.assert_close(fast.effects, naive.effects, atol=TOL, rtol=0)
    with pytest.raises(PairMismatchError):
        ti.head_patching(native_model, pairs, position="all")


def rotary_native(tokenizer):
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    cfg = TransformerBridgeConfig(d_model=64, d_head=16, n_heads=4, n_layers=2, n_ctx=128, d_vocab=len(tokenizer),
                                  act_fn="gelu", seed=1)
    cfg.positional_embedding_type = "rotary"  # the embedded model's positions; not a constructor argument in 4.3
    return TransformerBridge.boot_native(cfg, tokenizer=tokenizer).eval()


def test_fast_path_is_exact_on_rotary_native(tokenizer, task_a):
    model = rotary_native(tokenizer)
    pairs = ti.make_prompt_pairs(model, task_a, n=3, n_shots=3)
    fast = ti.head_patching(model, pairs, method="fast")
    naive = ti.head_patching(model, pairs, method="naive")
    torch.testing.assert_close(fast.effects, naive.effects, atol=TOL, rtol=0)


def test_fast_path_without_room_falls_back_with_warning(tokenizer, task_a):
    from conftest import build_model

    kw = dict(n=2, n_shots=2, single_token="filter")  # one-token labels: the shuffled pair stays aligned
    width = ti.make_prompt_pairs(build_model("native", tokenizer), task_a, **kw).corrupted.tokens.shape[1]
    pairs_model = build_model("native", tokenizer, n_ctx=width)
    pairs = ti.make_prompt_pairs(pairs_model, task_a, **kw)
    assert pairs.corrupted.tokens.shape[1] == width  # no position left for a query copy
    with pytest.warns(UserWarning, match="falling back"):
        res = ti.head_patching(pairs_model, pairs)
    assert res.method == "naive"
    with pytest.raises(ModelStateError, match="not exact"):
        ti.head_patching(pairs_model, pairs, method="fast")


def test_control_copy_catches_a_broken_fast_path(native_model, task_a, pairs_by_arch, monkeypatch):
    pairs = pairs_by_arch(native_model, task_a)
    expected = ti.head_patching(native_model, pairs, method="naive")
    # Wrong positions for the copies (learned position embeddings): the control copy must disagree.
    monkeypatch.setattr(_engine, "copy_position_ids", lambda q, n: (q + 1)[:, None].expand(-1, n))
    with pytest.raises(ModelStateError, match="control copy"):
        ti.head_patching(native_model, pairs, method="fast")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = ti.head_patching(native_model, pairs)
    assert res.method == "naive" and any("falling back" in str(w.message) for w in caught)
    assert torch.equal(res.effects, expected.effects)


def test_bad_input_raises_before_any_forward(native_model, task_a, pairs_by_arch, monkeypatch):
    pairs = pairs_by_arch(native_model, task_a)
    monkeypatch.setattr(type(native_model), "forward", lambda *a, **k: pytest.fail("forward ran"))
    with pytest.raises(TlensICLError, match="position"):
        ti.head_patching(native_model, pairs, position="middle")
    with pytest.raises(TlensICLError, match="direction"):
        ti.head_patching(native_model, pairs, direction="sideways")
    with pytest.raises(TlensICLError, match="logit_diff"):
        ti.head_patching(native_model, pairs, metric="logit_diff")
    with pytest.raises(TlensICLError, match="metric"):
        ti.head_patching(native_model, pairs, metric="accuracy")
    with pytest.raises(TlensICLError, match="fast"):
        ti.head_patching(native_model, pairs, position="all", method="fast")
    with pytest.raises(TlensICLError, match="site"):
        ti.activation_patching(native_model, pairs, site="hook_q")


def test_training_mode_is_refused(tokenizer, task_a):
    from conftest import build_model

    model = build_model("native", tokenizer).train()
    pairs = ti.make_prompt_pairs(model, task_a, n=2, n_shots=2)
    with pytest.raises(ModelStateError, match="eval"):
        ti.head_patching(model, pairs)


def test_logit_diff_uses_the_corrupted_answer_as_contrast(native_model, task_a, pairs_by_arch):
    pairs = pairs_by_arch(native_model, task_a, corruption="corrupted_query")
    res = ti.head_patching(native_model, pairs, metric="logit_diff")
    rows = torch.arange(len(pairs))
    with torch.no_grad():
        logits = native_model(pairs.clean.tokens)[rows, pairs.clean.query_pos]
    expected = logits[rows, pairs.clean.answer_tokens] - logits[rows, pairs.corrupted.answer_tokens]
    torch.testing.assert_close(res.clean_metric, expected, atol=TOL, rtol=0)


def test_result_views_and_round_trip(native_model, task_a, pairs_by_arch, tmp_path):
    pairs = pairs_by_arch(native_model, task_a)
    res = ti.head_patching(native_model, pairs)
    n_layers, n_heads = native_model.cfg.n_layers, native_model.cfg.n_heads
    mean = res.mean()
    top = res.top_heads(3)
    assert [float(mean[h]) for h in top] == sorted((float(v) for v in mean.flatten()), reverse=True)[:3]
    assert [float(mean[h]) for h in res.top_heads(3, largest=False)] == sorted(float(v) for v in mean.flatten())[:3]
    lo, hi = res.ci()
    assert bool((lo <= mean + 1e-7).all() and (mean <= hi + 1e-7).all())
    df = res.to_dataframe()
    assert len(df) == n_layers * n_heads and {"layer", "head", "effect", "ci_low", "ci_high"} <= set(df.columns)
    assert len(res.to_dataframe(per_example=True)) == n_layers * n_heads * len(pairs)
    assert "Head patching" in res._repr_html_()
    loaded = HeadPatchingResult.load(res.save(tmp_path / "hp"))
    assert tensors_equal(res, loaded)
    with pytest.raises(dataclasses_frozen_error()):
        res.metric = "x"  # type: ignore[misc]


def test_activation_patching_view(native_model, task_a, pairs_by_arch, tmp_path):
    pairs = ti.make_prompt_pairs(native_model, task_a, n=2, n_shots=2, corruption="random_labels", seed=0,
                                 single_token="filter")
    res = ti.activation_patching(native_model, pairs, site="resid_pre")
    # At layer 0, a position holding the same token in both prompts has the same residual: zero effect.
    same = (pairs.clean.tokens == pairs.corrupted.tokens).all(0)
    assert bool(same.any()) and not bool(same.all())
    assert torch.equal(res.effects[0, same], torch.zeros_like(res.effects[0, same]))
    assert len(res.tokens) == pairs.corrupted.tokens.shape[1]
    assert tensors_equal(res, ActivationPatchingResult.load(res.save(tmp_path / "ap")))
    assert res.plot() is not None and len(res.to_dataframe()) == res.effects.shape[0] * res.effects.shape[1]


def dataclasses_frozen_error():
    import dataclasses

    return dataclasses.FrozenInstanceError


def subset_of(model) -> tuple[list, torch.Tensor]:
    """Two heads given in both accepted forms (the last one first), and their mask on the [layer, head] grid."""
    last = (model.cfg.n_layers - 1, model.cfg.n_heads - 1)
    mask = torch.zeros(model.cfg.n_layers, model.cfg.n_heads, dtype=torch.bool)
    mask[last] = mask[0, 1] = True
    return [last, ti.Head(0, 1)], mask


@pytest.mark.parametrize("method", ["fast", "naive"])
def test_head_subset_equals_the_cells_of_the_full_run(any_model, task_a, pairs_by_arch, monkeypatch, method):
    pairs = pairs_by_arch(any_model, task_a)
    heads, mask = subset_of(any_model)
    full = ti.head_patching(any_model, pairs, method=method)
    groups = []
    set_heads = _engine.set_heads
    monkeypatch.setattr(_engine, "set_heads", lambda cells, values: groups.append(list(cells)) or set_heads(cells, values))
    part = ti.head_patching(any_model, pairs, method=method, heads=heads)
    assert part.method == method
    if method == "naive":  # the very same forward passes
        assert torch.equal(part.effects[mask], full.effects[mask])
        assert part.top_heads(10) == [h for h in full.top_heads(mask.numel()) if mask[h]]
    else:  # fewer query copies: the same numbers up to float32 summation order (~1e-8 here)
        torch.testing.assert_close(part.effects[mask], full.effects[mask], atol=1e-6, rtol=0)
    assert bool(part.effects[~mask].isnan().all())
    assert torch.equal(part.clean_metric, full.clean_metric) and torch.equal(part.corrupted_metric, full.corrupted_metric)
    # one variant (a query copy, or a forward with method="naive") per requested head, nothing else
    assert groups and all(sorted(g) == sorted(ti.Head(*h) for h in heads) for g in groups)
    # views skip the heads that were not patched
    assert set(part.top_heads(10)) == {ti.Head(*h) for h in heads}
    assert bool(part.mean()[~mask].isnan().all()) and not bool(part.mean()[mask].isnan().any())
    assert len(part.to_dataframe()) == 2 and len(part.to_dataframe(per_example=True)) == 2 * len(pairs)
    assert part.info["heads"] == [str(ti.Head(*h)) for h in heads]


def test_head_subset_at_demo_positions_and_round_trip(native_model, task_a, pairs_by_arch, tmp_path):
    pairs = pairs_by_arch(native_model, task_a)
    heads, mask = subset_of(native_model)
    full = ti.head_patching(native_model, pairs, position="demo_output")
    part = ti.head_patching(native_model, pairs, position="demo_output", heads=heads)
    assert torch.equal(part.effects[mask], full.effects[mask]) and bool(part.effects[~mask].isnan().all())
    assert tensors_equal(part, HeadPatchingResult.load(part.save(tmp_path / "sub")))
    assert "L1H3" in part.summary() and part.plot() is not None
    att_full = ti.attribution_patching(native_model, pairs)
    att = ti.attribution_patching(native_model, pairs, heads=heads)
    assert torch.equal(att.effects[mask], att_full.effects[mask]) and bool(att.effects[~mask].isnan().all())


@pytest.mark.parametrize("bad,match", [([(2, 0)], "out of range"), ([(0, 4)], "out of range"),
                                       ([(-1, 0)], "out of range"), ([], "empty"), ([(True, 1)], "pairs")])
def test_bad_heads_raise_before_any_forward(native_model, task_a, pairs_by_arch, monkeypatch, bad, match):
    pairs = pairs_by_arch(native_model, task_a)
    assert (native_model.cfg.n_layers, native_model.cfg.n_heads) == (2, 4)
    monkeypatch.setattr(type(native_model), "forward", lambda *a, **k: pytest.fail("forward ran"))
    for method in ("fast", "naive"):
        with pytest.raises(TlensICLError, match=match):
            ti.head_patching(native_model, pairs, method=method, heads=bad)
        with pytest.raises(TlensICLError, match=match):
            ti.indirect_effect(native_model, task_a, method=method, heads=bad, n_mean=2, n=2, n_shots=2)
    with pytest.raises(TlensICLError, match=match):
        ti.attribution_patching(native_model, pairs, heads=bad)
