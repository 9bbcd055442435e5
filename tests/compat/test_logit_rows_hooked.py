"""Logits only where they are read, under TransformerLens 3: ``HookedTransformer`` s (``b_U`` random, a final
logit softcap) and a TL3 bridge give the full forward's numbers while unembedding the read rows only."""

from __future__ import annotations

import pytest
import torch

import tlens_icl as ti
from tests.compat.conftest import HT_ARCHS, build_hooked
from tlens_icl.engine import hooks, runs
from tlens_icl.engine.runs import answer_scores, logit_cut, query_logits
from tlens_icl.engine.scoring import teacher_forced

TOL = 1e-5


def build(arch, tokenizer):
    if arch == "ht_llama_softcap":
        model = build_hooked("ht_llama", tokenizer)
        model.cfg.output_logits_soft_cap = 0.5  # logits of a random model are ~1: the cap bends every one
        return model
    if arch == "tl3_bridge_llama":
        from tests.conftest import build_model

        return build_model("llama", tokenizer)
    return build_hooked(arch, tokenizer)


@pytest.mark.parametrize("arch", [*HT_ARCHS, "ht_llama_softcap", "tl3_bridge_llama"])
def test_cut_reads_equal_the_full_forward_and_mediation_is_unchanged(tokenizer, task_a, arch, monkeypatch):
    model = build(arch, tokenizer)
    assert logit_cut(model) == hooks.unembed_in()
    if arch.startswith("ht_"):
        assert float(model.unembed.b_U.detach().abs().max()) > 0
    batch = ti.make_prompts(model, task_a, n=5, n_shots=3, seed=1)
    answers = [tuple(a) for a in batch.answer_ids]
    ar = torch.arange(len(batch))
    with torch.no_grad():
        at_q = model(batch.tokens)[ar, batch.query_pos]
        ext = batch.with_answers()
        ref_logprob, _ = teacher_forced(model(ext.tokens), ext.query_pos, answers)
    if arch == "ht_llama_softcap":
        assert float(at_q.abs().max()) <= 0.5
    seen = []
    with model.hooks(fwd_hooks=[(hooks.unembed_out(), lambda act, hook: seen.append(act.shape[1]))]):
        torch.testing.assert_close(query_logits(model, batch, batch_size=2), at_q, atol=TOL, rtol=0)
        scores = answer_scores(model, batch, batch_size=2)
    assert max(seen[:3]) == 1  # the query logits' forwards unembedded one position per row
    torch.testing.assert_close(scores.answer_logprob, ref_logprob, atol=TOL, rtol=0)
    kw = dict(n_mean=3, n=2, n_shots=2)
    cut = ti.indirect_effect(model, task_a, **kw)
    monkeypatch.setenv(runs.FULL_LOGITS_ENV, "1")
    ref = ti.indirect_effect(model, task_a, **kw)
    for name in ("effects", "clean_metric", "corrupted_metric", "mean_z"):
        torch.testing.assert_close(getattr(cut, name), getattr(ref, name), atol=TOL, rtol=0)
