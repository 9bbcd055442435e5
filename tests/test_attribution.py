"""Attribution patching: hand-computed gradients, the first-order limit, identities, fidelity report."""

from __future__ import annotations

import pytest
import torch

import tlens_icl as ti
from tlens_icl.analyses.causal.attribution import patching_fidelity
from tlens_icl.analyses.causal.patching import scorer
from tlens_icl.engine import query as _engine
from tlens_icl.engine.capture import query_z
from tlens_icl.errors import TlensICLError


def hand_attribution(model, pairs, position: str) -> torch.Tensor:
    """(z_clean - z_corrupted) . dP/dz_corrupted per [layer, head, example], via TransformerLens hooks."""
    is_z = lambda n: n.endswith("attn.hook_z")  # noqa: E731
    _, clean = model.run_with_cache(pairs.clean.tokens, names_filter=is_z)
    acts, grads = {}, {}

    def keep(store, layer):
        def fn(t, hook):
            store[layer] = t.detach()
        return fn

    n_layers = model.cfg.n_layers
    fwd = [(f"blocks.{layer}.attn.hook_z", keep(acts, layer)) for layer in range(n_layers)]
    bwd = [(f"blocks.{layer}.attn.hook_z", keep(grads, layer)) for layer in range(n_layers)]
    base = pairs.corrupted
    rows = torch.arange(len(base))
    with model.hooks(fwd_hooks=fwd, bwd_hooks=bwd):
        logits = model(base.tokens)
        logits[rows, base.query_pos].softmax(-1)[rows, base.answer_tokens].sum().backward()
    model.zero_grad(set_to_none=True)
    out = []
    for layer in range(n_layers):
        contrib = ((clean[f"blocks.{layer}.attn.hook_z"] - acts[layer]) * grads[layer]).sum(-1)  # [b, pos, head]
        out.append(contrib[rows, base.query_pos] if position == "query" else contrib.sum(1))
    return torch.stack(out).permute(0, 2, 1)


@pytest.mark.parametrize("position", ["query", "all"])
def test_matches_hand_computed_gradient(any_model, task_a, position):
    pairs = ti.make_prompt_pairs(any_model, task_a, n=3, n_shots=3)
    res = ti.attribution_patching(any_model, pairs, position=position)
    assert res.method == "attribution"
    torch.testing.assert_close(res.effects, hand_attribution(any_model, pairs, position), atol=1e-6, rtol=1e-4)
    assert all(p.grad is None for p in any_model.parameters())  # weights' .grad untouched


def test_identity_gives_exactly_zero(any_model, task_a):
    pairs = ti.make_prompt_pairs(any_model, task_a, n=2, n_shots=2, corruption="identity")
    for position in ("query", "all", "demo_input"):
        res = ti.attribution_patching(any_model, pairs, position=position)
        assert torch.equal(res.effects, torch.zeros_like(res.effects)), position


def test_first_order_limit_of_exact_patching(native_model, task_a):
    """For a small patch z := z + eps * d, attribution / exact effect -> 1 as eps -> 0."""
    pairs = ti.make_prompt_pairs(native_model, task_a, n=1, n_shots=3)
    base = pairs.corrupted
    z_base, _ = query_z(native_model, base.tokens, base.query_pos, batch_size=1)
    direction = torch.randn(z_base.shape[1:], generator=torch.Generator().manual_seed(0))
    _, score = scorer("logprob", pairs, native_model.cfg.d_vocab)
    for eps in (1e-2, 1e-3):
        values = z_base[0] + eps * direction
        approx = ti.attribution_patching(native_model, pairs, metric="logprob", values=values)
        exact, _, _ = _engine.patch_query_heads(native_model, base.tokens, base.query_pos, values[None],
                                                _engine.all_heads(native_model), score, method="naive", batch_size=1)
        exact = exact.reshape(approx.effects.shape)
        rel = ((approx.effects - exact).abs().max() / exact.abs().max()).item()
        assert rel < 20 * eps, (eps, rel)


def test_fidelity_report():
    a = torch.arange(12.0).reshape(3, 4)
    same = patching_fidelity(a, a, k=3)
    assert (same.spearman, same.pearson, same.top_k_overlap, same.max_abs_error) == (1.0, 1.0, 1.0, 0.0)
    rev = patching_fidelity(a, -a, k=3)
    assert rev.spearman == pytest.approx(-1.0) and rev.top_k_overlap == 0.0
    assert "Spearman" in str(rev)
    with pytest.raises(TlensICLError, match="shape"):
        patching_fidelity(a, a.T)
    subset = a.clone()
    subset[0] = float("nan")  # heads not patched (heads=...) are left out of the comparison
    part = patching_fidelity(subset, a, k=3)
    assert part.n_heads == 8 and part.spearman == 1.0 and part.max_abs_error == 0.0 and part.top_k_overlap == 1.0


def test_bad_input_raises_before_any_forward(native_model, task_a, monkeypatch):
    pairs = ti.make_prompt_pairs(native_model, task_a, n=2, n_shots=2)
    monkeypatch.setattr(type(native_model), "forward", lambda *a, **k: pytest.fail("forward ran"))
    with pytest.raises(TlensICLError, match="gradient"):
        ti.attribution_patching(native_model, pairs, metric="rank")
    with pytest.raises(TlensICLError, match="position='query'"):
        ti.attribution_patching(native_model, pairs, position="all", values=torch.zeros(2, 4, 16))
    with pytest.raises(TlensICLError, match="n_layers"):
        ti.attribution_patching(native_model, pairs, values=torch.zeros(3, 4, 16))
