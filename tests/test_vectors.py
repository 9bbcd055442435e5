"""Function vectors, task vectors, in-context vectors, soft injection and the one-protocol comparison.

Truths: hand-computed FV; zero-coefficient / zero-strength / zero-weight interventions are no-ops;
injection at layer L leaves earlier activations unchanged; a prompt's own task vector patched back is a
no-op; soft weight 1 == hard replacement; decoding equals the model's own unembedding.
"""

from __future__ import annotations

from tlens_icl.prompts.spec import stream_seed

import math
import pytest
import torch

from tlens_icl import TlensICLError, make_prompt_pairs, make_prompts
from tlens_icl.errors import HookNotFiredError
from tlens_icl.analyses.vectors.common import (
    LayerSweepResult,
    mean_head_activations,
)
from tlens_icl.workflows.compare import (
    ComparisonResult,
    bootstrap_mean_ci,
    compare_methods,
)
from tlens_icl.analyses.vectors.function_vectors import (
    FunctionVector,
    function_vector,
    function_vector_from_heads,
    function_vector_from_task,
    function_vector_sweep,
)
from tlens_icl.analyses.vectors.icv import (
    InContextVector,
    _with_answers,
    in_context_vector,
)
from tlens_icl.analyses.vectors.soft_injection import (
    SoftInjection,
    soft_injection,
)
from tlens_icl.analyses.vectors.task_vectors import (
    TaskVector,
    task_vector,
    task_vector_from_prompts,
    task_vector_sweep,
)
from tlens_icl.analyses.vectors.steering import SteeringVector, generate, steer
from tlens_icl.engine import hooks as H
from tlens_icl.results.base import tensors_equal

HEADS = [(0, 1), (1, 2), (1, 0)]


def _batch(model, task, n=4, n_shots=3, seed=0):
    return make_prompts(model, task, n=n, n_shots=n_shots, seed=seed)


def _logits(model, batch):
    with torch.no_grad():
        return model(batch.tokens)


def _cache(model, batch, names):
    with torch.no_grad():
        _, cache = model.run_with_cache(batch.tokens, names_filter=names)
    return {n: cache[n].clone() for n in names}


# ---- function vectors -----------------------------------------------------------------------------------
def test_function_vector_equals_hand_computed_sum(any_model, task_a):
    batch = _batch(any_model, task_a, n=6)
    fv = function_vector_from_task(any_model, task_a, HEADS, n=6, n_shots=3)
    rows = torch.arange(len(batch))
    from conftest import hand_function_vector

    mean_z = torch.zeros(any_model.cfg.n_layers, any_model.cfg.n_heads, any_model.cfg.d_head)
    with torch.no_grad():
        for layer in {l for l, _ in HEADS}:  # every head's mean at the query (a post-attention norm needs them all)
            _, cache = any_model.run_with_cache(batch.tokens, names_filter=H.z(layer))
            mean_z[layer] = cache[H.z(layer)][rows, batch.query_pos].mean(0)
    ref = hand_function_vector(any_model, mean_z, HEADS)
    torch.testing.assert_close(fv.vector, ref, atol=1e-5, rtol=1e-5)
    assert fv.heads == tuple(HEADS) and fv.task == "toy_a"


def test_function_vector_bias_counted_once_per_layer(native_model, task_a):
    mean_z = mean_head_activations(native_model, _batch(native_model, task_a))
    plain = function_vector_from_heads(native_model, mean_z, HEADS)
    biased = function_vector_from_heads(native_model, mean_z, HEADS, include_bias=True)
    with torch.no_grad():
        expected = plain.vector + native_model.b_O[0] + native_model.b_O[1]  # layers 0 and 1, once each
    torch.testing.assert_close(biased.vector, expected)


def test_function_vector_from_mediation_result(native_model, task_a):
    from tlens_icl.analyses.causal.mediation import indirect_effect

    med = indirect_effect(native_model, task_a, n_mean=6, n=4, n_shots=3)
    fv = function_vector(native_model, med, task="toy_a", k=3)
    ref = function_vector_from_heads(native_model, med.mean_z[0], med.top_heads(3))
    assert fv.heads == tuple(tuple(h) for h in med.top_heads(3))
    torch.testing.assert_close(fv.vector, ref.vector)
    with pytest.raises(TlensICLError, match="no task"):
        function_vector(native_model, med, task="nope")


