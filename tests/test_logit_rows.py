"""Logits only where they are read (``engine.runs.logit_rows``): the forward cut before the unembedding.

Truths: the cut logits equal the full forward's at every read position (different positions per row, prompts
of different lengths) on tied and untied unembeddings, an unembedding bias, final norms with perturbed
weights and biases and a strong final logit softcap; every analysis that reads logits at the query or at
the answer gives the numbers of the full-logits path (``TLENS_ICL_FULL_LOGITS=1``) while unembedding far
fewer positions; a cut that is not exact falls back with a warning; the row planner counts logits only
where they are read.
"""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

import tlens_icl as ti
from tlens_icl.analyses.vectors.function_vectors import function_vector_sweep
from tlens_icl.analyses.vectors.task_vectors import task_vector_sweep
from tlens_icl.engine import hooks, runs
from tlens_icl.engine.capture import query_z
from tlens_icl.engine.runs import answer_scores, logit_cut, logit_rows, query_logits, rows_per_forward
from tlens_icl.engine.scoring import teacher_forced
from tlens_icl.errors import ModelStateError

TOL = 1e-5
#: The variants beyond conftest's zoo: an untied unembedding with a bias; a softcap that bends every logit.
EXTRA = ["llama_lm_bias", "gemma2_softcap"]
ALL = ["native", "gpt2", "pythia", "llama", "gemma2", *EXTRA]
#: Whole analyses run on these (no key/value reuse; tied + LayerNorm biases; untied + bias; softcap): cheap tests
#: cover the rest of the zoo.
CORE = ["native", "gpt2", "llama_lm_bias", "gemma2_softcap"]


def build(arch: str, tokenizer):
    from conftest import build_hf_model, build_model

    if arch not in EXTRA:
        return build_model(arch, tokenizer)
    from transformer_lens.model_bridge.sources import build_bridge_from_module

    hf = build_hf_model(arch.split("_")[0], tokenizer)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        if arch == "llama_lm_bias":
            assert not hf.config.tie_word_embeddings
            old = hf.lm_head
            hf.lm_head = torch.nn.Linear(old.in_features, old.out_features, bias=True)
            hf.lm_head.weight.copy_(old.weight)
            hf.lm_head.bias.copy_(0.5 * torch.randn(old.out_features, generator=gen))
        else:  # logits of a random model are ~1: a cap of 0.5 changes each by a large fraction
            hf.config.final_logit_softcapping = 0.5
    return build_bridge_from_module(hf, type(hf).__name__, hf_config=hf.config, tokenizer=tokenizer).eval()


_BUILT: dict[str, object] = {}


def built(arch: str, tokenizer):
    """One model per architecture for this module (the cut proof is cached per model object)."""
    if arch not in _BUILT:
        _BUILT[arch] = build(arch, tokenizer)
    return _BUILT[arch]


@pytest.fixture(params=ALL)
def model(request, tokenizer):
    return built(request.param, tokenizer)


@pytest.fixture(params=CORE)
def core_model(request, tokenizer):
    return built(request.param, tokenizer)


@pytest.fixture
def full_logits(monkeypatch):
    """Inside ``with full_logits():`` every forward unembeds every position (the path before the cut)."""
    from contextlib import contextmanager

    @contextmanager
    def ctx():
        with monkeypatch.context() as m:
            m.setenv(runs.FULL_LOGITS_ENV, "1")
            yield

    return ctx


def unembedded(model, fn):
    """``(fn(), positions unembedded during it)``: rows x positions of every logits tensor the model made."""
    count = [0]

    def seen(act, hook):
        count[0] += act.shape[0] * act.shape[1]

    with model.hooks(fwd_hooks=[(hooks.unembed_out(), seen)]):
        out = fn()
    return out, count[0]


def assert_same_result(a, b):
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, torch.Tensor):
            torch.testing.assert_close(x, y, atol=TOL, rtol=0, equal_nan=True, msg=f.name)


def test_cut_logits_equal_the_full_forward_at_every_read_position(model, task_a):
    assert logit_cut(model) == hooks.unembed_in()  # proven on this model (a failed proof returns None)
    batch = ti.make_prompts(model, task_a, n=6, n_shots=3, seed=2)
    lengths = batch.attention_mask.sum(1)
    assert len(set(lengths.tolist())) > 1
    gen = torch.Generator().manual_seed(0)
    pos = (torch.rand(len(batch), 4, generator=gen) * lengths[:, None]).long()  # 4 positions per row, any order
    pos[:, 0] = 0
    pos[:, 1] = lengths - 1
    with torch.no_grad():
        full = model(batch.tokens)
        for p in (pos, batch.query_pos):
            at = logit_rows(model, p)
            assert at.name == hooks.unembed_in() and at.hooks
            with hooks.checked_hooks(model, at.hooks):
                got = at.read(model(batch.tokens))
            ar = torch.arange(len(batch))
            want = full[ar[:, None], p] if p.dim() == 2 else full[ar, p]
            torch.testing.assert_close(got, want, atol=TOL, rtol=0)


