"""Mean ablation of attention heads: the hooks, and the forwards that run under them.

A head is mean-ablated by overwriting its ``hook_z`` (the per-head attention output before ``W_O``)
with a fixed vector - its mean over a reference set - at the selected positions. Everything here is
built on three small functions, so the ablation can move to another execution engine (e.g. one that
reuses the KV cache of the unablated prefix) without touching the analyses:

* :func:`mean_head_z` - the reference means ``[layer, head, d_head]`` (one capture pass);
* :func:`mean_ablation_hooks` - the ``(hook name, fn)`` list for one set of heads and positions;
* :func:`ablation_sweep` - many head sets ablated at the given positions of one token batch: per row
  chunk one clean run, which records the residual stream entering each layer where some set's first
  ablated head sits; a set whose first ablated layer is ``s`` then runs only blocks ``s..`` (the earlier
  blocks become the identity and the recorded residual is put back at ``blocks.s.hook_resid_pre``) -
  exact, since an ablation at layer ``s`` changes nothing before it. A control forward (no edit, entering
  at the deepest such layer) must reproduce the clean logits, else every set runs in full with one
  warning. :func:`ablated_query_logits` / :func:`ablated_token_losses` are its one-set cases (every hook
  goes through :func:`~tlens_icl.engine.hooks.checked_hooks`, so a hook that did not fire raises);
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
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from tlens_icl._typing import Head, ModelLike
from tlens_icl.engine import hooks
from tlens_icl.engine.capture import Summed, capture
from tlens_icl.engine.query import (
    QueryRun,
    Reduce,
    query_interventions,
    set_head_means,
)
from tlens_icl.engine.runs import check_control, in_plan, is_oom, length_chunks, logit_rows, query_logits, rows_per_forward
from tlens_icl.engine.scoring import at_query
from tlens_icl.errors import TlensICLError
from tlens_icl.models import kv
from tlens_icl.models.adapter import ModelHandle, resolved
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


@resolved
def mean_head_z(
    model: ModelLike | ModelHandle, tokens: Int[Tensor, "batch pos"], where: Bool[Tensor, "batch pos"], *, batch_size: int = 16,
) -> Float[Tensor, "layer head d_head"]:
    """Mean ``hook_z`` of every head over the selected positions of every row (one capture pass, float32 sums)."""
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


def _check_heads(model: ModelLike, head_sets: Sequence[Sequence[Head]], means: Tensor) -> None:
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    if means.shape[:2] != (n_layers, n_heads):
        raise TlensICLError(f"means has shape {tuple(means.shape)}; expected [{n_layers}, {n_heads}, d_head].")
    for hs in head_sets:
        for layer, head in hs:
            if not (0 <= layer < n_layers and 0 <= head < n_heads):
                raise TlensICLError(f"Head L{layer}H{head} is outside the model's {n_layers} x {n_heads} heads.")


#: ``reduce(logits [b, width, d_vocab], rows [b]) -> [b, ...]`` of one row chunk (cut after its rows' reach).
SweepReduce = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class QueryReduce:
    """A sweep reduce that reads the logits at each row's query only: ``reduce(logits there [b, d_vocab], rows)``.

    :func:`ablation_sweep` then unembeds only the query positions (:func:`tlens_icl.engine.runs.logit_rows`);
    called on full logits ``[b, width, d_vocab]`` it reads the query itself (the same numbers).
    """

    query_pos: Int[Tensor, " batch"]
    reduce: Reduce

    def __call__(self, logits: Tensor, rows: Tensor) -> Tensor:
        return self.reduce(at_query(logits, self.query_pos[rows]), rows)


@resolved
def ablation_sweep(
    model: ModelLike | ModelHandle, tokens: Int[Tensor, "batch pos"], reach: Int[Tensor, " batch"], where: Bool[Tensor, "batch pos"],
    head_sets: Sequence[Sequence[Head]], means: Float[Tensor, "layer head d_head"], reduce: SweepReduce, *,
    batch_size: int = 16, method: Literal["auto", "naive"] = "auto",
) -> list[Tensor]:
    """``reduce`` of the logits with each head set mean-ablated at ``where``: one ``[batch, ...]`` tensor per set.

    ``reach[i]``: the last position row ``i`` needs (chunks are cut after it). ``method="auto"`` shares each
    chunk's clean run and starts every set at its first ablated layer (module docstring); ``"naive"`` runs
    every set in full. An empty set is the clean run.
    """
    if method not in ("auto", "naive"):
        raise TlensICLError(f"method must be 'auto' or 'naive', got {method!r}.")
    if tokens.shape != where.shape or reach.shape != tokens.shape[:1]:
        raise TlensICLError(f"tokens {tuple(tokens.shape)}, where {tuple(where.shape)} and reach {tuple(reach.shape)} "
                            "do not match.")
    _check_heads(model, head_sets, means)
    n_layers = model.cfg.n_layers
    starts = [min(layer for layer, _ in hs) if hs else n_layers for hs in head_sets]
    skip = method == "auto"
    entries = sorted({s for s in starts if 0 < s < n_layers}) if skip else []
    out: list[Tensor | None] = [None] * len(head_sets)
    dev = model.device
    reach = reach.long().cpu()
    at_query_only = isinstance(reduce, QueryReduce)
    plan = length_chunks(reach, rows_per_forward(model, int(reach.max()) + 1 if len(reach) else 1, batch_size,
                                                 logit_positions=1 if at_query_only else None))

    def put(i: int, rows: Tensor, value: Tensor) -> None:
        if out[i] is None:
            out[i] = torch.full((len(tokens), *value.shape[1:]), float("nan"))
        out[i][rows] = value.float().cpu()  # type: ignore[index]

    def grab(store: dict[int, Tensor], layer: int) -> Callable[..., None]:
        def fn(act: Tensor, hook: Any) -> None:
            store[layer] = act.detach().clone()
        return fn

    def inject(resid: Tensor) -> Callable[..., Tensor]:
        def fn(act: Tensor, hook: Any) -> Tensor:
            return resid.to(act.device, act.dtype).clone()
        return fn

    def logits(rows: Tensor, fwd: HookList) -> Any:
        """``(hooks, read)``: the query rows only (a :class:`QueryReduce`), else every position."""
        if not at_query_only:
            return [], lambda lg: lg
        at = logit_rows(model, reduce.query_pos[rows], fwd)  # type: ignore[attr-defined]
        return at.hooks, at.read

    def run(toks: Tensor, rows: Tensor, fwd: HookList, start: int, got: dict[int, Tensor], kinds: list[bool]) -> Tensor:
        cut, read = logits(rows, fwd)
        if start == 0 or start >= n_layers or not skip:
            with hooks.checked_hooks(model, fwd + cut):
                return read(model(toks))
        with hooks.checked_hooks(model, [(hooks.resid_pre(start), inject(got[start]))] + fwd + cut), \
                kv.skipping(model, start, kinds):
            return read(model(toks))

    def work(rows: Tensor, width: int) -> None:
        nonlocal skip
        toks = tokens[rows, :width].to(dev)
        got: dict[int, Tensor] = {}
        fwd = [(hooks.resid_pre(s), grab(got, s)) for s in entries]
        cut, read = logits(rows, fwd)
        with kv.block_kinds(model) as kind_of, hooks.checked_hooks(model, fwd + cut):
            base = read(model(toks))
        kinds = [kind_of.get(i, False) for i in range(n_layers)]
        if skip and entries:  # the control: entering at the deepest layer without an edit is the clean run
            try:
                check_control(run(toks, rows, [], entries[-1], got, kinds), base, model.dtype)
            except Exception as e:  # noqa: BLE001 - any failure of the shortcut: warn once, run in full
                if is_oom(e):
                    raise
                model.warn_once(f"ablation_sweep:{type(e).__name__}",
                                f"tlens_icl: starting an ablated forward at its first ablated layer is not exact "
                                f"for this model ({e}); every head set runs in full (exact, slower).")
                skip = False
        score = reduce.reduce if at_query_only else reduce  # type: ignore[attr-defined]
        clean = score(base, rows)
        del base
        for i, hs in enumerate(head_sets):
            if not hs:
                put(i, rows, clean)
                continue
            fwd = mean_ablation_hooks(model, hs, means, where[rows, :width])
            put(i, rows, score(run(toks, rows, fwd, starts[i], got, kinds), rows))

    with torch.inference_mode():  # a chunk that runs out of memory is re-run with half the rows (finished ones kept)
        in_plan(plan, work, model=model, what="ablation_sweep")
    return [o if o is not None else torch.empty(0) for o in out]


@resolved
def ablated_query_logits(
    model: ModelLike | ModelHandle, batch: PromptBatch, heads: Sequence[Head], means: Float[Tensor, "layer head d_head"], *,
    positions: Positions = "all", batch_size: int = 16,
) -> Float[Tensor, "batch d_vocab"]:
    """Logits at each row's query position with ``heads`` mean-ablated at ``positions``."""
    where = ablation_positions(batch, positions)  # validates ``positions`` before any forward pass
    if not heads:
        return query_logits(model, batch, batch_size=batch_size)
    if positions == "query":
        return ablated_query_scores(model, batch, [heads], means, lambda logits, rows: logits,
                                    batch_size=batch_size).values[0]
    return ablation_sweep(model, batch.tokens, batch.query_pos, where, [heads], means,
                          query_reduce(batch, lambda logits, rows: logits), batch_size=batch_size)[0]


