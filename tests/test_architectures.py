"""The real models' architectures, small: every analysis on the engine equals the one-forward-per-cell loop.

The tiny ``gemma3`` and ``qwen2`` models (``conftest.build_hf_model``) carry the configurations of the real
models the project runs - Gemma-3-270M (sliding-window and global layers, QK-norm, scaled and tied embeddings,
head dim 256 with 4 query heads on one key/value head, ``query_pre_attn_scalar`` 256, no soft-capping, local
and global rotary bases) and Qwen2.5-0.5B (q/k/v biases, 14 query on 2 key/value heads, untied unembedding,
no BOS) - at toy sizes. The route-level checks (key/value reuse, copies, suffix replay, capture, the ablation
sweep, head scores against ``transformer_lens.head_detector``) run on them through the architecture lists of
``test_engine.py``, ``test_heads.py`` and the ``any_model`` fixture (mediation fast == naive, head and
activation patching == ``transformer_lens.patching``); here: that the tiny models really have those traits,
and the analyses end to end (function and task vector sweeps, head ablation), each against its loop, with
no fallback warning.
"""

from __future__ import annotations

import json
import math
import warnings
from contextlib import contextmanager

import pytest
import torch
from conftest import GEMMA3_WINDOW, build_model, rounding_tol

from test_engine import _pair, batch, interventions, logprobs

import tlens_icl as ti
from tlens_icl.analyses.vectors.common import evaluate_intervention
from tlens_icl.analyses.vectors.function_vectors import (
    function_vector_from_heads,
    function_vector_sweep,
    fv_settings_batches,
)
from tlens_icl.analyses.vectors.steering import SteeringVector
from tlens_icl.analyses.vectors.task_vectors import task_vector_sweep
from tlens_icl.engine import positions as P
from tlens_icl.engine import query as Q
from tlens_icl.models import adapter
from tlens_icl.models.adapter import family, tl_major
from tlens_icl.models.gguf import cache_root

TOL = 1e-5
#: P(answer) of a random model is ~1e-4: compared relative to itself (float32 rounding: ~1e-6).
RTOL = 1e-4
ARCHS = ["gemma3", "qwen2"]


@pytest.fixture(scope="module", params=ARCHS)
def model(request, tokenizer):
    return build_model(request.param, tokenizer, n_layers=3, seed=2)


