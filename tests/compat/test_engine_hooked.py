"""The engine's ``kv`` route on TransformerLens 3 ``HookedTransformer`` s (their own KV cache + ``start_at_layer``)."""

from __future__ import annotations

import pytest
import torch

from tests.compat.conftest import HT_ARCHS, build_hooked
from tlens_icl.engine import query as Q
from tlens_icl.errors import ModelStateError
from tlens_icl.models import adapter

LENGTHS = [18, 15, 11, 17]


def _batch(vocab):
    g = torch.Generator().manual_seed(1)
    toks = torch.randint(4, vocab, (len(LENGTHS), max(LENGTHS)), generator=g)
    toks[:, 0] = 1
    for i, n in enumerate(LENGTHS):
        toks[i, n:] = 0
    return toks, torch.tensor(LENGTHS) - 1


def _logprobs(logits, rows):
    return logits.float().log_softmax(-1)


@pytest.mark.parametrize("arch", HT_ARCHS)
def test_kv_route_equals_the_loop_on_hooked_transformers(tokenizer, arch):
    model = build_hooked(arch, tokenizer, n_layers=3)
    toks, q = _batch(model.cfg.d_vocab)
    L, H, dh = model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_head
    g = torch.Generator().manual_seed(2)
    iv = (Q.set_heads(Q.all_heads(model), torch.randn(4, L, H, dh, generator=g))
          + Q.resid_edits(list(range(L)), torch.randn(model.cfg.d_model, generator=g)))
    naive = Q.query_interventions(model, toks, q, iv, _logprobs, method="naive", batch_size=3)
    run = Q.query_interventions(model, toks, q, iv, _logprobs, batch_size=3)
    assert run.method == "kv"
    torch.testing.assert_close(run.values, naive.values, atol=1e-5, rtol=0)
    assert torch.equal(run.baseline, naive.baseline)


def test_planted_wrong_entry_layer_is_caught(tokenizer, monkeypatch):
    model = build_hooked("ht_llama", tokenizer, n_layers=3)
    toks, q = _batch(model.cfg.d_vocab)
    iv = Q.set_heads([Q.Head(2, 0)], torch.randn(4, 3, 4, 16))
    forward = adapter.query_forward
    monkeypatch.setattr(adapter, "query_forward", lambda m, c, query, start_at_layer=None:
                        forward(m, c, query, start_at_layer=None if start_at_layer is None else start_at_layer - 1))
    with pytest.raises(ModelStateError, match="control copy"):
        Q.query_interventions(model, toks, q, iv, _logprobs, method="kv")