def test_function_vector_arithmetic(native_model, task_a, task_b):
    a = function_vector_from_task(native_model, task_a, HEADS, n=4, n_shots=3)
    b = function_vector_from_task(native_model, task_b, [(0, 0)], n=4, n_shots=3)
    both = a + b
    torch.testing.assert_close(both.vector, a.vector + b.vector)
    assert set(both.heads) == set(HEADS) | {(0, 0)} and both.task == "toy_a+toy_b"
    assert torch.equal((a - a).vector, torch.zeros_like(a.vector))
    torch.testing.assert_close((2 * a).vector, a.vector * 2)
    torch.testing.assert_close((-a).vector, -a.vector)


def test_vector_default_layer_and_training_mode(native_model, task_a):
    from tlens_icl.errors import ModelStateError

    fv = function_vector_from_task(native_model, task_a, HEADS, n=4, n_shots=3).with_layer(1)
    batch = _batch(native_model, task_a)
    ref = _cache(native_model, batch, [H.resid_post(1)])[H.resid_post(1)]
    with steer(native_model, fv.to_steering_vector(position="all")):  # layer taken from the vector
        got = _cache(native_model, batch, [H.resid_post(1)])[H.resid_post(1)]
    torch.testing.assert_close(got, ref + fv.vector)
    native_model.train()
    try:
        with pytest.raises(ModelStateError):
            task_vector(native_model, task_a, n=2, n_shots=1)
    finally:
        native_model.eval()


def test_function_vector_rejects_bad_heads(native_model):
    mean_z = torch.zeros(2, 4, 16)
    with pytest.raises(TlensICLError, match="outside"):
        function_vector_from_heads(native_model, mean_z, [(5, 0)])
    with pytest.raises(TlensICLError, match="Duplicate"):
        function_vector_from_heads(native_model, mean_z, [(0, 0), (0, 0)])
    with pytest.raises(TlensICLError, match="mean_z"):
        function_vector_from_heads(native_model, torch.zeros(2, 4, 8), [(0, 0)])


# ---- adding a vector (mode "add") -------------------------------------------------------------------------
def test_add_zero_coefficient_is_bit_identical(any_model, task_a):
    batch = _batch(any_model, task_a)
    v = torch.randn(any_model.cfg.d_model)
    ref = _logits(any_model, batch)
    for position in ("query", "all"):
        with steer(any_model, SteeringVector(v, 0, coeff=0.0, position=position), query_pos=batch.query_pos):
            out = _logits(any_model, batch)
        assert torch.equal(out, ref)


def test_add_leaves_earlier_layers_unchanged(any_model, task_a):
    batch = _batch(any_model, task_a)
    v = torch.randn(any_model.cfg.d_model)  # random, so LayerNorm centring cannot remove it
    earlier = [H.resid_pre(0), H.resid_post(0), H.resid_pre(1), H.z(1)]
    names = earlier + [H.resid_post(1)]
    ref = _cache(any_model, batch, names)
    with steer(any_model, SteeringVector(v, 1), query_pos=batch.query_pos):
        got = _cache(any_model, batch, names)
    for n in earlier:
        assert torch.equal(got[n], ref[n]), n
    expected = ref[H.resid_post(1)].clone()
    expected[torch.arange(len(batch)), batch.query_pos] += v
    torch.testing.assert_close(got[H.resid_post(1)], expected)
    ref_logits = _logits(any_model, batch)
    with steer(any_model, SteeringVector(v, 1), query_pos=batch.query_pos):
        assert not torch.allclose(_logits(any_model, batch), ref_logits)


def test_add_all_positions_and_resid_pre(native_model, task_a):
    batch = _batch(native_model, task_a)
    v = torch.randn(native_model.cfg.d_model)
    ref = _cache(native_model, batch, [H.resid_pre(1)])[H.resid_pre(1)]
    with steer(native_model, SteeringVector(v, 1, position="all", site="resid_pre")):
        got = _cache(native_model, batch, [H.resid_pre(1)])[H.resid_pre(1)]
    torch.testing.assert_close(got, ref + v)


