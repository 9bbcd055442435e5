"""The one way to apply a vector: SteeringVector, steer, evaluate_steering, generate.

Truths: each method's steering vector writes exactly what its paper's formula writes (hand-written hooks, bit
for bit); the engine's query route of a steering vector scores as its hooks do; replace interpolates and writes
the vector exactly at coeff 1; several vectors at once equal nested blocks; a file round trip applies the same
edit; batched, padded generation gives every row what it gives alone (BPE fixtures and icl-tiny) and equals a
hand-written full-forward loop.
"""

from __future__ import annotations


import pytest
import torch

from conftest import without_typechecker

import tlens_icl as ti
from tlens_icl.analyses.vectors.function_vectors import function_vector_from_task
from tlens_icl.prompts.pairs import usable_task
from tlens_icl import TlensICLError, make_prompts
from tlens_icl.errors import HookNotFiredError, ModelStateError
from tlens_icl.analyses.vectors.common import evaluate_intervention, evaluate_query_interventions
from tlens_icl.analyses.vectors.steering import MODES, SteeringVector, evaluate_steering, generate, steer
from tlens_icl.engine import hooks as H

HEADS = [(0, 1), (1, 2), (1, 0)]


def _logits(model, tokens):
    with torch.no_grad():
        return model(tokens)


def _hand(model, tokens, fwd):
    """Logits with plain TransformerLens hooks (the reference computation)."""
    with torch.no_grad(), model.hooks(fwd):
        return model(tokens)


def _unit(t):
    return t / t.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@pytest.fixture(scope="module")
def vectors(native_model, task_a):
    fv = function_vector_from_task(native_model, task_a, HEADS, n=4, n_shots=3).with_layer(1)
    tv = ti.task_vector(native_model, task_a, n=4, n_shots=3, seed=4).with_layer(0)
    icv = ti.in_context_vector(native_model, task_a, n=6)
    si = ti.soft_injection(native_model, task_a, n_mean=4, n_shots=3, n_fit=4, steps=2)
    return fv, tv, icv, si


# ---- the object -----------------------------------------------------------------------------------------------
def test_modes_come_from_one_table_and_every_field_is_validated(native_model):
    d = native_model.cfg.d_model
    v = torch.randn(d)
    assert set(MODES) == {"add", "replace", "norm_preserving"} and SteeringVector.MODES is MODES
    for kwargs, match in [
        (dict(mode="scale"), "mode must be one of"), (dict(site="resid_mid"), "site must be one of"),
        (dict(position=-1), "position must be"), (dict(position="middle"), "position must be"),
        (dict(coeff=float("nan")), "coeff"), (dict(layers=True), "layers? must be an int"),
        (dict(layers=[0, 0]), "repeat"), (dict(layers=[]), "non-empty"),
        (dict(vector=torch.full((d,), float("nan"))), "NaN"), (dict(vector=torch.ones(3, d)), "len\\(layers\\)=1"),
        (dict(site="z"), "site 'z'"), (dict(head_weights=torch.ones(1, 4)), "site 'z'"),
    ]:
        args = {"vector": v, "layers": 0, **kwargs}
        with pytest.raises(TlensICLError, match=match), without_typechecker():
            SteeringVector(**args)
    with pytest.raises(TlensICLError, match="norm_preserving"):
        SteeringVector(torch.ones(1, 4, 16), 0, site="z", mode="norm_preserving")
    with pytest.raises(TlensICLError, match="needs layer"):
        SteeringVector.from_function_vector(v)
    sv = SteeringVector(v, [1], coeff=2)
    assert sv.layers == (1,) and sv.coeff == 2.0 and isinstance(sv.coeff, float) and sv.layer == 1
    assert sv.hook_name == H.resid_post(1) and tuple(sv) == (H.resid_post(1), v)
    with pytest.raises(TlensICLError, match="past the model"):
        SteeringVector(v, 7).check_model(native_model)
    with pytest.raises(TlensICLError, match="d_model"):
        SteeringVector(torch.ones(3), 0).check_model(native_model)
    with pytest.raises(TlensICLError, match="steering must be a SteeringVector"), without_typechecker():
        steer(native_model, v)


