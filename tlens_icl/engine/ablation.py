"""Mean ablation of attention heads: the hooks, and the forwards that run under them.

A head is mean-ablated by overwriting its ``hook_z`` (the per-head attention output before ``W_O``)
with a fixed vector - its mean over a reference set - at the selected positions. Everything here is
built on three small functions, so the ablation can move to another execution engine (e.g. one that
reuses the KV cache of the unablated prefix) without touching the analyses:

* :func:`mean_head_z` - the reference means ``[layer, head, d_head]`` (one capture pass);
* :func:`mean_ablation_hooks` - the ``(hook name, fn)`` list for one set of heads and positions;
* :func:`ablated_query_logits` / :func:`ablated_token_losses` - forwards under those hooks (through
  :func:`~tlens_icl.engine.runs.query_logits` and :func:`~tlens_icl.engine.hooks.checked_hooks`, so a
  hook that did not fire raises);
* :func:`ablated_query_scores` - ablation at the query position only, for many head sets at once on the
  query-intervention engine (one base run; each set recomputes only query copies from its first layer).

Positions: ``"all"`` ablates every real token except a leading BOS (a BOS token only attends to itself,
so its activation is the same in every prompt and its mean is itself: leaving it is the exact mean
ablation there); ``"query"`` ablates only each row's query position (Yin & Steinhardt's few-shot
ablation, which edits the last token). An empty head list installs no hook and equals the plain run.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from tlens_icl._typing import Head, ModelLike
from tlens_icl.engine import hooks
from tlens_icl.engine.capture import Summed, capture
from tlens_icl.engine.query import QueryRun, Reduce, device_of, query_interventions, set_head_means
from tlens_icl.engine.runs import chunks, query_logits
from tlens_icl.errors import TlensICLError
from tlens_icl.models.loading import require_eval_mode
from tlens_icl.prompts.batch import ROLE_ID, PromptBatch

Positions = Literal["all", "query"]
HookList = list[tuple[str, Callable[..., Any]]]


def ablation_positions(batch: PromptBatch, positions: Positions) -> Bool[Tensor, "batch pos"]:
    """Where a head is overwritten: every real non-BOS token (``"all"``) or the query position (``"query"``)."""
    if positions == "all":
        return (batch.attention_mask == 1) & (batch.roles != ROLE_ID["bos"])
    if positions == "query":
        mask = torch.zeros(batch.tokens.shape, dtype=torch.bool)
        mask[torch.arange(len(batch)), batch.query_pos] = True
        return mask
    raise TlensICLError(f"positions must be 'all' or 'query', got {positions!r}.")


def token_positions(tokens: Int[Tensor, "batch pos"], mask: Int[Tensor, "batch pos"], bos_token_id: int | None) -> Bool[Tensor, "batch pos"]:
    """Every real token of a plain token batch except a leading BOS (``"all"`` positions without roles)."""
    sel = mask.bool().clone()
    if bos_token_id is not None:
        sel[:, 0] &= tokens[:, 0] != bos_token_id
    return sel


def mean_head_z(
    model: ModelLike, tokens: Int[Tensor, "batch pos"], where: Bool[Tensor, "batch pos"], *, batch_size: int = 16,
) -> Float[Tensor, "layer head d_head"]:
    """Mean ``hook_z`` of every head over the selected positions of every row (one capture pass, float32 sums)."""
    require_eval_mode(model, "mean_head_z")
    if tokens.shape != where.shape:
        raise TlensICLError(f"where {tuple(where.shape)} does not match tokens {tuple(tokens.shape)}.")
    n_layers = model.cfg.n_layers
    total = int(where.sum())
    if total == 0:
        raise TlensICLError("mean_head_z: no position is selected.")
    summed = Summed(where)
    got = capture(model, tokens, {hooks.z(layer): summed for layer in range(n_layers)}, batch_size=batch_size,
                  operation="mean_head_z")
    return torch.stack([got[hooks.z(layer)].sum(0) for layer in range(n_layers)]) / total


def mean_ablation_hooks(
    model: ModelLike, heads: Sequence[Head], means: Float[Tensor, "layer head d_head"],
    where: Bool[Tensor, "batch pos"] | None = None,
) -> HookList:
    """``hook_z`` hooks that set ``z[b, p, head] := means[layer, head]`` for each head where ``where[b, p]``.

    ``where=None`` ablates every position. One hook per ablated layer; an empty ``heads`` gives ``[]``.
    """
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    if means.shape[:2] != (n_layers, n_heads):
        raise TlensICLError(f"means has shape {tuple(means.shape)}; expected [{n_layers}, {n_heads}, d_head].")
    by_layer: dict[int, list[int]] = defaultdict(list)
    for layer, head in heads:
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            raise TlensICLError(f"Head L{layer}H{head} is outside the model's {n_layers} x {n_heads} heads.")
        if head not in by_layer[layer]:
            by_layer[layer].append(head)

    def make(layer: int, idx: list[int]) -> Callable[..., Tensor]:
        def hook_fn(z: Tensor, hook: Any) -> Tensor:
            value = means[layer, idx].to(z.device, z.dtype)  # [k, d_head]
            z = z.clone()
            if where is None:
                z[:, :, idx] = value
            else:
                sel = where[:, : z.shape[1]].to(z.device)
                part = z[:, :, idx]
                part[sel] = value
                z[:, :, idx] = part
            return z

        return hook_fn

    return [(hooks.z(layer), make(layer, idx)) for layer, idx in sorted(by_layer.items())]


def ablated_query_logits(
    model: ModelLike, batch: PromptBatch, heads: Sequence[Head], means: Float[Tensor, "layer head d_head"], *,
    positions: Positions = "all", batch_size: int = 16,
) -> Float[Tensor, "batch d_vocab"]:
    """Logits at each row's query position with ``heads`` mean-ablated at ``positions``."""
    ablation_positions(batch, positions)  # validates ``positions`` before any forward pass
    if not heads:
        return query_logits(model, batch, batch_size=batch_size)
    if positions == "query":
        return ablated_query_scores(model, batch, [heads], means, lambda logits, rows: logits,
                                    batch_size=batch_size).values[0]
    return query_logits(model, batch, batch_size=batch_size,
                        fwd_hooks=lambda sub: mean_ablation_hooks(model, heads, means, ablation_positions(sub, positions)))