def test_every_intervention_raises_when_its_hooks_never_fire(native_model, task_a):
    cfg = native_model.cfg
    si = _si(native_model, torch.zeros(cfg.n_layers, cfg.n_heads))
    icv = in_context_vector(native_model, task_a, n=4)
    vectors = [SteeringVector(torch.randn(cfg.d_model), 1),
               SteeringVector.from_task_vector(torch.randn(cfg.d_model), layer=1),
               icv.to_steering_vector(), si.to_steering_vector()]
    managers = [lambda sv=sv: steer(native_model, sv) for sv in vectors] + [lambda: steer(native_model, *vectors)]
    for make in managers:
        with pytest.raises(HookNotFiredError):
            with make():
                pass


def test_vector_options_are_validated_before_running(native_model):
    from tlens_icl.analyses.vectors.common import check_position, resid_hook_name

    v = torch.randn(native_model.cfg.d_model)
    with pytest.raises(TlensICLError, match="layer"):
        with steer(native_model, SteeringVector(v, 7)):
            pass
    with pytest.raises(TlensICLError, match="d_model"):
        with steer(native_model, SteeringVector(torch.randn(3), 0)):
            pass
    with pytest.raises(TlensICLError, match="position"):
        check_position("middle")
    with pytest.raises(TlensICLError, match="resid_mid"):
        resid_hook_name("resid_mid", 0)


@pytest.mark.parametrize("arch", ["native", "gpt2"])  # native generates without a KV cache, GPT-2 with one
def test_generate_adds_at_the_query_and_every_generated_token(arch, tokenizer):
    from conftest import build_model

    model = build_model(arch, tokenizer)
    tokens = model.to_tokens("in1 -> a1 \n in2 ->")
    v = 3 * torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(1))
    out = generate(model, tokens, steering=SteeringVector(v, 1), max_new_tokens=4, stop_at_eos=False)
    q = tokens.shape[1] - 1

    def hook(act, hook):
        act = act.clone()
        act[:, q:] += v
        return act

    cur = tokens.clone()
    with torch.no_grad():
        for _ in range(4):
            with model.hooks([(H.resid_post(1), hook)]):
                nxt = model(cur)[:, -1].argmax(-1, keepdim=True)
            cur = torch.cat([cur, nxt], 1)
    assert out.tolist() == cur.tolist()


def test_function_vector_sweep_coeff_zero_equals_baseline(native_model, task_a):
    fv = function_vector_from_task(native_model, task_a, HEADS, n=4, n_shots=3)
    sweep = function_vector_sweep(native_model, fv, task_a, n=6, n_shots=3, coeff=0.0,
                                  settings=("zero_shot", "shuffled_labels", "icl"))
    assert sweep.correct.shape == (3, 2, 6)
    for s in range(3):
        for layer in range(2):
            assert torch.equal(sweep.answer_prob[s, layer], sweep.baseline_prob[s])
    zs = make_prompts(native_model, task_a, n=6, n_shots=0, seed=0)
    shuffled = make_prompt_pairs(native_model, task_a, n=6, n_shots=3, seed=0).corrupted
    assert zs.queries == shuffled.queries  # the same query items in every setting
    assert sweep.best_layer("zero_shot") in (0, 1)
    df = sweep.to_dataframe()
    assert len(df) == 6 and set(df["setting"]) == {"zero_shot", "shuffled_labels", "icl"}


def test_decode_matches_the_models_unembedding(any_model, task_a):
    batch = _batch(any_model, task_a, n=1)
    last = any_model.cfg.n_layers - 1
    tv = task_vector_from_prompts(any_model, batch)
    top_token, value = tv.decode(any_model, 1, layer=last)[0]
    logits = _logits(any_model, batch)[0, batch.query_pos[0]]
    assert top_token == any_model.tokenizer.decode([int(logits.argmax())])
    # the logit too: many byte-level tokens decode to the same string ('\ufffd')
    cap = getattr(getattr(getattr(any_model, "original_model", None), "config", None), "final_logit_softcapping", None)
    if cap:  # Gemma 2 soft-caps its logits; the decoded vector is read before the cap
        value = cap * math.tanh(value / cap)
    assert value == pytest.approx(float(logits.max()), abs=1e-4 * (1 + abs(value)))
    fv = function_vector_from_heads(any_model, mean_head_activations(any_model, batch), HEADS)
    assert len(fv.decode(any_model, 5)) == 5