def test_constructors_say_what_each_method_writes_where(native_model, vectors):
    fv, tv, icv, si = vectors
    L = native_model.cfg.n_layers
    a, b, c, e = (x.to_steering_vector() for x in vectors)
    assert (a.mode, a.site, a.layers, a.position) == ("add", "resid_post", (1,), "query")
    assert (b.mode, b.site, b.layers, b.position) == ("replace", "resid_post", (0,), "query")
    assert (c.mode, c.site, c.layers, c.position, c.coeff) == ("norm_preserving", "resid_post", tuple(range(L)),
                                                                "all", 0.1)
    assert (e.mode, e.site, e.layers, e.position) == ("replace", "z", tuple(range(L)), "query")
    assert torch.equal(a.vector, fv.vector) and torch.equal(b.vector, tv.at(0))
    assert torch.equal(c.vector, icv.directions) and torch.equal(e.vector, si.embeddings)
    assert torch.equal(e.head_weights, si.alpha)
    assert SteeringVector.from_task_vector(tv, layer=1).vector.equal(tv.at(1))
    assert a.metadata["source"] == "FunctionVector" and a.metadata["model_fingerprint"] == fv.info["model_fingerprint"]


# ---- exactly what each paper writes -----------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["native", "gpt2", "llama"])
def test_each_method_writes_its_papers_formula_bit_for_bit(arch, tokenizer, task_a):
    from conftest import build_model

    model = build_model(arch, tokenizer)
    batch = make_prompts(model, task_a, n=4, n_shots=2, seed=1)  # right-padded rows of different lengths
    rows, q = torch.arange(len(batch)), batch.query_pos
    fv = function_vector_from_task(model, task_a, HEADS, n=4, n_shots=2).with_layer(1)
    tv = ti.task_vector(model, task_a, n=4, n_shots=2, seed=3)
    icv = ti.in_context_vector(model, task_a, n=5)
    si = ti.soft_injection(model, task_a, n_mean=4, n_shots=2, n_fit=4, steps=2)

    def add_fv(act, hook):  # Todd et al.: resid_post[1][query] += 2 * FV
        act = act.clone()
        act[rows, q] += 2.0 * fv.vector
        return act

    def set_tv(act, hook):  # Hendel et al.: resid_post[0][query] := theta_0
        act = act.clone()
        act[rows, q] = tv.at(0)
        return act

    def icv_at(layer):  # Liu et al.: every position, norm kept
        def fn(act, hook):
            xn, vn = _unit(act), _unit(icv.directions[layer])
            gate = 1.0 + torch.relu(-(xn * vn).sum(-1, keepdim=True))
            return act.norm(dim=-1, keepdim=True) * _unit(xn + 0.3 * gate * vn)
        return fn

    def blend_at(layer):  # Park & Rhee: z[query] <- (1 - alpha) z + alpha e, per head
        def fn(z, hook):
            z = z.clone()
            a = si.alpha[layer][:, None]
            z[rows, q] = (1 - a) * z[rows, q] + a * si.embeddings[layer]
            return z
        return fn

    layers = range(model.cfg.n_layers)
    cases = [
        (fv.to_steering_vector(coeff=2.0), [(H.resid_post(1), add_fv)]),
        (tv.to_steering_vector(layer=0), [(H.resid_post(0), set_tv)]),
        (icv.to_steering_vector(coeff=0.3), [(H.resid_post(L), icv_at(L)) for L in layers]),
        (si.to_steering_vector(), [(H.z(L), blend_at(L)) for L in layers]),
    ]
    plain = _logits(model, batch.tokens)
    for sv, fwd in cases:
        with torch.no_grad(), steer(model, sv, query_pos=batch.query_pos):
            ours = model(batch.tokens)
        ref = _hand(model, batch.tokens, fwd)
        assert torch.equal(ours, ref), (sv.mode, sv.site)
        assert not torch.allclose(ours, plain), (sv.mode, sv.site)  # each edit does something


