"""The TransformerLens 3 compatibility tier: HookedTransformer models built in memory, TL3 bridges, SAELens.

Collected only under TransformerLens 3.x (the test command runs it in a second venv, ``.venv-tl3``);
under 4.x there is no HookedTransformer and these files are not collected.
"""

from __future__ import annotations

import pytest
import torch

from tlens_icl.models.adapter import tl_major

if tl_major() >= 4:
    collect_ignore_glob = ["test_*.py"]

HT_ARCHS = ["ht_gpt2", "ht_neox", "ht_llama"]


def build_hooked(arch: str, tok, n_layers: int = 2, d_model: int = 64, n_heads: int = 4, n_ctx: int = 128, seed: int = 0):
    """A tiny random HookedTransformer (GPT-2-, NeoX- or Llama-style) with non-zero biases and norm weights, eval mode."""
    import warnings

    from transformer_lens import HookedTransformer, HookedTransformerConfig

    base = dict(n_layers=n_layers, d_model=d_model, n_heads=n_heads, d_head=d_model // n_heads, n_ctx=n_ctx,
                d_vocab=len(tok), d_mlp=4 * d_model, seed=seed)
    if arch == "ht_gpt2":
        cfg = HookedTransformerConfig(**base, act_fn="gelu_new", normalization_type="LN")
    elif arch == "ht_neox":
        cfg = HookedTransformerConfig(**base, act_fn="gelu", normalization_type="LN", positional_embedding_type="rotary",
                                      rotary_dim=4, rotary_adjacent_pairs=False, parallel_attn_mlp=True)
    elif arch == "ht_llama":
        cfg = HookedTransformerConfig(**base, act_fn="silu", normalization_type="RMS", eps=1e-6, final_rms=True,
                                      positional_embedding_type="rotary", rotary_dim=d_model // n_heads,
                                      rotary_adjacent_pairs=False, n_key_value_heads=n_heads // 2, gated_mlp=True)
    else:
        raise ValueError(arch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = HookedTransformer(cfg, tokenizer=tok)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf.startswith("b"):  # biases: non-zero
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif leaf == "w":  # norm weights: not all ones
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
    return model.eval()


@pytest.fixture(scope="session", params=HT_ARCHS)
def hooked_model(request, tokenizer):
    """Each HookedTransformer architecture in turn."""
    return build_hooked(request.param, tokenizer)


@pytest.fixture(scope="session")
def ht_llama(tokenizer):
    return build_hooked("ht_llama", tokenizer)


@pytest.fixture(scope="session")
def icl_tiny_hooked():
    import tlens_icl

    return tlens_icl.load_model("icl-tiny", hooked=True)