@contextmanager
def library_warnings(model):
    """Record warnings inside the block; ``warn_once`` forgets what it showed for ``model`` (fixtures are shared)."""
    adapter._WARNED.pop(model, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


def no_fallback(caught):
    """The library's fallback/inexactness warnings among ``caught`` (all start with ``tlens_icl:``)."""
    return [str(w.message) for w in caught if str(w.message).startswith("tlens_icl:")]


def test_the_tiny_models_carry_the_real_configurations(tokenizer, task_a):
    gemma_bridge = build_model("gemma3", tokenizer, n_layers=3)
    gemma = gemma_bridge.original_model
    c = gemma.config
    assert c.layer_types == ["sliding_attention", "full_attention", "sliding_attention"]
    assert (c.num_attention_heads, c.num_key_value_heads, c.head_dim) == (4, 1, 256) != (4, 1, c.hidden_size // 4)
    assert c.query_pre_attn_scalar == 256 and c.attn_logit_softcapping is None and c.final_logit_softcapping is None
    assert {k: v["rope_theta"] for k, v in c.rope_parameters.items()} == {"full_attention": 1e6, "sliding_attention": 1e4}
    attn = gemma.model.layers[0].self_attn
    assert attn.q_norm is not None and attn.k_norm is not None  # QK-norm
    assert gemma.lm_head.weight is gemma.model.embed_tokens.weight  # tied
    assert float(gemma.model.embed_tokens.embed_scale) == pytest.approx(math.sqrt(c.hidden_size))
    shortest = int(ti.make_prompts(gemma_bridge, task_a, n=8, n_shots=2).attention_mask.sum(1).min())
    assert c.sliding_window == GEMMA3_WINDOW < shortest // 2  # the window matters on every test prompt

    qwen = build_model("qwen2", tokenizer, n_layers=3).original_model
    c = qwen.config
    assert (c.num_attention_heads, c.num_key_value_heads) == (14, 2) and c.sliding_window is None
    assert not c.tie_word_embeddings and not torch.equal(qwen.lm_head.weight, qwen.model.embed_tokens.weight)
    attn = qwen.model.layers[0].self_attn
    assert all(float(p.bias.detach().abs().min()) > 0 for p in (attn.q_proj, attn.k_proj, attn.v_proj))  # non-zero
    assert attn.o_proj.bias is None


@pytest.mark.tl3
@pytest.mark.skipif(tl_major() >= 4, reason="tests/test_engine.py checks every route on these models under TL 4")
def test_key_value_reuse_and_suffix_replay_on_transformer_lens_3_bridges(model):
    """TransformerLens 3.9's bridges share 4.x's attention code: the kv route and suffix replay run there too
    (no 4-D mask over Gemma 3's window), equal to one forward per variant / per cell."""
    assert family(model) == "tl3_bridge"
    toks, q = batch(model.cfg.d_vocab)
    iv = interventions(model)
    naive = Q.query_interventions(model, toks, q, iv, logprobs, method="naive", batch_size=3)
    with library_warnings(model) as caught:
        run = Q.query_interventions(model, toks, q, iv, logprobs, batch_size=3)
        clean, corrupted, q2 = _pair(model.cfg.d_vocab)
        reduce = lambda lg, r: lg.log_softmax(-1)[:, 5]  # noqa: E731
        replay = P.patch_layer_positions(model, corrupted, clean, q2, "resid_pre", reduce, batch_size=3)
    assert not no_fallback(caught) and run.method == replay.method == "kv"
    torch.testing.assert_close(run.values, naive.values, atol=rounding_tol(naive.values), rtol=0)
    loop = P.patch_layer_positions(model, corrupted, clean, q2, "resid_pre", reduce, method="naive", batch_size=3)
    torch.testing.assert_close(replay.effects, loop.effects, atol=rounding_tol(loop.base_score), rtol=0)


#: The converted real models (the cache folder names of ``load_model``) whose configurations the tiny ones copy.
REAL = {"gemma3": "gemma-3-270m", "qwen2": "qwen2.5-coder-0.5b"}
#: Fields that must agree exactly (everything but the sizes).
SAME = ("model_type", "query_pre_attn_scalar", "attn_logit_softcapping", "final_logit_softcapping",
        "tie_word_embeddings", "attention_bias", "hidden_activation", "hidden_act", "use_sliding_window", "head_dim",
        "rope_parameters", "use_bidirectional_attention")


@pytest.mark.real_llm  # reads the converted real model's config.json (no load)
@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_configurations_agree_with_the_converted_real_models(arch, tokenizer):
    """Where the real model is cached (``load_model`` converted it), its config differs from the tiny one in sizes only."""
    path = cache_root() / REAL[arch] / "config.json"
    if not path.exists():
        pytest.skip(f"{REAL[arch]} is not converted in {cache_root()} (load_model('{REAL[arch]}') converts it)")
    real = json.loads(path.read_text())
    hf = build_model(arch, tokenizer, n_layers=3).original_model
    assert real["architectures"] == [type(hf).__name__]
    tiny = hf.config.to_dict()
    for key in SAME:
        assert tiny.get(key) == real.get(key), key
    heads = lambda c: c["num_attention_heads"] // c["num_key_value_heads"]  # noqa: E731 - query heads per group
    assert heads(tiny) == heads(real) and set(tiny["layer_types"]) == set(real["layer_types"])
    if real.get("sliding_window"):
        assert tiny["sliding_window"] < real["sliding_window"]  # scaled down with the prompts


def test_indirect_effect_takes_the_key_value_route_without_fallback(model, task_a):
    kw = dict(n_mean=3, n=3, n_shots=3, metric="logprob")  # P(answer) of a random model is ~1e-6
    with library_warnings(model) as caught:
        fast = ti.indirect_effect(model, task_a, method="fast", **kw)
    assert not no_fallback(caught)
    naive = ti.indirect_effect(model, task_a, method="naive", **kw)
    torch.testing.assert_close(fast.effects, naive.effects, atol=rounding_tol(naive.corrupted_metric), rtol=0)
    assert float(naive.effects.abs().max()) > 0.05  # patching a head moves the answer's log-probability


def test_vector_sweeps_equal_one_forward_per_layer(model, task_a):
    """function_vector_sweep and task_vector_sweep (engine: one base run, query copies) == a forward per layer."""
    n_layers = model.cfg.n_layers
    fv = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0)) * 4
    settings = ("zero_shot", "shuffled_labels")
    tv = ti.task_vector(model, task_a, n=4, n_shots=3)
    with library_warnings(model) as caught:
        fsweep = function_vector_sweep(model, fv, task_a, settings=settings, n=6, n_shots=3, coeff=2.0)
        tsweep = task_vector_sweep(model, tv, task_a, n=6)
    assert not no_fallback(caught)
    batches = fv_settings_batches(model, task_a, settings, n=6, n_shots=3, seed=0)
    for s, setting in enumerate(settings):
        for L in range(n_layers):
            correct, p = evaluate_intervention(model, batches[setting], lambda sub, L=L: SteeringVector(
                fv, L, coeff=2.0).as_hooks(model, query_pos=sub.query_pos))
            torch.testing.assert_close(fsweep.answer_prob[s, L], p, atol=0, rtol=RTOL)
            assert torch.equal(fsweep.correct[s, L], correct)
    batch = ti.make_prompts(model, task_a, n=6, n_shots=0, seed=0)
    for L in range(n_layers):
        correct, p = evaluate_intervention(model, batch, lambda sub, L=L: tv.to_steering_vector(
            layer=L).as_hooks(model, query_pos=sub.query_pos))
        torch.testing.assert_close(tsweep.answer_prob[0, L], p, atol=0, rtol=RTOL)
        assert torch.equal(tsweep.correct[0, L], correct)
    for sweep in (fsweep, tsweep):  # the vectors move P(answer) by far more than the tolerance
        assert float((sweep.answer_prob / sweep.baseline_prob[:, None] - 1).abs().max()) > 0.1


