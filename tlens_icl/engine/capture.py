"""The one capture path: activations at hook points, reduced to one value per row inside the hook.

:func:`capture` runs a token batch in chunks and hands each hooked activation ``[b, pos, ...]`` to a
:class:`Reducer`, which keeps only what is asked for - the activation at each row's query
(:class:`AtPositions`), a weighted mean over positions (:class:`Weighted`, e.g. the mean over a token
role), a sum over selected positions (:class:`Summed`, for means over many prompts), or anything a
callable computes (attention statistics). Nothing else is kept, so memory is ``rows x result`` whatever
the prompt length.

Speed: rows are sorted by the last position a reducer reads and chunked in that order, and each chunk
is cut right after that position (right padding and anything after the query never run); without
``logits_at`` the forward stops as soon as every hook has fired (no unembedding), with it only the
``logits_at`` positions are unembedded (:func:`tlens_icl.engine.runs.logit_rows`). Runs under
``torch.inference_mode``. Every hook is checked to have fired.

Memory: rows per forward are capped by the memory budget (:mod:`tlens_icl.engine.runs`); a chunk that
runs out of memory is run again with fewer rows, keeping the chunks already done. A remote model
(:mod:`tlens_icl.models.remote`) is run through its driver, whose capture hooks fire as usual.

Device and dtype: reducers compute on the activation's device; sums and means are float32 (float64
stays float64); results come back as float32 tensors on the CPU, in the caller's row order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from tlens_icl._typing import ModelLike
from tlens_icl.engine import hooks
from tlens_icl.engine.progress import progress_bar
from tlens_icl.engine.runs import in_plan, length_chunks, logit_rows, read_logits, rows_per_forward
from tlens_icl.errors import TlensICLError
from tlens_icl.models.adapter import ModelHandle, resolved


def acc_dtype(t: Tensor) -> torch.dtype:
    """The accumulation dtype for statistics of ``t``: float32, or float64 if ``t`` is float64."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


class Reducer:
    """Maps a hooked activation ``[b, pos, ...]`` of the chunk ``rows`` to ``[b, ...]``.

    ``reach[i]``: the last position the reducer reads in row ``i`` (None: every position).
    """

    reach: Tensor | None = None

    def __call__(self, act: Tensor, rows: Tensor) -> Tensor:
        raise NotImplementedError


@dataclass
class AtPositions(Reducer):
    """The activation at ``pos[i]`` of row ``i`` (e.g. the query position)."""

    pos: Int[Tensor, " batch"]

    def __post_init__(self) -> None:
        self.reach = self.pos.long()

    def __call__(self, act: Tensor, rows: Tensor) -> Tensor:
        ar = torch.arange(act.shape[0], device=act.device)
        return act[ar, self.pos[rows].to(act.device)]


@dataclass
class Weighted(Reducer):
    """``sum_p weights[i, p] * act[i, p]`` (weights summing to 1 give a mean over positions)."""

    weights: Float[Tensor, "batch pos"]

    def __post_init__(self) -> None:
        self.reach = last_position(self.weights != 0)

    def __call__(self, act: Tensor, rows: Tensor) -> Tensor:
        w = self.weights[rows, : act.shape[1]].to(act.device, acc_dtype(act))
        return torch.einsum("bp,bp...->b...", w, act.to(w.dtype))


@dataclass
class Summed(Reducer):
    """``sum_{p: where[i, p]} act[i, p]`` per row, accumulated in float32."""

    where: Bool[Tensor, "batch pos"]

    def __post_init__(self) -> None:
        self.reach = last_position(self.where.bool())

    def __call__(self, act: Tensor, rows: Tensor) -> Tensor:
        w = self.where[rows, : act.shape[1]].to(act.device, acc_dtype(act))
        return torch.einsum("bp,bp...->b...", w, act.to(w.dtype))


@dataclass
class Custom(Reducer):
    """Any ``fn(act [b, pos, ...], rows [b]) -> [b, ...]``; ``reach`` as for every reducer (None: all)."""

    fn: Callable[[Tensor, Tensor], Tensor]
    reach: Tensor | None = None

    def __call__(self, act: Tensor, rows: Tensor) -> Tensor:
        return self.fn(act, rows)


class _Captured(Exception):
    """Raised by the last capture hook of a forward whose logits are not needed (stops it early)."""


def last_position(mask: Tensor) -> Tensor:
    """Per row, the last position where ``mask`` is true (-1 where none is)."""
    pos = torch.arange(mask.shape[1]).expand_as(mask)
    return torch.where(mask.cpu(), pos, -1).max(1).values