def test_replace_interpolates_and_coefficient_one_writes_the_vector(native_model, task_a):
    batch = make_prompts(native_model, task_a, n=3, n_shots=2)
    v = torch.randn(native_model.cfg.d_model)
    rows, q = torch.arange(3), batch.query_pos
    name = H.resid_post(1)
    with torch.no_grad():
        _, cache = native_model.run_with_cache(batch.tokens, names_filter=name)
        for coeff in (0.0, 0.25, 1.0):
            with steer(native_model, SteeringVector(v, 1, mode="replace", coeff=coeff), query_pos=q):
                _, got = native_model.run_with_cache(batch.tokens, names_filter=name)
            want = cache[name].clone()
            want[rows, q] = (1 - coeff) * want[rows, q] + coeff * v
            if coeff == 1.0:
                assert torch.equal(got[name][rows, q], v.expand(3, -1))
            torch.testing.assert_close(got[name], want, atol=1e-6, rtol=1e-6)
    plain = _logits(native_model, batch.tokens)
    with steer(native_model, SteeringVector(v, 0, mode="replace", coeff=0.0), query_pos=q):
        assert torch.equal(_logits(native_model, batch.tokens), plain)


def test_several_vectors_at_once_equal_nested_blocks(native_model, task_a, vectors):
    batch = make_prompts(native_model, task_a, n=3, n_shots=0)
    svs = [x.to_steering_vector() for x in vectors]
    with torch.no_grad(), steer(native_model, *svs, query_pos=batch.query_pos):
        together = native_model(batch.tokens)
    with torch.no_grad(), steer(native_model, svs[0], query_pos=batch.query_pos), \
            steer(native_model, svs[1], query_pos=batch.query_pos), steer(native_model, svs[2]), \
            steer(native_model, svs[3], query_pos=batch.query_pos):
        nested = native_model(batch.tokens)
    assert torch.equal(together, nested)
    with pytest.raises(HookNotFiredError):
        with steer(native_model, *svs):
            pass


def test_a_vector_of_another_model_is_refused(tokenizer, native_model, vectors):
    from conftest import build_model

    from tlens_icl.errors import ModelMismatchError

    other = build_model("native", tokenizer, seed=1)
    for x in vectors:
        with pytest.raises(ModelMismatchError):
            steer(other, x.to_steering_vector()).__enter__()


# ---- evaluation --------------------------------------------------------------------------------------------------
def test_evaluate_steering_scores_as_the_hooks_and_the_query_route_do(native_model, task_a, vectors):
    batch = make_prompts(native_model, task_a, n=6, n_shots=0, seed=2)
    base = evaluate_steering(native_model, batch)
    correct, p = evaluate_intervention(native_model, batch)
    assert torch.equal(base.correct, correct) and torch.equal(base.answer_prob, p)
    assert base.accuracy == float(correct.mean())
    fv = vectors[0]
    zero = evaluate_steering(native_model, batch, fv.to_steering_vector(coeff=0.0))
    assert torch.equal(zero.answer_prob, base.answer_prob)
    for x, coeff in [(x, c) for x in vectors for c in (1.0, -2.5)]:
        sv = x.to_steering_vector(coeff=coeff)
        got = evaluate_steering(native_model, batch, sv)
        edits = sv.query_edits()
        if x is vectors[2] or (x is vectors[1] and coeff != 1.0):  # no query-only engine form
            assert edits is None  # (every position, norm-preserving; a partial replacement)
            continue
        c, pr, c0, p0 = evaluate_query_interventions(native_model, batch, edits)
        assert torch.equal(c[0], got.correct), (type(x).__name__, coeff)
        torch.testing.assert_close(pr[0], got.answer_prob, atol=1e-5, rtol=1e-5)
        assert torch.equal(p0, base.answer_prob)
    assert SteeringVector(torch.ones(native_model.cfg.d_model), 0, mode="replace", coeff=0.5).query_edits() is None
    assert SteeringVector(torch.ones(native_model.cfg.d_model), 0, position="all").query_edits() is None


