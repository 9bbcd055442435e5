"""The model resolved once (``tlens_icl.models.adapter.ModelHandle``): its facts are the adapter's, the engine gives
the same numbers with a model or its handle, and an analysis resolves its model once, not per engine call."""

from __future__ import annotations

import pytest
import torch
from conftest import build_model

import tlens_icl as ti
from tlens_icl._typing import TransformerLensModel
from tlens_icl.engine.capture import query_z
from tlens_icl.engine.runs import answer_scores, query_logits
from tlens_icl.models import adapter
from tlens_icl.models.adapter import (
    BUDGET_ENV,
    ModelHandle,
    capabilities,
    device_of,
    dtype_of,
    family,
    handle,
    memory_budget,
    model_meta,
    unwrap,
)


@pytest.mark.parametrize("arch", ["native", "llama", "gpt2"])
def test_a_handle_holds_the_adapters_facts_and_reads_the_rest_through(tokenizer, arch):
    model = build_model(arch, tokenizer)
    h = handle(model)
    assert (h.family, h.caps, h.device, h.dtype, h.budget, h.meta) == (
        family(model), capabilities(model), device_of(model), dtype_of(model), memory_budget(model), model_meta(model))
    assert not h.remote and h.fireable is None and h.call_rows is None and h.edit_rows is None
    assert handle(h) is h and unwrap(h) is model and unwrap(model) is model
    assert h.cfg is model.cfg and h.tokenizer is model.tokenizer and h.hook_dict.keys() == model.hook_dict.keys()
    assert isinstance(h, TransformerLensModel)  # accepted wherever a model is
    # the adapter's functions answer for a handle from the handle (no re-measurement)
    assert (family(h), device_of(h), dtype_of(h)) == (h.family, h.device, h.dtype)
    assert capabilities(h) is h.caps and model_meta(h) is h.meta


def test_load_metadata_and_the_budget_are_read_at_resolution(monkeypatch):
    model = ti.load_model("icl-tiny")
    h = handle(model)
    assert h.meta["name"] == "icl-tiny" and h.meta is model_meta(model)
    monkeypatch.setenv(BUDGET_ENV, "64MiB")
    assert handle(model).budget == 64 << 20
    assert h.budget != 64 << 20  # a handle keeps the budget it was resolved with


def test_the_engine_gives_the_models_own_numbers_with_a_model_or_its_handle(native_model, task_a):
    batch = ti.make_prompts(native_model, task_a, n=6, n_shots=2, seed=1)
    h = handle(native_model)
    with torch.no_grad():
        own = native_model(batch.tokens)
    # the handle runs the model itself (a call, or a forward passing only what the family takes)
    assert torch.equal(h(batch.tokens), own) and torch.equal(h.forward(batch.tokens), own)
    rows = torch.arange(len(batch))
    for m in (native_model, h):  # logits at each row's query, read through the engine: the model's own
        torch.testing.assert_close(query_logits(m, batch), own[rows, batch.query_pos], atol=1e-5, rtol=0)
    z_model, lg_model = query_z(native_model, batch.tokens, batch.query_pos)
    z_handle, lg_handle = query_z(h, batch.tokens, batch.query_pos)
    assert torch.equal(z_model, z_handle) and torch.equal(lg_model, lg_handle)
    a, b = answer_scores(native_model, batch), answer_scores(h, batch)
    assert torch.equal(a.answer_logprob, b.answer_logprob) and torch.equal(a.exact_match, b.exact_match)
    # prompts built for a handle are the prompts built for the model
    assert torch.equal(ti.make_prompts(h, task_a, n=6, n_shots=2, seed=1).tokens, batch.tokens)


@pytest.fixture()
def resolutions(monkeypatch):
    """How many times a model is resolved into a new handle."""
    made = []
    init = ModelHandle.__init__

    def counted(self, *args, **kwargs):
        made.append(1)
        init(self, *args, **kwargs)

    monkeypatch.setattr(ModelHandle, "__init__", counted)
    return made


def test_indirect_effect_resolves_its_model_once(native_model, task_a, task_b, resolutions):
    res = ti.indirect_effect(native_model, [task_a, task_b], n=3, n_mean=3, n_shots=2)
    assert res.effects.shape[:3] == (2, native_model.cfg.n_layers, native_model.cfg.n_heads)
    assert len(resolutions) == 1, f"the model was resolved {len(resolutions)} times"


def test_head_ablation_resolves_its_model_once(native_model, task_a, resolutions):
    scores = torch.rand(native_model.cfg.n_layers, native_model.cfg.n_heads, generator=torch.Generator().manual_seed(0))
    res = ti.head_ablation(native_model, task_a, {"FV": scores}, ks=(0, 1), n=3, n_shots=2, n_random=1, loss_n=2,
                           loss_length=16)
    assert res.correct.shape[1] == 2
    assert len(resolutions) == 1, f"the model was resolved {len(resolutions)} times"


def test_a_pattern_edit_on_a_model_that_ignores_it_raises_through_the_handle(native_model, monkeypatch):
    """The fact checked_hooks reads is the handle's: planted, the refusal follows it."""
    monkeypatch.setattr(ModelHandle, "pattern_edits_ignored", property(lambda self: True))
    with pytest.raises(ti.errors.ModelStateError, match="ignores hook_pattern edits"):
        with ti.engine.hooks.checked_hooks(native_model, [(ti.engine.hooks.pattern(0), lambda p, hook: p * 0.5)]):
            native_model(torch.tensor([[1, 2, 3]]))


def test_resolved_marks_only_the_first_argument(native_model):
    seen = []

    @adapter.resolved
    def probe(model, other):
        seen.append((type(model), other))

    probe(native_model, native_model)
    assert seen == [(ModelHandle, native_model)]


def test_patching_and_accuracy_resolve_their_model_once_each(native_model, task_a, resolutions):
    pairs = ti.make_prompt_pairs(native_model, task_a, n=3, n_shots=2, single_token="filter")
    resolutions.clear()
    ti.head_patching(native_model, pairs, batch_size=2)
    assert len(resolutions) == 1
    ti.activation_patching(native_model, pairs, batch_size=2)
    assert len(resolutions) == 2
    ti.icl_accuracy(native_model, task_a, shots=[0, 2], n=3)
    assert len(resolutions) == 3