def query_reduce(batch: PromptBatch, reduce: Reduce) -> QueryReduce:
    """A sweep reduce applying ``reduce(logits at the query [b, d_vocab], rows)`` to a chunk of ``batch``."""
    return QueryReduce(batch.query_pos, reduce)


def token_loss_reduce(tokens: Int[Tensor, "batch pos"], mask: Int[Tensor, "batch pos"]) -> SweepReduce:
    """A sweep reduce giving next-token cross-entropy ``[b, pos - 1]`` (NaN where the next token is padding)."""
    def fn(logits: Tensor, rows: Tensor) -> Tensor:
        width = logits.shape[1]
        toks = tokens[rows, :width].to(logits.device)
        loss = torch.full((len(rows), tokens.shape[1] - 1), float("nan"))
        part = -logits[:, :-1].float().log_softmax(-1).gather(-1, toks[:, 1:, None]).squeeze(-1).cpu()
        part[mask[rows, 1:width] == 0] = float("nan")
        loss[:, : width - 1] = part
        return loss
    return fn


@resolved
def ablated_query_scores(
    model: ModelLike | ModelHandle, batch: PromptBatch, head_sets: Sequence[Sequence[Head]], means: Float[Tensor, "layer head d_head"],
    reduce: Reduce, *, batch_size: int = 16, method: str = "auto",
) -> QueryRun:
    """``reduce`` of the query logits with each head set mean-ablated at the query position only.

    Every head set is a variant of one engine call (:func:`tlens_icl.engine.query.query_interventions`): one
    base run, then only query copies from each set's first ablated layer on. ``.baseline`` is the plain run.
    """
    _check_heads(model, head_sets, means)
    return query_interventions(model, batch.tokens, batch.query_pos, set_head_means(head_sets, means), reduce,
                               method=method, batch_size=batch_size, operation="ablated_query_scores")


