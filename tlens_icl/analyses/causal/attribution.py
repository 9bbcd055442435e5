"""Attribution patching: a first-order estimate of every head's patching effect from one forward + backward.

For head ``(l, h)`` and example ``i`` the effect of setting ``z := z_source`` in the base run is
approximated by ``(z_source - z_base) . d metric / d z_base`` (summed over the patched positions), with
the gradient taken once in the base run (Nanda's attribution patching). Same sign convention as
:func:`~tlens_icl.analyses.causal.patching.head_patching`; the result is a :class:`HeadPatchingResult` with
``method="attribution"``. Cost: one forward and one backward per row chunk (about 3 forward-pass
equivalents) plus the source run, instead of one forward per head. :func:`patching_fidelity` reports
how well it ranks heads compared with exact patching.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from tlens_icl._ties import ranked
from tlens_icl._typing import Head, ModelLike
from tlens_icl._validate import checked
from tlens_icl.analyses.causal.patching import (
    HeadPatchingResult,
    check_position,
    position_mask,
    scorer,
    sides,
)
from tlens_icl.engine import hooks
from tlens_icl.engine import query as _engine
from tlens_icl.engine.capture import Custom, capture, query_z
from tlens_icl.engine.runs import chunks, logit_rows, query_logits, read_logits
from tlens_icl.engine.scoring import Metric
from tlens_icl.errors import TlensICLError
from tlens_icl.models.adapter import ModelHandle, handle, resolved
from tlens_icl.prompts.batch import PromptBatch
from tlens_icl.prompts.pairs import PromptPairBatch
from tlens_icl.results.base import run_info


@checked
def attribution_patching(
    model: ModelLike, pairs: PromptPairBatch, *, metric: str | Metric = "prob", direction: str = "denoise",
    position: str = "query", values: Float[Tensor, "layer head d_head"] | None = None,
    heads: Sequence[Head | tuple[int, int]] | None = None, batch_size: int = 16, progress: bool | None = None,
) -> HeadPatchingResult:
    """Gradient estimate of :func:`~tlens_icl.analyses.causal.patching.head_patching` for all heads at once.

    Args:
        values: patch this activation (e.g. a task-mean ``IndirectEffectResult.mean_z[t]``) instead of the
            source run's; only with ``position="query"``. This estimates Todd et al.'s indirect effect.
        heads: report only these heads (the others are NaN, as in ``head_patching``); no cheaper, since one
            backward pass yields every head's gradient.
        Other arguments as in :func:`~tlens_icl.analyses.causal.patching.head_patching`; ``metric`` must be
            differentiable (``prob``, ``logprob``, ``logit_diff`` or a callable).

    Returns:
        :class:`HeadPatchingResult` with ``method="attribution"``: ``effects[l, h, i]`` estimates
        ``metric(patched) - metric(unpatched)``.
    """
    check_position(position, pairs, "attribution_patching")
    model = handle(model)
    cells = _engine.resolve_heads(model, heads)
    base, source = sides(pairs, direction)
    metric_name, score = scorer(metric, pairs, model.cfg.d_vocab)
    require_gradient(metric_name)
    if values is not None and position != "query":
        raise TlensICLError("values= replaces the query-position activation; it needs position='query'.")
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    if values is not None and tuple(values.shape[:2]) != (n_layers, n_heads):
        raise TlensICLError(f"values must be [n_layers={n_layers}, n_heads={n_heads}, d_head], got {tuple(values.shape)}.")

    if position == "query":
        if values is None:
            query_values, src_logits = query_z(model, source.tokens, source.query_pos, batch_size=batch_size)
        else:
            query_values = values.float().expand(len(base), -1, -1, -1)
            src_logits = query_logits(model, source, batch_size=batch_size)
        source_score = score(src_logits, slice(None))
        effects, base_score = attribution_at_query(model, base, query_values, score, batch_size=batch_size,
                                                   progress=progress)
    else:
        effects, base_score, source_score = _at_positions(model, base, source, position_mask(base, position), score,
                                                          batch_size, progress)
    clean, corrupted = (source_score, base_score) if direction == "denoise" else (base_score, source_score)
    return HeadPatchingResult(
        effects=_engine.head_grid(model, cells, effects[[c.layer for c in cells], [c.head for c in cells]]),
        clean_metric=clean, corrupted_metric=corrupted, metric=metric_name, direction=direction,
        position=position, method="attribution", task=pairs.task, corruption=pairs.corruption,
        info=run_info(model, task=pairs.task, corruption=pairs.corruption, seed=pairs.seed, n_shots=pairs.n_shots,
                      metric=metric_name, n=len(pairs), patched_values="given" if values is not None else "source run",
                      heads=None if heads is None else [str(h) for h in cells]),
    )


def require_gradient(metric_name: str) -> None:
    """Raise for a metric without a gradient (``rank``, ``top1``): attribution needs ``d metric / d z``."""
    if metric_name in ("rank", "top1"):
        raise TlensICLError(f"metric={metric_name!r} has no gradient; use 'prob', 'logprob' or 'logit_diff'.")


@resolved
def attribution_at_query(
    model: ModelLike | ModelHandle, base: PromptBatch, values: Float[Tensor, "batch layer head d_head"],
    score: _engine.Scorer, *, batch_size: int = 16, progress: bool | None = None,
) -> tuple[Float[Tensor, "layer head batch"], Float[Tensor, " batch"]]:
    """First-order effect of setting every head's query ``hook_z`` of ``base`` row ``i`` to ``values[i]``:
    ``(values - z) . d score / d z`` per head and row (positive: the patch raises the metric), and the unpatched
    ``score`` of each row. The core of :func:`attribution_patching` at the query (and of Todd et al.'s indirect
    effect estimated by gradients)."""
    effects, base_score = torch.zeros(model.cfg.n_layers, model.cfg.n_heads, len(base)), torch.zeros(len(base))
    bar = _engine.progress_bar(-(-len(base) // batch_size), progress, "attribution patching")
    for sl in chunks(len(base), batch_size):
        sub = base.select(sl)
        effects[:, :, sl], base_score[sl] = _first_order(model, sub, score, sl, _query_diff(sub, values[sl]))
        bar.update()
    bar.close()
    return effects, base_score


def _at_positions(model: ModelHandle, base: PromptBatch, source: PromptBatch, mask: Tensor | None,
                  score: _engine.Scorer, batch_size: int, progress: bool | None) -> tuple[Tensor, Tensor, Tensor]:
    """First-order effects of patching the source run's ``hook_z`` at the ``mask`` positions (None: all)."""
    n_layers = model.cfg.n_layers
    effects, base_score, source_parts = torch.zeros(n_layers, model.cfg.n_heads, len(base)), torch.zeros(len(base)), []
    whole = Custom(lambda act, rows: act)  # the full activation (one chunk at a time)
    bar = _engine.progress_bar(-(-len(base) // batch_size), progress, "attribution patching")
    for sl in chunks(len(base), batch_size):
        sub, src = base.select(sl), source.select(sl)
        acts = capture(model, src.tokens, {hooks.z(layer): whole for layer in range(n_layers)},
                       logits_at=src.query_pos, batch_size=len(src), operation="attribution_patching")
        source_parts.append(score(acts.pop("logits"), sl))
        sel = mask[sl, : sub.tokens.shape[1]] if mask is not None else torch.ones_like(sub.tokens, dtype=torch.bool)
        effects[:, :, sl], base_score[sl] = _first_order(model, sub, score, sl, _positions_diff(acts, sel.to(model.device)))
        bar.update()
    bar.close()
    return effects, base_score, torch.cat(source_parts)


def _query_diff(sub: PromptBatch, vals: Tensor):
    """``(layer, z, grad) -> [batch, head]``: (value - z) . grad at each row's query position."""
    def diff(layer: int, z: Tensor, grad: Tensor) -> Tensor:
        rows = torch.arange(z.shape[0], device=z.device)
        q = sub.query_pos.to(z.device)
        return ((vals[:, layer].to(z.device) - z[rows, q]) * grad[rows, q]).sum(-1)

    return diff


def _positions_diff(acts: dict[str, Tensor], sel: Tensor):
    """``(layer, z, grad) -> [batch, head]``: (source - z) . grad summed over the selected positions."""
    def diff(layer: int, z: Tensor, grad: Tensor) -> Tensor:
        contrib = ((acts[hooks.z(layer)].to(z.device, z.dtype) - z) * grad).sum(-1)  # [batch, pos, head]
        return (contrib * sel[:, :, None]).sum(1)

    return diff


def _first_order(model: ModelHandle, sub: PromptBatch, score: _engine.Scorer, sl: slice, diff) -> tuple[Tensor, Tensor]:
    """One forward with gradients to every layer's ``hook_z``; returns (effects [layer, head, batch], score)."""
    n_layers = model.cfg.n_layers
    dev = model.device
    zs: dict[int, Tensor] = {}

    def keep(z: Tensor, hook: Any, layer: int) -> Tensor:
        zs[layer] = z.clone()  # the tensor the rest of the forward uses, so d metric / d z reaches it
        return zs[layer]

    def with_grad(embed: Tensor, hook: Any) -> Tensor:  # gradients flow even if the weights are frozen
        return embed if embed.requires_grad else embed.detach().requires_grad_(True)

    fwd = [(hooks.embed(), with_grad)] + [(hooks.z(layer), _engine.bind(keep, layer=layer)) for layer in range(n_layers)]
    at = logit_rows(model, sub.query_pos, fwd)  # the query row only is unembedded (and backpropagated)
    with torch.enable_grad():
        values = score(read_logits(model, sub.tokens.to(dev), at, fwd), sl)
        ordered = [zs[layer] for layer in range(n_layers)]
        grads = torch.autograd.grad(values.sum(), ordered)
    with torch.no_grad():
        effects = torch.stack([diff(layer, ordered[layer].detach().float(), grads[layer].float())
                               for layer in range(n_layers)])  # [layer, batch, head]
    return effects.permute(0, 2, 1).cpu(), values.detach()


@dataclass(frozen=True)
class Fidelity:
    """Agreement of approximate per-head effects with exact ones (means over examples/tasks)."""

    spearman: float
    pearson: float
    top_k_overlap: float
    k: int
    max_abs_error: float
    n_heads: int

    def __str__(self) -> str:
        return (f"Spearman {self.spearman:.3f}, Pearson {self.pearson:.3f}, top-{self.k} overlap "
                f"{self.top_k_overlap:.2f}, max |error| {self.max_abs_error:.3g} over {self.n_heads} heads")


@checked
def patching_fidelity(approx: Any, exact: Any, *, k: int = 10, task: str | None = None) -> Fidelity:
    """Rank correlation, linear correlation and top-``k`` overlap of two per-head effect maps.

    ``approx``/``exact`` are results with ``.mean(task)`` (e.g. attribution vs exact patching) or
    ``[layer, head]`` tensors. Top-``k`` overlap = shared heads among the ``k`` largest / ``k``. Only heads
    patched in both (not NaN) are compared; ``n_heads`` counts them.
    """
    from scipy.stats import pearsonr, spearmanr

    a, e = (x if isinstance(x, Tensor) else x.mean(task) for x in (approx, exact))
    if a.shape != e.shape:
        raise TlensICLError(f"Effect maps differ in shape: {tuple(a.shape)} vs {tuple(e.shape)}.")
    measured = ~(a.isnan() | e.isnan()).flatten()  # heads left out by ``heads=`` are NaN
    if not bool(measured.any()):
        raise TlensICLError("The two effect maps share no patched head.")
    a, e = a.flatten()[measured].double(), e.flatten()[measured].double()
    k = max(1, min(k, a.numel()))
    top = lambda x: set(ranked(x)[:k].tolist())  # noqa: E731  (near-ties: lower index first)
    constant = bool(a.std() == 0 or e.std() == 0)
    return Fidelity(
        spearman=float("nan") if constant else float(spearmanr(a.numpy(), e.numpy()).statistic),
        pearson=float("nan") if constant else float(pearsonr(a.numpy(), e.numpy()).statistic),
        top_k_overlap=len(top(a) & top(e)) / k, k=k, max_abs_error=float((a - e).abs().max()), n_heads=a.numel(),
    )


__all__ = ["Fidelity", "attribution_patching", "patching_fidelity"]