def ablated_query_scores(
    model: ModelLike, batch: PromptBatch, head_sets: Sequence[Sequence[Head]], means: Float[Tensor, "layer head d_head"],
    reduce: Reduce, *, batch_size: int = 16, method: str = "auto",
) -> QueryRun:
    """``reduce`` of the query logits with each head set mean-ablated at the query position only.

    Every head set is a variant of one engine call (:func:`tlens_icl.engine.query.query_interventions`): one
    base run, then only query copies from each set's first ablated layer on. ``.baseline`` is the plain run.
    """
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    if means.shape[:2] != (n_layers, n_heads):
        raise TlensICLError(f"means has shape {tuple(means.shape)}; expected [{n_layers}, {n_heads}, d_head].")
    for hs in head_sets:
        for layer, head in hs:
            if not (0 <= layer < n_layers and 0 <= head < n_heads):
                raise TlensICLError(f"Head L{layer}H{head} is outside the model's {n_layers} x {n_heads} heads.")
    return query_interventions(model, batch.tokens, batch.query_pos, set_head_means(head_sets, means), reduce,
                               method=method, batch_size=batch_size, operation="ablated_query_scores")


def ablated_token_losses(
    model: ModelLike, tokens: Int[Tensor, "batch pos"], mask: Int[Tensor, "batch pos"], heads: Sequence[Head],
    means: Float[Tensor, "layer head d_head"], *, batch_size: int = 8,
) -> Float[Tensor, "batch pos_minus_1"]:
    """Next-token cross-entropy at every position (``[:, i]`` = loss of predicting token ``i + 1``) with
    ``heads`` mean-ablated at every real non-BOS token; NaN where the next token is padding."""
    require_eval_mode(model, "ablated_token_losses")
    bos = getattr(getattr(model, "tokenizer", None), "bos_token_id", None)
    where = token_positions(tokens, mask, bos)
    out = torch.full((tokens.shape[0], tokens.shape[1] - 1), float("nan"))
    dev = device_of(model)
    with torch.no_grad():
        for sl in chunks(len(tokens), batch_size):
            toks = tokens[sl].to(dev)
            fwd = mean_ablation_hooks(model, heads, means, where[sl]) if heads else []
            with hooks.checked_hooks(model, fwd):
                logits = model(toks)
            logp = logits[:, :-1].float().log_softmax(-1)
            loss = -logp.gather(-1, toks[:, 1:, None]).squeeze(-1).cpu()
            loss[mask[sl, 1:] == 0] = float("nan")
            out[sl] = loss
    return out




__all__ = ["Positions", "ablated_query_logits", "ablated_query_scores", "ablated_token_losses", "ablation_positions", "mean_ablation_hooks",
           "mean_head_z", "token_positions"]
