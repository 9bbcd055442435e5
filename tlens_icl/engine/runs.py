"""Forward passes over prompt batches: chunked, no-grad, reading logits at the query position."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tlens_icl._typing import ModelLike
from tlens_icl.engine.hooks import checked_hooks
from tlens_icl.engine.scoring import at_query
from tlens_icl.models.loading import require_eval_mode
from tlens_icl.prompts.batch import PromptBatch


def chunks(n: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))


def length_chunks(reach: Int[Tensor, " batch"], batch_size: int) -> list[tuple[Int[Tensor, " rows"], int]]:
    """Row chunks that waste little work on padding: ``(row indices, width)`` per chunk.

    ``reach[i]`` is the last position row ``i`` needs (e.g. its query position). Rows are sorted by it
    (stable) and chunked in that order; each chunk is cut after its longest row's ``reach``: in a causal
    model nothing after a position changes it, so the cut is exact.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    reach = reach.cpu().long()
    order = torch.sort(reach, stable=True).indices
    out = []
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        out.append((rows, int(reach[rows].max()) + 1))
    return out


def query_logits(
    model: ModelLike, batch: PromptBatch, *,
    fwd_hooks: Sequence[tuple[str, Any]] | Callable[[PromptBatch], Sequence[tuple[str, Any]]] = (),
    batch_size: int = 32,
) -> Float[Tensor, "batch d_vocab"]:
    """Logits at each row's query position, in chunks, under ``torch.no_grad``.

    Right padding needs no attention mask for a causal model: positions up to ``query_pos`` never see
    the pads. ``fwd_hooks`` is a list of ``(name, fn)`` or, for hooks that depend on the rows (e.g. their
    query positions), a callable ``chunk -> list``; every hook is checked to have fired.
    """
    require_eval_mode(model, "query_logits")
    outs = []
    with torch.no_grad():
        for sl in chunks(len(batch), batch_size):
            sub = batch.select(sl)
            with checked_hooks(model, fwd_hooks(sub) if callable(fwd_hooks) else fwd_hooks):
                logits = model(sub.tokens.to(_device(model)))
            outs.append(at_query(logits, sub.query_pos).float().cpu())
    return torch.cat(outs)


def _device(model: ModelLike) -> torch.device:
    try:
        return next(model.parameters()).device  # type: ignore[attr-defined]
    except (AttributeError, StopIteration):
        return torch.device("cpu")