# ---- task vectors ---------------------------------------------------------------------------------------------
def test_own_task_vector_patched_back_is_a_no_op(any_model, task_a):
    batch = _batch(any_model, task_a, n=1)
    tv = task_vector_from_prompts(any_model, batch)
    ref = _logits(any_model, batch)
    for layer in range(any_model.cfg.n_layers):
        with steer(any_model, tv.to_steering_vector(layer=layer), query_pos=batch.query_pos):
            out = _logits(any_model, batch)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    other = task_vector_from_prompts(any_model, _batch(any_model, task_a, n=1, seed=5))
    with steer(any_model, other.to_steering_vector(layer=0), query_pos=batch.query_pos):
        assert not torch.allclose(_logits(any_model, batch), ref)


def test_task_vector_is_mean_query_residual(native_model, task_a):
    tv = task_vector(native_model, task_a, n=5, n_shots=3, seed=2)
    batch = make_prompts(native_model, task_a, n=5, n_shots=3, seed=2)
    cache = _cache(native_model, batch, [H.resid_post(1)])[H.resid_post(1)]
    torch.testing.assert_close(tv.at(1), cache[torch.arange(5), batch.query_pos].mean(0))
    assert tv.n_shots == 3 and tv.layer is None
    with pytest.raises(TlensICLError, match="chosen layer"):
        _ = tv.vector
    sweep = task_vector_sweep(native_model, tv, task_a, n=4)
    assert sweep.layers == (0, 1) and sweep.settings == ("zero_shot",)
    assert tv.with_layer(sweep.best_layer()).vector.shape == (native_model.cfg.d_model,)


# ---- in-context vectors ----------------------------------------------------------------------------------------
def test_icv_strength_zero_is_a_no_op_and_positive_strength_steers(any_model, task_a):
    icv = in_context_vector(any_model, task_a, n=6)
    assert icv.directions.shape == (any_model.cfg.n_layers, any_model.cfg.d_model)
    batch = _batch(any_model, task_a, n_shots=0)
    ref = _logits(any_model, batch)
    with steer(any_model, icv.to_steering_vector(coeff=0.0)):
        torch.testing.assert_close(_logits(any_model, batch), ref, atol=1e-4, rtol=1e-4)
    with steer(any_model, icv.to_steering_vector(coeff=1.0)):
        assert not torch.allclose(_logits(any_model, batch), ref, atol=1e-3)


def test_icv_preserves_norms_and_is_pc1(native_model, task_a):
    from tlens_icl.analyses.vectors.steering import norm_preserving

    x, v = torch.randn(5, 7, 64), torch.randn(64)
    torch.testing.assert_close(norm_preserving(x, v, 0.7).norm(dim=-1), x.norm(dim=-1))
    icv = in_context_vector(native_model, task_a, n=8, contrast="icl", n_shots=3)
    flat = icv.directions.flatten()
    torch.testing.assert_close(flat.norm(), torch.tensor(1.0))  # a unit principal axis
    assert float(flat @ icv.mean_difference.flatten()) > 0  # sign aligned with the mean difference
    assert 0 < icv.explained_variance_ratio <= 1


def test_icv_pair_prompts_append_the_answer(native_model, task_a):
    zs = make_prompts(native_model, task_a, n=3, n_shots=0)
    pos = _with_answers(zs)
    for i in range(3):
        text = native_model.tokenizer.decode(pos.tokens[i, 1:int(pos.query_pos[i]) + 1])
        assert text.split() == (zs.prompts[i] + zs.answers[i]).split()


# ---- soft injection -----------------------------------------------------------------------------------------------
def _si(model, theta, emb=None):
    shape = (model.cfg.n_layers, model.cfg.n_heads)
    emb = emb if emb is not None else torch.randn(*shape, model.cfg.d_head)
    return SoftInjection(emb, theta, torch.zeros(0), "toy", {})