@resolved
def ablated_token_losses(
    model: ModelLike | ModelHandle, tokens: Int[Tensor, "batch pos"], mask: Int[Tensor, "batch pos"], heads: Sequence[Head],
    means: Float[Tensor, "layer head d_head"], *, batch_size: int = 8,
) -> Float[Tensor, "batch pos_minus_1"]:
    """Next-token cross-entropy at every position (``[:, i]`` = loss of predicting token ``i + 1``) with
    ``heads`` mean-ablated at every real non-BOS token; NaN where the next token is padding."""
    return ablated_token_loss_sweep(model, tokens, mask, [heads], means, batch_size=batch_size)[0]


@resolved
def ablated_token_loss_sweep(
    model: ModelLike | ModelHandle, tokens: Int[Tensor, "batch pos"], mask: Int[Tensor, "batch pos"], head_sets: Sequence[Sequence[Head]],
    means: Float[Tensor, "layer head d_head"], *, batch_size: int = 8, method: Literal["auto", "naive"] = "auto",
) -> list[Float[Tensor, "batch pos_minus_1"]]:
    """:func:`ablated_token_losses` for many head sets, sharing each chunk's clean run (:func:`ablation_sweep`)."""
    bos = getattr(getattr(model, "tokenizer", None), "bos_token_id", None)
    reach = (mask.long().cumsum(1).argmax(1)).clamp(min=1)  # each row's last real token
    return ablation_sweep(model, tokens, reach, token_positions(tokens, mask, bos), head_sets, means,
                          token_loss_reduce(tokens, mask), batch_size=batch_size, method=method)


__all__ = ["Positions", "QueryReduce", "ablated_query_logits", "ablated_query_scores", "ablated_token_loss_sweep", "ablated_token_losses",
           "ablation_positions", "ablation_sweep", "mean_ablation_hooks", "mean_head_z", "query_reduce", "token_loss_reduce",
           "token_positions"]
