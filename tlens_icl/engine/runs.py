"""Forward passes over prompt batches: chunked, no-grad, reading logits at the query position."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from tlens_icl._typing import ModelLike
from tlens_icl.engine.hooks import checked_hooks
from tlens_icl.engine.memory import in_chunks
from tlens_icl.engine.scoring import at_query
from tlens_icl.models.adapter import device_of, forward, rows_per_forward
from tlens_icl.models.loading import require_eval_mode
from tlens_icl.prompts.batch import PromptBatch


def chunks(n: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))


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
    outs: dict[int, Tensor] = {}

    def work(sl: slice) -> None:
        sub = batch.select(sl)
        with checked_hooks(model, fwd_hooks(sub) if callable(fwd_hooks) else fwd_hooks):
            logits = forward(model, sub.tokens.to(device_of(model)))
        outs[sl.start] = at_query(logits, sub.query_pos).float().cpu()

    with torch.no_grad():
        in_chunks(len(batch), rows_per_forward(model, batch_size, edits=bool(fwd_hooks)), work, model=model,
                  what="query_logits")
    return torch.cat([outs[k] for k in sorted(outs)])


def _device(model: ModelLike) -> torch.device:
    """Where input tokens go (see :func:`tlens_icl.models.adapter.device_of`)."""
    return device_of(model)
