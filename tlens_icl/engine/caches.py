"""Reading activations a user already has: a TransformerLens ``ActivationCache`` from ``run_with_cache``.

TransformerLens projects usually hold a cache of the prompts they study. The analyses that only *read*
activations (collection for decodability / RSA / probing, the mean head activations of mediation) take
``cache=`` plus the :class:`~tlens_icl.prompts.PromptBatch` whose tokens produced it, instead of running
the model a second time. The cache is validated against the batch before anything is read.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from tlens_icl.engine import hooks
from tlens_icl.errors import TlensICLError
from tlens_icl.prompts.batch import PromptBatch


def check_cache(cache: Any, batch: PromptBatch, model: Any = None) -> None:
    """Raise unless ``cache`` is an ``ActivationCache`` of ``model`` over ``batch.tokens``.

    Checks the type, that ``cache.model`` is ``model`` (when both are known), and, when the cache holds
    ``hook_embed``, that its embeddings point along ``W_E[batch.tokens]`` (so it came from these prompts;
    a cache filtered without ``hook_embed`` is checked by shape only, in :func:`cache_activation`).
    """
    if not callable(getattr(cache, "keys", None)) or not hasattr(cache, "__getitem__"):
        raise TlensICLError(f"cache must be a TransformerLens ActivationCache (from run_with_cache), "
                            f"got {type(cache).__name__}.")
    owner = getattr(cache, "model", None)
    if model is not None and owner is not None and owner is not model:
        raise TlensICLError("The cache was computed by a different model object than the one passed.")
    if "hook_embed" in cache.keys() and owner is not None:
        embed = cache_activation(cache, batch, "hook_embed").float()
        W_E = owner.W_E.detach()
        expected = W_E[batch.tokens.to(W_E.device)].float().to(embed.device)
        zero = expected.norm(dim=-1) == 0  # e.g. a pad token whose embedding row is zero (HF padding_idx)
        same = torch.where(zero, embed.norm(dim=-1) == 0,
                           torch.nn.functional.cosine_similarity(embed, expected, dim=-1) > 0.999)
        if not bool(same.all()):
            raise TlensICLError("The cache's hook_embed does not match the embeddings of batch.tokens: the cache "
                                "was computed on other prompts.")


def cache_activation(cache: Any, batch: PromptBatch, name: str) -> Tensor:
    """``cache[name]``, checked to be ``[batch, pos, ...]`` for ``batch`` (from ``run_with_cache(batch.tokens)``,
    without ``remove_batch_dim`` or ``pos_slice``)."""
    if name not in cache.keys():
        raise TlensICLError(f"The cache has no {name!r}: run run_with_cache without a names_filter that drops it.")
    act = cache[name]
    b, p = batch.tokens.shape
    if act.dim() < 3 or tuple(act.shape[:2]) != (b, p):
        raise TlensICLError(f"cache[{name!r}] has shape {tuple(act.shape)}, but the prompt batch is [{b}, {p}]: the "
                            "cache must come from run_with_cache(batch.tokens) (no remove_batch_dim/pos_slice).")
    return act


def query_z_from_cache(
    cache: Any, batch: PromptBatch, model: Any,
) -> Float[Tensor, "batch layer head d_head"]:
    """``hook_z`` of every head at each row's query position, read from ``cache`` (as ``query.query_z`` computes)."""
    check_cache(cache, batch, model)
    rows = torch.arange(len(batch))
    out = []
    for layer in range(model.cfg.n_layers):
        z = cache_activation(cache, batch, hooks.z(layer))
        out.append(z[rows.to(z.device), batch.query_pos.to(z.device)].detach().float().cpu())
    return torch.stack(out, 1)


__all__ = ["cache_activation", "check_cache", "query_z_from_cache"]