# ---- files -----------------------------------------------------------------------------------------------------------
def test_every_kind_round_trips_through_a_file_and_applies_the_same(native_model, task_a, vectors, tmp_path):
    batch = make_prompts(native_model, task_a, n=3, n_shots=0)
    for i, x in enumerate(vectors):
        sv = x.to_steering_vector()
        loaded = SteeringVector.load(sv.save(tmp_path / f"v{i}"), model=native_model)
        assert (loaded.layers, loaded.site, loaded.mode, loaded.coeff, loaded.position) == \
               (sv.layers, sv.site, sv.mode, sv.coeff, sv.position)
        assert torch.equal(loaded.vector, sv.vector)
        assert (loaded.head_weights is None) == (sv.head_weights is None)
        with torch.no_grad(), steer(native_model, sv, query_pos=batch.query_pos):
            a = native_model(batch.tokens)
        with torch.no_grad(), steer(native_model, loaded, query_pos=batch.query_pos):
            b = native_model(batch.tokens)
        assert torch.equal(a, b), type(x).__name__


# ---- generation ------------------------------------------------------------------------------------------------------
def _rows_alone(model, rows, steering, n_new):
    return [generate(model, r[None], steering=steering, max_new_tokens=n_new, stop_at_eos=False)[0] for r in rows]


@pytest.mark.parametrize("arch", ["native", "gpt2", "gemma3"])  # BPE fixture; gemma3: sliding-window layers
def test_generate_on_a_padded_batch_equals_each_row_alone(arch, tokenizer, task_a):
    from conftest import build_model

    model = build_model(arch, tokenizer)
    batch = make_prompts(model, task_a, n=5, n_shots=2, seed=1)
    lengths = batch.attention_mask.sum(1).tolist()
    assert len(set(lengths)) > 1  # rows of different lengths: the batch is padded
    v = 3 * torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(1))
    rows = [batch.tokens[i, :n] for i, n in enumerate(lengths)]
    for steering in (None, SteeringVector(v, 1), SteeringVector(v, 0, mode="replace")):
        out = generate(model, batch, steering=steering, max_new_tokens=4, stop_at_eos=False)
        assert out.shape == (5, max(lengths) + 4)
        for i, (n, alone) in enumerate(zip(lengths, _rows_alone(model, rows, steering, 4))):
            assert out[i, : n + 4].tolist() == alone.tolist(), f"{arch} row {i} ({steering and steering.mode})"
            assert bool((out[i, n + 4:] == tokenizer.pad_token_id).all())
        same = generate(model, batch.tokens, attention_mask=batch.attention_mask, steering=steering,
                        max_new_tokens=4, stop_at_eos=False)
        assert torch.equal(same, out)


def test_generate_on_the_embedded_model_equals_each_row_alone(embedded_model, task_a):
    model = embedded_model
    prompts = ["cat ->", "a b c -> A B C\nelephant ->", "dog -> DOG\nbutterfly -> BUTTERFLY\nowl ->"]
    train, _ = usable_task(model, "uppercase").split(0.3, seed=0)
    fv = function_vector_from_task(model, train, [(1, 0), (1, 3), (2, 1)], n=8, n_shots=4).with_layer(1)
    for steering in (None, fv.to_steering_vector(), fv.to_steering_vector(coeff=-1.0)):
        out = generate(model, prompts, steering=steering, max_new_tokens=5, stop_at_eos=False)
        for i, p in enumerate(prompts):
            alone = generate(model, p, steering=steering, max_new_tokens=5, stop_at_eos=False)[0]
            assert out[i, : alone.shape[0]].tolist() == alone.tolist(), f"row {i}"
    plain = generate(model, prompts, max_new_tokens=5)
    steered = generate(model, prompts, steering=fv.to_steering_vector(coeff=8.0), max_new_tokens=5)
    assert not torch.equal(plain, steered)  # the vector changes what is generated