def test_soft_injection_weight_zero_is_a_no_op(any_model, task_a):
    batch = _batch(any_model, task_a, n_shots=0)
    si = _si(any_model, torch.full((any_model.cfg.n_layers, any_model.cfg.n_heads), float("-inf")))
    assert torch.equal(si.alpha, torch.zeros_like(si.alpha))
    ref = _logits(any_model, batch)
    with steer(any_model, si.to_steering_vector(), query_pos=batch.query_pos):
        assert torch.equal(_logits(any_model, batch), ref)


def test_soft_injection_weight_one_is_hard_replacement(any_model, task_a):
    batch = _batch(any_model, task_a, n_shots=0)
    theta = torch.full((any_model.cfg.n_layers, any_model.cfg.n_heads), float("-inf"))
    theta[1, 2] = float("inf")
    si = _si(any_model, theta)
    rows = torch.arange(len(batch))

    def replace_head(z, hook):
        z = z.clone()
        z[rows, batch.query_pos, 2] = si.embeddings[1, 2]
        return z

    with torch.no_grad(), any_model.hooks([(H.z(1), replace_head)]):
        ref = any_model(batch.tokens)
    with steer(any_model, si.to_steering_vector(), query_pos=batch.query_pos):
        out = _logits(any_model, batch)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(out, _logits(any_model, batch))


def test_soft_injection_trains_only_theta(native_model, task_a):
    si = soft_injection(native_model, task_a, n_mean=6, n_shots=3, n_fit=8, steps=3, train_batch_size=4)
    assert all(p.grad is None for p in native_model.parameters())
    assert si.losses.shape == (3,) and not torch.equal(si.theta, torch.zeros_like(si.theta))
    mean_prompts = make_prompts(native_model, task_a, n=6, n_shots=3, seed=stream_seed(0, "mean"))  # the mean stream
    torch.testing.assert_close(si.embeddings, mean_head_activations(native_model, mean_prompts))
    zero = soft_injection(native_model, task_a, n_mean=6, n_shots=3, n_fit=8, steps=0)
    assert torch.equal(zero.alpha, torch.full_like(zero.alpha, 0.5))


def test_soft_injection_trains_the_blend_it_applies(native_model, task_a):
    """Step 2's training loss is the loss of the steering vector made from step 1's theta (the same blend)."""
    from tlens_icl.analyses.vectors.steering import evaluate_steering

    kw = dict(n_mean=4, n_shots=3, n_fit=6, train_batch_size=6, lr=0.5)  # every train prompt in each step
    one = soft_injection(native_model, task_a, steps=1, **kw)
    two = soft_injection(native_model, task_a, steps=2, **kw)
    assert torch.equal(one.losses[0], two.losses[0]) and float((one.alpha - 0.5).abs().min()) > 0.05
    train = make_prompts(native_model, task_a, n=6, n_shots=0, seed=stream_seed(0, "fit"))  # its fit stream
    p = evaluate_steering(native_model, train, one.to_steering_vector()).answer_prob
    torch.testing.assert_close(two.losses[1], -p.log().mean(), atol=1e-4, rtol=1e-4)


# ---- results ------------------------------------------------------------------------------------------------------
def test_vector_results_round_trip(native_model, task_a, tmp_path):
    fv = function_vector_from_task(native_model, task_a, HEADS, n=4, n_shots=3).with_layer(1)
    tv = task_vector(native_model, task_a, n=4, n_shots=3)
    icv = in_context_vector(native_model, task_a, n=4)
    si = soft_injection(native_model, task_a, n_mean=4, n_shots=3, n_fit=4, steps=1)
    sweep = function_vector_sweep(native_model, fv, task_a, n=4, n_shots=3)
    for i, (res, cls) in enumerate([(fv, FunctionVector), (tv, TaskVector), (icv, InContextVector),
                                    (si, SoftInjection), (sweep, LayerSweepResult)]):
        loaded = cls.load(res.save(tmp_path / str(i)))
        assert tensors_equal(res, loaded), cls.__name__
        if cls is not LayerSweepResult:
            assert tensors_equal(res.to("cpu"), res)
        assert isinstance(res.summary(), str) and len(res.to_dataframe()) > 0
        assert "<img" in res._repr_html_()


