"""The engine: one capture path and exact interventions at the query / on suffixes, on every architecture.

Every fast route (key/value reuse, in-sequence query copies, suffix replay) is checked against the plain
one-forward-per-intervention loop and against ``transformer_lens.patching``, on right-padded prompts of
different lengths with non-zero biases; planted bugs (a wrong copy position, a mutated cache, a layer
skip off by one, wrong suffix masks) must be caught by the control copy and fall back with a warning,
or raise when the route is forced.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import transformer_lens.patching as tl_patching
from conftest import build_model, rounding_tol

from tlens_icl.engine import hooks
from tlens_icl.engine import positions as P
from tlens_icl.engine import query as Q
from tlens_icl.engine.capture import AtPositions, Summed, Weighted, capture, capture_at_query
from tlens_icl.errors import ModelStateError
from tlens_icl.models import kv

TOL = 1e-5
ARCHS = ["native", "gpt2", "pythia", "llama", "gemma2", "gemma2_window", "gemma3", "qwen2"]
#: Architectures whose sliding window is shorter than the prompts.
WINDOWED = ("gemma2_window", "gemma3")
LENGTHS = [18, 15, 11, 17]  # right-padded rows of different lengths


def _biased(model, seed=0):
    """Non-zero biases and perturbed norm weights (a bias counted twice or dropped changes numbers)."""
    gen = torch.Generator().manual_seed(seed + 7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            last = name.split(".")[-1]
            if last == "bias" or last.startswith("b_"):
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            elif last == "weight" and ("norm" in name or ".ln" in name):
                p.add_(0.2 * torch.randn(p.shape, generator=gen))
    return model


def gemma2_window(tok, window=6, n_layers=3, d=64, n_heads=4):
    """Gemma-2 (soft-capping, GQA) whose sliding window (6) is shorter than the prompts."""
    from transformer_lens.model_bridge.sources import build_bridge_from_module
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    hf = Gemma2ForCausalLM(Gemma2Config(
        vocab_size=len(tok), hidden_size=d, num_hidden_layers=n_layers, num_attention_heads=n_heads,
        num_key_value_heads=n_heads // 2, head_dim=d // n_heads, intermediate_size=4 * d, max_position_embeddings=128,
        sliding_window=window, query_pre_attn_scalar=d // n_heads, attention_bias=True, bos_token_id=1,
        eos_token_id=2, pad_token_id=0)).eval()
    return build_bridge_from_module(hf, "Gemma2ForCausalLM", hf_config=hf.config, tokenizer=tok).eval()


@pytest.fixture(scope="module")
def models(tokenizer):
    cache = {}

    def get(arch):
        if arch not in cache:
            m = gemma2_window(tokenizer) if arch == "gemma2_window" else build_model(arch, tokenizer, n_layers=3)
            cache[arch] = _biased(m)
        return cache[arch]

    return get


def batch(vocab, lengths=LENGTHS, seed=1):
    g = torch.Generator().manual_seed(seed)
    toks = torch.randint(4, vocab, (len(lengths), max(lengths)), generator=g)
    toks[:, 0] = 1
    for i, n in enumerate(lengths):
        toks[i, n:] = 0
    return toks, torch.tensor(lengths) - 1


def logprobs(logits, rows):
    return logits.float().log_softmax(-1)


def interventions(model, seed=3):
    """Every builder at once: head patches (all heads), mean ablation of head sets, FV-style adds at every
    layer, TV-style sets, soft-injection blending - and one variant without any edit."""
    g = torch.Generator().manual_seed(seed)
    cfg = model.cfg
    n_rows = len(LENGTHS)
    values = torch.randn(n_rows, cfg.n_layers, cfg.n_heads, cfg.d_head, generator=g)
    means = torch.randn(cfg.n_layers, cfg.n_heads, cfg.d_head, generator=g)
    layers = list(range(cfg.n_layers))
    vec = torch.randn(cfg.d_model, generator=g)
    return (Q.set_heads(Q.all_heads(model), values)
            + Q.set_head_means([[Q.Head(0, 1), Q.Head(cfg.n_layers - 1, 0)], [Q.Head(1, 2)], []], means)
            + Q.resid_edits(layers, vec, mode="add", coeff=2.0)
            + Q.resid_edits(layers, torch.randn(len(layers), cfg.d_model, generator=g), site="resid_pre", mode="set")
            + Q.blend_heads(means, torch.rand(cfg.n_layers, cfg.n_heads, generator=g)))


@pytest.mark.parametrize("arch", ARCHS)
def test_every_route_equals_the_plain_loop(models, arch):
    model = models(arch)
    toks, q = batch(model.cfg.d_vocab)
    iv = interventions(model)
    naive = Q.query_interventions(model, toks, q, iv, logprobs, method="naive", batch_size=3)
    routes = ["copies"] if arch == "native" else ["kv", "copies"]
    if arch in WINDOWED:
        routes = ["kv"]  # an explicit 4-D mask replaces HF's sliding window: the copies route cannot be exact
    for route in routes:
        run = Q.query_interventions(model, toks, q, iv, logprobs, method=route, batch_size=3,
                                    capture=[hooks.z(0), hooks.resid_post(1)])
        assert run.method == route
        torch.testing.assert_close(run.values, naive.values, atol=rounding_tol(naive.values), rtol=0)
        assert torch.equal(run.baseline, naive.baseline)  # the very same unpatched forward (one row plan)
        assert run.values.device.type == "cpu" and run.values.dtype == torch.float32
        assert run.control_error < rounding_tol(naive.values)
    assert (naive.values - naive.baseline).abs().amax() > 0.1  # the interventions do something
    empty = model.cfg.n_layers * model.cfg.n_heads + 2  # the empty head set of set_head_means: no edit at all
    assert torch.equal(naive.values[empty], naive.baseline)


def test_auto_picks_kv_where_keys_values_exist(models):
    toks, q = batch(models("llama").cfg.d_vocab)
    for arch, route in [("llama", "kv"), ("native", "copies"), ("gemma2_window", "kv"), ("gemma3", "kv"),
                        ("qwen2", "kv")]:
        model = models(arch)
        cfg = model.cfg
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no fallback warning on a route that works
            values = torch.zeros(4, cfg.n_layers, cfg.n_heads, cfg.d_head)
            run = Q.query_interventions(model, toks, q, Q.set_heads(Q.all_heads(model)[:3], values), logprobs)
        assert run.method == route
    with pytest.raises(ModelStateError, match="keys/values"):
        Q.query_interventions(models("native"), toks, q, Q.Interventions(1), logprobs, method="kv")


def test_copies_route_refuses_a_sliding_window_shorter_than_the_prompt(models):
    """The copies route's explicit mask would drop HF's window: it refuses (the kv route handles it)."""
    model = models("gemma2_window")
    toks, q = batch(model.cfg.d_vocab)
    with pytest.raises(ModelStateError, match="not exact"):
        Q.query_interventions(model, toks, q, Q.set_heads(Q.all_heads(model), torch.zeros(4, 3, 4, 16)), logprobs,
                              method="copies")


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_planted_wrong_copy_position_is_caught(models, arch, monkeypatch):
    model = models(arch)
    toks, q = batch(model.cfg.d_vocab)
    iv = Q.set_heads(Q.all_heads(model), torch.randn(4, 3, 4, 16))
    expected = Q.query_interventions(model, toks, q, iv, logprobs, method="naive")
    monkeypatch.setattr(Q, "copy_position_ids", lambda qd, n: (qd + 1)[:, None].expand(-1, n))
    for route in ("kv", "copies"):
        with pytest.raises(ModelStateError, match="control copy"):
            Q.query_interventions(model, toks, q, iv, logprobs, method=route)
    with pytest.warns(UserWarning, match="falling back"):
        run = Q.query_interventions(model, toks, q, iv, logprobs)
    assert run.method == "naive" and torch.equal(run.values, expected.values)


def test_planted_cache_mutation_is_caught(models, monkeypatch):
    model = models("gpt2")
    toks, q = batch(model.cfg.d_vocab)
    iv = Q.set_heads(Q.all_heads(model), torch.randn(4, 3, 4, 16))
    update = kv._FrozenCache.update

    def mutating(self, k, v, layer_idx, *a, **kw):
        self.keys[layer_idx][:, :, 0] = k[:, :, 0]  # a replay writing into the shared prefix (ring-buffer bug)
        self.values[layer_idx][:, :, 0] = v[:, :, 0]
        return update(self, k, v, layer_idx, *a, **kw)

    monkeypatch.setattr(kv._FrozenCache, "update", mutating)
    with pytest.raises(ModelStateError, match="control copy"):
        Q.query_interventions(model, toks, q, iv, logprobs, method="kv")


def test_planted_skip_off_by_one_is_caught(models, monkeypatch):
    model = models("llama")
    toks, q = batch(model.cfg.d_vocab)
    values = torch.randn(4, 3, 4, 16)
    iv = Q.set_heads([Q.Head(1, 0), Q.Head(2, 3)], values)  # copies start at blocks 1 and 2 (staged)
    expected = Q.query_interventions(model, toks, q, iv, logprobs, method="naive")
    replaying = kv.replaying
    monkeypatch.setattr(kv, "replaying", lambda m, k, v, masks, *, skip=0, tuple_blocks=None:
                        replaying(m, k, v, masks, skip=skip + 1 if skip > 0 else 0, tuple_blocks=tuple_blocks))
    with pytest.raises(ModelStateError, match="never fired"):  # the entry block itself was skipped
        Q.query_interventions(model, toks, q, iv, logprobs, method="kv")
    with pytest.warns(UserWarning, match="falling back"):
        run = Q.query_interventions(model, toks, q, iv, logprobs)
    assert run.method == "copies"
    torch.testing.assert_close(run.values, expected.values, atol=TOL, rtol=0)


def test_memory_budget_splits_rows_and_copies(models, monkeypatch):
    model = models("pythia")
    toks, q = batch(model.cfg.d_vocab)
    iv = Q.set_heads(Q.all_heads(model), torch.randn(4, 3, 4, 16))
    whole = Q.query_interventions(model, toks, q, iv, logprobs, method="kv")
    calls = []
    replaying = kv.replaying
    monkeypatch.setattr(kv, "replaying", lambda *a, **k: calls.append(1) or replaying(*a, **k))
    small = Q.query_interventions(model, toks, q, iv, logprobs, method="kv", memory_budget=60_000)
    torch.testing.assert_close(small.values, whole.values, atol=TOL, rtol=0)
    assert len(calls) > len(Q.plan_groups(iv.start_layers(3), 3, 4, 18, 64, model.cfg.d_vocab))


def test_plan_groups_stages_many_copies_and_merges_few():
    start = [L for L in range(12) for _ in range(12)]  # 144 heads, 12 per layer
    many = Q.plan_groups(start, 12, 8, 75, 768, 50_000)
    assert sorted(v for _, g in many for v in g) == list(range(144))  # a partition of the variants
    assert all(s == min(start[v] for v in g) for s, g in many)  # a group enters at its first edited layer
    assert len(many) > 3  # many copies: staged, so late-layer copies skip the early blocks
    few = Q.plan_groups(list(range(12)), 12, 1, 75, 768, 100)  # one copy per layer, one row: one forward
    assert few == [(0, list(range(12)))]


@pytest.mark.parametrize("dtype", [torch.bfloat16])
def test_half_precision_keeps_the_fast_route_and_still_catches_bugs(tokenizer, dtype, monkeypatch):

    model = _biased(build_model("llama", tokenizer, n_layers=3))
    with torch.no_grad():  # logits of a real LLM's size (~30), not a random model's (~1): bfloat16 resolves them
        model.unembed.original_component.weight.mul_(30.0)
    model = model.to(dtype)
    toks, q = batch(model.cfg.d_vocab)
    iv = Q.set_heads(Q.all_heads(model), torch.randn(4, 3, 4, 16))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run = Q.query_interventions(model, toks, q, iv, logprobs)
    assert run.method == "kv" and run.control_error <= Q.control_tolerance(dtype, 0.0)
    naive = Q.query_interventions(model, toks, q, iv, logprobs, method="naive")
    err = float((run.values - naive.values).abs().max())
    assert err < 0.1 * float((naive.values - naive.baseline).abs().max())  # rounding, not a different computation
    # A copy that sees only itself (the prefix masked away) is caught in bfloat16 too. (Subtler bugs, e.g. a
    # position off by one, move this random model's logits by 0.04-0.8: inside bfloat16's rounding at logit 30.)
    query_rows = Q._query_rows
    monkeypatch.setattr(Q, "_query_rows", lambda *a: {k: torch.zeros_like(v) for k, v in query_rows(*a).items()})
    with pytest.raises(ModelStateError, match="control copy"):
        Q.query_interventions(model, toks, q, iv, logprobs, method="kv")


# ---- suffix replay (activation patching by layer x position) ------------------------------------------
def _pair(vocab):
    clean, q = batch(vocab)
    corrupted = clean.clone()
    g = torch.Generator().manual_seed(9)
    for p in (3, 7, 10):
        corrupted[:, p] = torch.randint(4, vocab, (len(q),), generator=g)
    corrupted[clean == 0] = 0
    return clean, corrupted, q


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("site", ["resid_pre", "attn_out"])
def test_suffix_replay_equals_transformer_lens_patching(models, arch, site):
    model = models(arch)
    clean, corrupted, q = _pair(model.cfg.d_vocab)
    rows = torch.arange(len(q))
    answer = torch.tensor([5, 6, 7, 8])

    def metric(logits):  # TransformerLens style: mean log P(answer) at each row's query
        return logits[rows, q].log_softmax(-1)[rows, answer].mean()

    with torch.no_grad():
        _, cache = model.run_with_cache(clean, names_filter=lambda n: n.endswith(f"hook_{site}"))
        fn = {"resid_pre": tl_patching.get_act_patch_resid_pre, "attn_out": tl_patching.get_act_patch_attn_out}[site]
        ref = fn(model, corrupted, cache, metric)
    run = P.patch_layer_positions(model, corrupted, clean, q, site, lambda lg, r: lg.log_softmax(-1)[
        torch.arange(len(r)), answer[r].to(lg.device)], batch_size=3)
    assert run.method == ("naive" if arch == "native" else "kv")
    patched = (run.effects + run.base_score).mean(-1)
    torch.testing.assert_close(patched, ref, atol=rounding_tol(ref), rtol=0)
    n_cells = model.cfg.n_layers * clean.shape[1] * 2  # cells x row chunks
    assert 0 < run.forwards < n_cells  # equal activations and positions after the query are not run


def test_planted_wrong_suffix_mask_is_caught(models, monkeypatch):
    model = models("gemma2_window")
    clean, corrupted, q = _pair(model.cfg.d_vocab)
    reduce = lambda lg, r: lg.log_softmax(-1)[:, 5]  # noqa: E731
    expected = P.patch_layer_positions(model, corrupted, clean, q, "resid_pre", reduce, method="naive")
    replay = P._replay

    def shifted(model, prefix, toks, acts, group, layer, q, patch):  # keys of a one-later position
        masks = {b: m for b, m in prefix.masks.items()}
        bad = kv.Prefix(prefix.keys, prefix.values, {b: torch.roll(m, 1, -1) for b, m in masks.items()},
                        prefix.tuple_blocks)
        return replay(model, bad, toks, acts, group, layer, q, patch)

    monkeypatch.setattr(P, "_replay", shifted)
    with pytest.raises(ModelStateError, match="control copy"):
        P.patch_layer_positions(model, corrupted, clean, q, "resid_pre", reduce, method="kv")
    with pytest.warns(UserWarning, match="falling back"):
        run = P.patch_layer_positions(model, corrupted, clean, q, "resid_pre", reduce)
    assert run.method == "naive" and torch.equal(run.effects, expected.effects)


# ---- capture -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["native", "gemma2_window", "gemma3", "qwen2"])
def test_capture_reducers_equal_run_with_cache(models, arch):
    model = models(arch)
    toks, q = batch(model.cfg.d_vocab)
    names = [hooks.z(1), hooks.resid_post(2)]
    with torch.no_grad():
        _, cache = model.run_with_cache(toks, names_filter=lambda n: n in names)
    rows = torch.arange(len(q))
    got = capture_at_query(model, toks, q, names, logits=True, batch_size=3)
    for n in names:
        torch.testing.assert_close(got[n], cache[n][rows, q].float(), atol=TOL, rtol=0)
        assert got[n].device.type == "cpu" and got[n].dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(got["logits"], model(toks)[rows, q], atol=TOL, rtol=0)
    gen = torch.Generator().manual_seed(0)  # the same weights whatever ran before in this worker
    weights = torch.rand(toks.shape, generator=gen) * (torch.arange(toks.shape[1])[None] <= q[:, None])
    where = weights > 0.5
    got = capture(model, toks, {names[0]: Weighted(weights), names[1]: Summed(where)}, batch_size=2)
    torch.testing.assert_close(got[names[0]], torch.einsum("bp,bp...->b...", weights, cache[names[0]]), atol=TOL, rtol=0)
    # a sum of residuals over up to 16 positions: chunked and whole-batch matmuls differ by float32 rounding
    torch.testing.assert_close(got[names[1]], (cache[names[1]] * where[..., None]).sum(1), atol=TOL, rtol=1e-5)
    at = capture(model, toks, {names[1]: AtPositions(q - 1)}, batch_size=4)[names[1]]
    torch.testing.assert_close(at, cache[names[1]][rows, q - 1], atol=TOL, rtol=0)