@pytest.mark.parametrize("positions", ["all", "query"])
def test_head_ablation_equals_every_set_in_full(model, task_a, positions):
    """Ablation with exclusion (the sweep from each set's first layer, or query copies) == every set in full."""
    g = torch.Generator().manual_seed(1)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    rankings = {"FV": torch.rand(n_layers, n_heads, generator=g), "induction": ti.head_scores(model, n=3, length=8)}
    kw = dict(ks=(0, 1, 3), n_random=2, n=6, n_shots=3, positions=positions, loss=positions == "all", loss_n=3,
              loss_length=16, exclude=0.25)
    with library_warnings(model) as caught:
        fast = ti.head_ablation(model, [task_a], rankings, **kw)
    assert not no_fallback(caught)
    naive = ti.head_ablation(model, [task_a], rankings, method="naive", **kw)
    assert fast.heads == naive.heads
    assert torch.equal(fast.correct.nan_to_num(-1), naive.correct.nan_to_num(-1))
    torch.testing.assert_close(fast.loss, naive.loss, atol=1e-4, rtol=0, equal_nan=True)
    if positions == "all":
        assert not bool(fast.loss.isnan().all())


def test_function_vector_is_what_its_heads_write_to_the_residual_stream(model, task_a):
    """FV of heads A at layer l = the block's residual write with every head at its mean output, less the write
    with A silenced (z = 0). Gemma 3 normalizes the attention output before the residual stream (post-attention
    norm), so there the raw sum of ``mean_z @ W_O`` is on another scale; Qwen2 adds it as it is."""
    from tlens_icl.engine import hooks

    batch = ti.make_prompts(model, task_a, n=3, n_shots=2, seed=0)
    gen = torch.Generator().manual_seed(5)
    cfg = model.cfg
    mean_z = torch.randn(cfg.n_layers, cfg.n_heads, cfg.d_head, generator=gen)
    rows = torch.arange(len(batch.query_pos))

    def write(layer, silenced):
        """The residual write of block ``layer``'s attention at each query (resid_mid - resid_pre), with its heads'
        z set to ``mean_z`` there and the ``silenced`` heads' z to 0."""
        got = {}

        def set_z(act, hook):
            act = act.clone()
            act[rows, batch.query_pos] = mean_z[layer].to(act.dtype)
            for j in silenced:
                act[rows, batch.query_pos, j] = 0.0
            return act

        def grab(name):
            def fn(act, hook):
                got[name] = act[rows, batch.query_pos].detach().float()
            return fn

        mid = hooks.resid_pre(layer).replace("hook_resid_pre", "hook_resid_mid")
        with hooks.checked_hooks(model, [(hooks.z(layer), set_z), (hooks.resid_pre(layer), grab("pre")),
                                         (mid, grab("mid"))]), torch.no_grad():
            model(batch.tokens)
        return got["mid"] - got["pre"]

    post_norm = adapter.attn_post_norm(model, 1) is not None
    assert post_norm == (family(model) != "qwen2" and "gemma" in type(model.original_model).__name__.lower())
    for layer in range(cfg.n_layers):
        every = write(layer, [])
        for heads in ([(layer, 0)], [(layer, j) for j in range(cfg.n_heads)]):
            fv = function_vector_from_heads(model, mean_z, heads, include_bias=True)
            expected = every - write(layer, [j for _, j in heads])  # identical rows: the write does not vary
            torch.testing.assert_close(fv.vector.expand_as(expected), expected, atol=1e-4, rtol=1e-4)
        raw = sum(mean_z[layer, j] @ adapter.head_output_weights(model, layer)[j] for j in range(cfg.n_heads))
        ratio = float(fv.vector.norm() / raw.norm())
        assert (abs(ratio - 1) > 0.2) if post_norm else ratio == pytest.approx(1, abs=1e-4)