@resolved
def capture(
    model: ModelLike | ModelHandle, tokens: Int[Tensor, "batch pos"], reducers: Mapping[str, Reducer], *,
    logits_at: Int[Tensor, " batch"] | None = None, batch_size: int = 32, progress: bool | None = None,
    operation: str = "capture",
) -> dict[str, Tensor]:
    """Reduced activations ``{hook name: [batch, ...]}`` (float32, CPU, in row order).

    ``logits_at``: also return ``"logits"`` ``[batch, d_vocab]`` read at these positions (e.g. the query).
    """
    names = list(reducers)
    if not names and logits_at is None:
        raise TlensICLError("capture needs at least one hook name or logits_at.")
    hooks.require_hooks(model, names)
    n, width = tokens.shape
    reach = torch.full((n,), width - 1, dtype=torch.long)
    parts = [r.reach for r in reducers.values()] + ([logits_at.long()] if logits_at is not None else [])
    if all(p is not None for p in parts):
        reach = torch.stack([p.cpu().long() for p in parts]).max(0).values.clamp(min=0)  # type: ignore[union-attr]
    out: dict[str, list[Tensor]] = {name: [] for name in [*names, *(["logits"] if logits_at is not None else [])]}
    order: list[Tensor] = []
    dev = model.device
    bar = progress_bar(total=n, enabled=progress, desc=operation)

    def work(rows: Tensor, w: int) -> None:
        got: dict[str, Tensor] = {}

        def make(name: str, reducer: Reducer) -> Callable[..., None]:
            def grab(act: Tensor, hook: Any) -> None:
                got[name] = reducer(act, rows).float().cpu()
                if logits_at is None and len(got) == len(names):
                    raise _Captured  # everything is read: the rest of the forward (e.g. the unembedding) is skipped
            return grab

        fwd = [(nm, make(nm, r)) for nm, r in reducers.items()]
        at = logit_rows(model, logits_at[rows], fwd) if logits_at is not None else None
        try:
            logits = read_logits(model, tokens[rows, :w].to(dev), at, fwd)
        except _Captured:  # raised once every capture hook has fired, and only when no logits are read
            logits = None
        if at is not None:
            got["logits"] = logits.float().cpu()
        for name in out:  # written only once the chunk succeeded (an OOM retries it smaller)
            out[name].append(got[name])
        order.append(rows)
        bar.update(len(rows))

    with torch.inference_mode():
        try:
            plan = length_chunks(reach, rows_per_forward(model, int(reach.max()) + 1 if n else 1, batch_size,
                                                         logit_positions=0 if logits_at is None else 1))
            in_plan(plan, work, model=model, what=operation)
        finally:
            bar.close()
    inverse = torch.empty(n, dtype=torch.long)
    inverse[torch.cat(order)] = torch.arange(n)
    return {name: torch.cat(parts)[inverse] for name, parts in out.items()}


@resolved
def capture_at_query(
    model: ModelLike | ModelHandle, tokens: Int[Tensor, "batch pos"], query_pos: Int[Tensor, " batch"], names: Sequence[str], *,
    logits: bool = False, batch_size: int = 32, progress: bool | None = None, operation: str = "capture_at_query",
) -> dict[str, Tensor]:
    """Activations of ``names`` at each row's query position (``[batch, ...]`` each), plus ``"logits"`` if asked."""
    at = AtPositions(query_pos)
    return capture(model, tokens, {n: at for n in dict.fromkeys(names)}, logits_at=query_pos if logits else None,
                   batch_size=batch_size, progress=progress, operation=operation)


@resolved
def query_z(
    model: ModelLike | ModelHandle, tokens: Int[Tensor, "batch pos"], query_pos: Int[Tensor, " batch"], *, batch_size: int = 32,
    progress: bool | None = None, logits: bool = True,
) -> tuple[Float[Tensor, "batch layer head d_head"], Float[Tensor, "batch d_vocab"] | None]:
    """``hook_z`` of every head at each row's query position, and the logits there (None if ``logits=False``:
    the forward then stops after the last layer's attention)."""
    n_layers = model.cfg.n_layers
    got = capture_at_query(model, tokens, query_pos, [hooks.z(layer) for layer in range(n_layers)], logits=logits,
                           batch_size=batch_size, progress=progress, operation="query_z")
    return torch.stack([got[hooks.z(layer)] for layer in range(n_layers)], 1), got.get("logits")


__all__ = ["AtPositions", "Custom", "Reducer", "Summed", "Weighted", "acc_dtype", "capture", "capture_at_query",
           "last_position", "query_z"]