def test_the_softcap_and_the_bias_are_applied_to_the_cut_rows(tokenizer, task_a):
    """The extra models are not trivially equal to their plain twins: the cap and the bias move every logit."""
    plain, biased = built("llama", tokenizer), built("llama_lm_bias", tokenizer)
    capped, uncapped = built("gemma2_softcap", tokenizer), build("gemma2", tokenizer)
    batch = ti.make_prompts(plain, task_a, n=3, n_shots=2, seed=0)
    uncapped.original_model.config.final_logit_softcapping = None
    for with_it, without in ((biased, plain), (capped, uncapped)):
        a, b = query_logits(with_it, batch), query_logits(without, batch)
        assert float((a - b).abs().max()) > 0.1
    assert float(query_logits(capped, batch).abs().max()) <= 0.5


def test_a_callers_hook_on_the_logits_sees_every_position(native_model, task_a):
    batch = ti.make_prompts(native_model, task_a, n=4, n_shots=2, seed=0)
    widths = []

    def on_logits(act, hook):
        widths.append(act.shape[1])

    got = query_logits(native_model, batch, fwd_hooks=[(hooks.unembed_out(), on_logits)])
    assert min(widths) > 1  # not cut: the caller's hook sees the whole chunk
    torch.testing.assert_close(got, query_logits(native_model, batch), atol=TOL, rtol=0)


# ---- every reading path equals the full-logits path, and unembeds fewer positions -----------------------------
def test_engine_reads_equal_the_full_forward(model, task_a, full_logits):
    """query logits, whole-answer scores and capture's logits against ``model(tokens)`` read by hand."""
    batch = ti.make_prompts(model, task_a, n=6, n_shots=3, seed=1)
    answers = [tuple(a) for a in batch.answer_ids]
    ar = torch.arange(len(batch))
    with torch.no_grad():
        at_q = model(batch.tokens)[ar, batch.query_pos]
        ext = batch.with_answers()
        forced = model(ext.tokens)
    ref_logprob, _ = teacher_forced(forced, ext.query_pos, answers)
    got_q, n_cut = unembedded(model, lambda: query_logits(model, batch, batch_size=4))
    got_s, n_cut_s = unembedded(model, lambda: answer_scores(model, batch, batch_size=4, keep_query_logits=True))
    _, got_zl = query_z(model, batch.tokens, batch.query_pos, batch_size=4)
    for got in (got_q, got_zl, got_s.query_logits):
        torch.testing.assert_close(got, at_q, atol=TOL, rtol=0)
    torch.testing.assert_close(got_s.answer_logprob, ref_logprob, atol=TOL, rtol=0)
    with full_logits():
        assert logit_cut(model) is None
        ref_q, n_full = unembedded(model, lambda: query_logits(model, batch, batch_size=4))
        ref_s, n_full_s = unembedded(model, lambda: answer_scores(model, batch, batch_size=4, keep_query_logits=True))
    assert n_cut == len(batch) and n_full > 3 * n_cut  # the query row only, against every position
    assert n_cut_s < n_full_s / 3
    torch.testing.assert_close(got_q, ref_q, atol=TOL, rtol=0)
    assert_same_result(got_s, ref_s)
    assert torch.equal(got_s.exact_match, ref_s.exact_match)


@pytest.mark.parametrize("method", ["fast", "naive"])
def test_mediation_equals_the_full_logits_path(core_model, task_a, full_logits, method):
    model = core_model
    kw = dict(n_mean=5, n=3, n_shots=3, method=method)
    cut, n_cut = unembedded(model, lambda: ti.indirect_effect(model, task_a, **kw))
    with full_logits():
        ref, n_full = unembedded(model, lambda: ti.indirect_effect(model, task_a, **kw))
    assert cut.method == ref.method
    assert_same_result(cut, ref)
    assert n_cut < n_full / 2
    pairs = ti.make_prompt_pairs(model, task_a, n=3, n_shots=3, seed=0)  # the prompts indirect_effect builds
    for batch, metric in ((pairs.clean, cut.clean_metric[0]), (pairs.corrupted, cut.corrupted_metric[0])):
        with torch.no_grad():
            p = model(batch.tokens)[torch.arange(3), batch.query_pos].softmax(-1)
        torch.testing.assert_close(metric, p[torch.arange(3), batch.answer_tokens], atol=TOL, rtol=0)


def test_vector_sweeps_and_patching_equal_the_full_logits_path(core_model, task_a, full_logits):
    model = core_model
    pairs = ti.make_prompt_pairs(model, task_a, n=2, n_shots=2, seed=0, single_token="filter")  # aligned positions
    fv = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(3))

    def run():
        tv = ti.task_vector(model, task_a, n=4, n_shots=2)
        return [function_vector_sweep(model, fv, task_a, n=4, n_shots=2, settings=("zero_shot", "shuffled_labels")),
                tv, task_vector_sweep(model, tv, task_a, n=4),
                ti.activation_patching(model, pairs, site="resid_pre"),  # suffix replay; the loop on native
                ti.head_patching(model, pairs, position="all"),
                ti.icl_accuracy(model, task_a, shots=[0, 2], n=4)]

    cut, n_cut = unembedded(model, run)
    with full_logits():
        ref, n_full = unembedded(model, run)
    for a, b in zip(cut, ref):
        assert_same_result(a, b)
    assert n_cut < n_full / 3