# ---- the one-protocol comparison ----------------------------------------------------------------------------------
def test_compare_methods_one_protocol(native_model, task_a, task_b, tmp_path):
    res = compare_methods(native_model, [task_a, task_b], n=6, n_fit=6, n_shots=3, soft_steps=2,
                          fv_heads=HEADS, icv_strengths=(0.0, 0.1))
    assert res.methods == ("zero_shot", "icl", "function_vector", "task_vector", "icv", "soft_injection")
    assert res.correct.shape == (6, 2, 6)
    # Baselines equal a direct evaluation of the same held-out items.
    from tlens_icl.analyses.vectors.common import evaluate_intervention

    train, test = task_a.split(0.3, seed=0)
    correct, p = evaluate_intervention(native_model, make_prompts(native_model, test, n=6, n_shots=0))
    assert torch.equal(res.correct[0, 0], correct) and torch.equal(res.answer_prob[0, 0], p)
    assert {q.input for q in make_prompts(native_model, test, n=6, n_shots=0).queries}.isdisjoint(
        {it.input for it in train.items})
    # Filtering keeps exactly the ICL-correct items.
    table = res.table(filtered=True)
    for t in res.tasks:
        if res.icl_correct()[res.tasks.index(t)].any():
            assert table.loc["icl", t] == 1.0
    assert res.chosen["toy_a"]["function_vector"]["heads"] == [list(h) for h in HEADS]
    assert res.chosen["toy_a"]["icv"]["strength"] in (0.0, 0.1)
    df = res.to_dataframe()
    assert len(df) == 6 * 2 * 2 and set(df["subset"]) == {"all", "icl_correct"}
    assert tensors_equal(res, ComparisonResult.load(res.save(tmp_path)))


def test_bootstrap_ci_brackets_the_mean():
    x = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0])
    lo, hi = bootstrap_mean_ci(x)
    assert lo <= float(x.mean()) <= hi and 0 <= lo < hi <= 1
    assert bootstrap_mean_ci(torch.ones(4)) == (1.0, 1.0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(methods=["steering"]), "Unknown method"), (dict(fv_corruption="bogus"), "fv_corruption"),
    (dict(icv_direction="pc2"), "icv_direction"), (dict(n_fit=1), "n_fit"),
])
def test_compare_methods_rejects_bad_options_before_running(native_model, task_a, kwargs, match):
    with pytest.raises(TlensICLError, match=match):
        compare_methods(native_model, task_a, **kwargs)


def test_vectors_cli_writes_table_and_plots(tokenizer, task_a, task_b, tmp_path, capsys, monkeypatch):
    from transformers import GPT2Config, GPT2LMHeadModel

    from tlens_icl import tasks
    from tlens_icl.cli.main import main

    model_dir = tmp_path / "gpt2-tiny"
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=2,
                               bos_token_id=1, eos_token_id=2, pad_token_id=0)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    for t in (task_a, task_b):  # registered for this test only
        monkeypatch.setitem(tasks._USER_TASKS, t.name, t)
    out = tmp_path / "out"
    code = main(["vectors", "--model", str(model_dir), "toy_a", "toy_b", "--shots", "3", "--n", "4",
                 "--n-fit", "4", "--soft-steps", "1", "--fv-k", "2", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "function_vector" in printed and "soft_injection" in printed
    for name in ("comparison.csv", "table_all.csv", "table_icl_correct.csv", "comparison_all.png",
                 "comparison_icl_correct.png", "comparison_layers.png", "meta.json", "tensors.safetensors",
                 "index.html"):
        assert (out / name).exists(), name
    assert ComparisonResult.load(out).tasks == ("toy_a", "toy_b")


def test_function_vector_restores_zero_shot_accuracy_on_embedded_model(embedded_model):
    from tlens_icl import indirect_effect
    from tlens_icl.prompts.pairs import usable_task

    train, test = usable_task(embedded_model, "uppercase").split(0.3, seed=0)
    med = indirect_effect(embedded_model, train, n_mean=16, n=8, n_shots=8, corruption="zero_shot")
    fv = function_vector(embedded_model, med, task="uppercase", k=10)
    sweep = function_vector_sweep(embedded_model, fv, test, settings=("zero_shot",), n=32, layers=[0, 1])
    gain = float(sweep.accuracy().max() - sweep.baseline_accuracy()[0])
    assert gain >= 0.3, sweep.summary()