def test_generate_equals_a_hand_written_loop_for_every_kind(native_model, task_a, vectors):
    """Each step one full forward; "query" edits the query and every generated token, "all" every position."""
    prompt = make_prompts(native_model, task_a, n=1, n_shots=1, seed=6)
    tokens = prompt.tokens[:, : int(prompt.query_pos[0]) + 1]
    q = tokens.shape[1] - 1
    for x in vectors:
        sv = x.to_steering_vector()
        out = generate(native_model, tokens, steering=sv, max_new_tokens=3, stop_at_eos=False)
        cur = tokens.clone()
        for _ in range(3):
            fwd = []
            for i, name in enumerate(sv.hook_names):
                def fn(act, hook, i=i):
                    act = act.clone()
                    sl = (slice(None), slice(q, None)) if sv.position == "query" else (slice(None), slice(None))
                    x_ = act[sl]
                    v = sv.at_layer(i)
                    if sv.mode == "add":
                        act[sl] = x_ + v
                    elif sv.mode == "norm_preserving":
                        xn, vn = _unit(x_), _unit(v)
                        gate = 1.0 + torch.relu(-(xn * vn).sum(-1, keepdim=True))
                        act[sl] = x_.norm(dim=-1, keepdim=True) * _unit(xn + sv.coeff * gate * vn)
                    elif sv.site == "z":
                        a = sv.head_weights[i][:, None]
                        act[sl] = (1 - a) * x_ + a * v
                    else:
                        act[sl] = v
                    return act
                fwd.append((name, fn))
            nxt = _hand(native_model, cur, fwd)[:, -1].argmax(-1, keepdim=True)
            cur = torch.cat([cur, nxt], 1)
        assert out.tolist() == cur.tolist(), type(x).__name__


def test_generate_stops_rows_at_eos_and_samples_reproducibly(native_model, task_a):
    batch = make_prompts(native_model, task_a, n=3, n_shots=1, seed=2)
    greedy = generate(native_model, batch, max_new_tokens=3, stop_at_eos=False)
    eos = native_model.tokenizer.eos_token_id
    first = batch.query_pos + 1
    forced = SteeringVector(torch.zeros(native_model.cfg.d_model), 1)  # a no-op: generation as without
    assert torch.equal(generate(native_model, batch, steering=forced, max_new_tokens=3, stop_at_eos=False), greedy)
    a = generate(native_model, batch, max_new_tokens=4, do_sample=True, top_k=5, top_p=0.9, seed=3)
    b = generate(native_model, batch, max_new_tokens=4, do_sample=True, top_k=5, top_p=0.9, seed=3)
    assert torch.equal(a, b)
    for i in range(3):  # a row stops right after its EOS (the rest is padding)
        new = a[i, int(first[i]):].tolist()
        if eos in new:
            k = new.index(eos)
            assert all(t == native_model.tokenizer.pad_token_id for t in new[k + 1:])


def test_generate_refuses_ambiguous_padding_and_a_training_model(tokenizer):
    from conftest import build_model

    model = build_model("native", tokenizer)
    pad = tokenizer.pad_token_id
    with pytest.raises(TlensICLError, match="right-padded"):
        generate(model, torch.tensor([[1, 5, 6], [1, 5, pad]]))
    with pytest.raises(TlensICLError, match="left-padded"):
        generate(model, torch.tensor([[1, 5, 6], [pad, 1, 5]]))
    with pytest.raises(TlensICLError, match="not right padding"):
        generate(model, torch.tensor([[1, 5, 6], [1, 5, 6]]), attention_mask=torch.tensor([[1, 1, 1], [0, 1, 1]]))
    model.train()
    with pytest.raises(ModelStateError, match="eval"):
        generate(model, torch.tensor([[1, 5, 6]]))
    with pytest.raises(ModelStateError, match="eval"):
        steer(model, SteeringVector(torch.ones(model.cfg.d_model), 0))


def test_generate_equals_kv_cached_transformerlens_generation_under_steer(tokenizer, task_a):
    """GPT-2's bridge generates with a key/value cache: under ``steer`` the last position of each forward is the
    query, then each new token - what :func:`generate` edits in its full forwards."""
    from conftest import build_model

    model = build_model("gpt2", tokenizer)
    batch = make_prompts(model, task_a, n=3, n_shots=1, seed=5)
    v = 3 * torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(2))
    for sv in (SteeringVector(v, 1), SteeringVector(v, 0, mode="replace", coeff=0.5)):
        for i in range(3):
            toks = batch.tokens[i:i + 1, : int(batch.query_pos[i]) + 1]
            with torch.no_grad(), steer(model, sv):
                cached = model.generate(toks, max_new_tokens=4, do_sample=False, stop_at_eos=False, verbose=False)
            ours = generate(model, toks, steering=sv, max_new_tokens=4, stop_at_eos=False)
            assert ours.tolist() == cached.tolist(), (sv.mode, i)