@pytest.mark.parametrize("positions", ["all", "query"])
def test_head_ablation_equals_the_full_logits_path(core_model, task_a, full_logits, positions):
    model = core_model
    gen = torch.Generator().manual_seed(1)
    rankings = {"a": torch.rand(model.cfg.n_layers, model.cfg.n_heads, generator=gen)}
    kw = dict(ks=(0, 2, 4), n_random=1, n=4, n_shots=2, positions=positions, loss=False)
    cut, n_cut = unembedded(model, lambda: ti.head_ablation(model, [task_a], rankings, **kw))
    with full_logits():
        ref, n_full = unembedded(model, lambda: ti.head_ablation(model, [task_a], rankings, **kw))
    assert_same_result(cut, ref)
    assert n_cut < n_full


def test_ablation_sweep_at_the_query_equals_a_hooked_forward(core_model, task_a):
    from tlens_icl.engine.ablation import ablation_positions, ablation_sweep, mean_ablation_hooks, query_reduce

    model = core_model
    batch = ti.make_prompts(model, task_a, n=5, n_shots=3, seed=3)
    gen = torch.Generator().manual_seed(2)
    means = torch.randn(model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_head, generator=gen)
    sets = [[ti.Head(0, 1)], [ti.Head(1, 0), ti.Head(1, 2)], []]
    where = ablation_positions(batch, "all")
    got = ablation_sweep(model, batch.tokens, batch.query_pos, where, sets, means,
                         query_reduce(batch, lambda logits, rows: logits), batch_size=2)
    for hs, g in zip(sets, got):
        with torch.no_grad(), model.hooks(fwd_hooks=mean_ablation_hooks(model, hs, means, where)):
            ref = model(batch.tokens)[torch.arange(5), batch.query_pos]
        torch.testing.assert_close(g, ref, atol=TOL, rtol=0)


# ---- the proof, the fallback and the planner --------------------------------------------------------------------
def test_a_cut_that_is_not_exact_falls_back_with_a_warning(tokenizer, task_a, monkeypatch):
    model = build("llama", tokenizer)
    batch = ti.make_prompts(model, task_a, n=4, n_shots=2, seed=0)
    ref = query_logits(model, batch)
    # cutting before the last block: its attention would see only the cut rows
    monkeypatch.setattr(runs, "logits_input", lambda m: hooks.resid_pre(m.cfg.n_layers - 1))
    model = build("llama", tokenizer)  # a fresh object: nothing cached
    with pytest.warns(UserWarning, match="not exact for this model"):
        assert logit_cut(model) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(query_logits(model, batch), ref, atol=TOL, rtol=0)


def test_read_refuses_logits_that_were_not_cut(native_model):
    at = logit_rows(native_model, torch.tensor([1, 2]))
    assert at.name is not None
    with pytest.raises(ModelStateError, match="did not reach the unembedding"):
        at.read(torch.zeros(2, 5, native_model.cfg.d_vocab))


def test_row_planner_counts_logits_only_where_read(model, full_logits):
    seq, budget = 40, 50 << 20
    act = runs.bytes_per_token(model, seq, logits=False) * seq
    vocab = runs.logit_bytes(model)
    assert runs.bytes_per_token(model, seq) == runs.bytes_per_token(model, seq, logits=False) + vocab
    every = rows_per_forward(model, seq, 10_000, budget)
    assert every == budget // (act + seq * vocab)
    assert rows_per_forward(model, seq, 10_000, budget, logit_positions=1) == budget // (act + vocab) > every
    assert rows_per_forward(model, seq, 10_000, budget, logit_positions=0) == budget // act
    q = torch.full((50,), seq - 1)
    assert len(runs.query_plan(model, q, 50, budget=(act + vocab) * 10)) == 5
    with full_logits():  # no cut: logits at every position are counted again
        assert rows_per_forward(model, seq, 10_000, budget, logit_positions=1) == every
        assert rows_per_forward(model, seq, 10_000, budget, logit_positions=0) == budget // act


def test_the_proof_runs_no_hook_of_the_caller(tokenizer, task_a):
    model = build("gpt2", tokenizer)  # fresh: the proof has not run yet
    batch = ti.make_prompts(model, task_a, n=3, n_shots=2, seed=0)
    fired = []
    with model.hooks(fwd_hooks=[(hooks.z(0), lambda act, hook: fired.append(act.shape[0]))]):
        query_logits(model, batch)  # proves the cut first, then one forward of the 3 rows
        assert fired == [3]
        assert logit_cut(model) == hooks.unembed_in()
        query_logits(model, batch)
    assert fired == [3, 3]
    assert not model.hook_dict[hooks.z(0)].fwd_hooks and not model.hook_dict[hooks.z(0)]._forward_hooks
