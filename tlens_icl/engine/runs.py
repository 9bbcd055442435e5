"""Forward passes over prompt batches: chunked, no-grad, reading logits at the query position, and
scoring whole answers by teacher forcing (:func:`answer_scores`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tlens_icl._typing import ModelLike
from tlens_icl.engine.hooks import checked_hooks
from tlens_icl.engine.memory import in_plan, memory_budget
from tlens_icl.engine.scoring import (
    accepted_top1,
    at_query,
    match_answers,
    prob,
    teacher_forced,
)
from tlens_icl.models.adapter import device_of, driver_rows, dtype_of, forward
from tlens_icl.models.loading import require_eval_mode
from tlens_icl.prompts.batch import PromptBatch


def bytes_per_token(model: ModelLike, keys: int) -> int:
    """Rough activation bytes of one token in a forward attending to ``keys`` positions (logits incl. a float32 copy)."""
    cfg = model.cfg
    d_mlp = getattr(cfg, "d_mlp", None) or 4 * cfg.d_model
    elem = torch.finfo(dtype_of(model)).bits // 8
    return elem * (cfg.d_vocab + 2 * d_mlp + 12 * cfg.d_model + 3 * cfg.n_heads * keys) + 8 * cfg.d_vocab


def rows_per_forward(model: ModelLike, seq: int, batch_size: int, budget: int | None = None, *,
                     edits: bool = False) -> int:
    """``batch_size`` capped so one forward of ``seq`` tokens per row fits the memory budget
    (default :func:`~tlens_icl.engine.memory.memory_budget`) and the rows one call of the model's
    family takes (a remote driver: often one prompt; ``edits``: the forward carries interventions)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    fit = (budget or memory_budget(model)) // (bytes_per_token(model, seq) * seq)
    return max(1, min(driver_rows(model, batch_size, edits=edits), fit))


def query_plan(model: ModelLike, query_pos: Int[Tensor, " batch"], batch_size: int,
               budget: int | None = None, *, edits: bool = False) -> list[tuple[Int[Tensor, " rows"], int]]:
    """Row chunks for reading the query position: sorted by it, cut after it, memory-capped.

    The one plan of :func:`query_logits` and of the engine's base runs, so the same prompts give
    bit-identical unpatched logits through either.
    """
    width = int(query_pos.max()) + 1 if len(query_pos) else 1
    return length_chunks(query_pos, rows_per_forward(model, width, batch_size, budget, edits=edits))


def chunks(n: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))


def length_chunks(reach: Int[Tensor, " batch"], batch_size: int) -> list[tuple[Int[Tensor, " rows"], int]]:
    """Row chunks that waste little work on padding: ``(row indices, width)`` per chunk.

    ``reach[i]`` is the last position row ``i`` needs (e.g. its query position). When the rows need
    several chunks they are sorted by it (stable) and chunked in that order; one chunk keeps the caller's
    row order (so hooks a caller installed for its rows still line up). Each chunk is cut after its
    longest row's ``reach``: in a causal model nothing after a position changes it, so the cut is exact.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    reach = reach.cpu().long()
    if len(reach) <= batch_size:
        return [(torch.arange(len(reach)), int(reach.max()) + 1)] if len(reach) else []
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
    """Logits at each row's query position, in chunks, under ``torch.inference_mode``.

    Right padding needs no attention mask for a causal model: positions up to ``query_pos`` never see
    the pads. Rows are chunked by query position (:func:`query_plan`); without hooks each chunk is cut
    after its last query. ``fwd_hooks`` is a list of ``(name, fn)`` or, for hooks that depend on the rows (e.g. their
    query positions), a callable ``chunk -> list``; every hook is checked to have fired.
    """
    require_eval_mode(model, "query_logits")
    out: list[Tensor | None] = [None]
    dev = _device(model)

    def work(rows: Tensor, width: int) -> None:
        sub = batch.select(rows)
        fwd = fwd_hooks(sub) if callable(fwd_hooks) else fwd_hooks
        toks = sub.tokens if fwd else sub.tokens[:, :width]  # hooks may edit any position of the chunk
        with checked_hooks(model, fwd):
            logits = forward(model, toks.to(dev))
        part = at_query(logits, sub.query_pos).float().cpu()
        if out[0] is None:
            with torch.inference_mode(False):  # an ordinary tensor for the caller
                out[0] = torch.empty((len(batch), part.shape[-1]))
        out[0][rows] = part

    with torch.inference_mode():
        in_plan(query_plan(model, batch.query_pos, batch_size, edits=bool(fwd_hooks)), work, model=model,
                what="query_logits")
    return out[0] if out[0] is not None else torch.empty(0)


@dataclass(frozen=True)
class AnswerScores:
    """Per-row scores of the answers of a :class:`PromptBatch` (see :mod:`tlens_icl.engine.scoring`).

    ``exact_match``: greedy decoding produces the answer or an accepted alternative (whole token sequences).
    ``answer_logprob``: log P(answer tokens | prompt) (the answer itself, not its alternatives).
    ``first_token_top1`` / ``first_token_prob``: argmax / probability of the answer's first token at the
    query position (a one-token alternative also counts for top-1).
    ``n_answer_tokens``: tokens in each answer. ``query_logits``: logits at the query position, if asked.
    """

    exact_match: Float[Tensor, " batch"]
    answer_logprob: Float[Tensor, " batch"]
    first_token_top1: Float[Tensor, " batch"]
    first_token_prob: Float[Tensor, " batch"]
    n_answer_tokens: Float[Tensor, " batch"]
    query_logits: Float[Tensor, "batch d_vocab"] | None = None


def answer_scores(
    model: ModelLike, batch: PromptBatch, *,
    fwd_hooks: Sequence[tuple[str, Any]] | Callable[[PromptBatch], Sequence[tuple[str, Any]]] = (),
    batch_size: int = 32, keep_query_logits: bool = False,
) -> AnswerScores:
    """Whole-answer and first-token scores, from one forward per prompt with its answer appended.

    Rows are right-padded and chunked; logits are read at ``query_pos .. query_pos + len(answer)`` of
    each row (never at the last column). An accepted alternative that agrees with every greedy token
    known so far and is longer than that gets one more teacher-forced forward (few rows, usually none).
    ``fwd_hooks`` (a list, or a callable ``chunk -> list`` for row-dependent hooks) are installed on
    every forward and checked to have fired; chunks passed to a callable are answer-appended batches
    (``query_pos`` unchanged, appended tokens have role ``answer``).
    """
    require_eval_mode(model, "answer_scores")
    answers = [tuple(a) for a in batch.answer_ids]
    n = len(batch)
    logprob, known, q_logits = torch.zeros(n), [[] for _ in range(n)], []
    for sl, total, got, ql in _forced(model, batch, answers, range(n), fwd_hooks, batch_size, keep=True):
        logprob[sl] = total
        for i, g in zip(range(sl.start, sl.stop), got):
            known[i] = g
        q_logits.append(ql)
    query = torch.cat(q_logits)
    matched, pending = zip(*(match_answers(k, acc) for k, acc in zip(known, batch.accepted)))
    matched, pending = list(matched), [list(p) for p in pending]
    while True:  # alternatives that greedy decoding may still produce: teacher-force the next one per row
        todo = [i for i in range(n) if not matched[i] and pending[i]]
        if not todo:
            break
        seqs = [pending[i].pop(0) for i in todo]
        for rows, got in _forced_rows(model, batch, seqs, todo, fwd_hooks, batch_size):
            for i, g in zip(rows, got):
                if len(g) > len(known[i]):
                    known[i] = g
                ok, still = match_answers(known[i], batch.accepted[i])
                matched[i] = ok
                pending[i] = [a for a in pending[i] if a in still]
    first = torch.tensor([a[0] for a in answers])
    return AnswerScores(
        exact_match=torch.tensor([float(m) for m in matched]),
        answer_logprob=logprob,
        first_token_top1=accepted_top1(query, batch.accepted),
        first_token_prob=prob(query, first),
        n_answer_tokens=torch.tensor([float(len(a)) for a in answers]),
        query_logits=query if keep_query_logits else None,
    )


def _forced(model: ModelLike, batch: PromptBatch, answers: Sequence[tuple[int, ...]], rows: Sequence[int],
            fwd_hooks: Any, batch_size: int, keep: bool = False) -> Iterator[tuple[slice, Tensor, list[list[int]], Tensor]]:
    """Teacher-forced forwards of ``rows`` with ``answers`` appended: (slice into rows, log P, known greedy, query logits)."""
    ext = batch.select(list(rows)).with_answers(answers)
    dev = _device(model)
    done: list[tuple[slice, Tensor, list[list[int]], Tensor]] = []

    def work(chunk: Tensor, _: int) -> None:
        sl = slice(int(chunk[0]), int(chunk[-1]) + 1)
        sub = ext.select(sl)
        with checked_hooks(model, fwd_hooks(sub) if callable(fwd_hooks) else fwd_hooks):
            logits = forward(model, sub.tokens.to(dev))
        total, got = teacher_forced(logits, sub.query_pos, answers[sl])
        ql = at_query(logits, sub.query_pos).float().cpu() if keep else torch.empty(0)
        done.append((sl, total, got, ql))

    size = rows_per_forward(model, ext.tokens.shape[1], batch_size, edits=bool(fwd_hooks))
    plan = [(torch.arange(sl.start, sl.stop), 0) for sl in chunks(len(ext), size)]
    with torch.no_grad():
        in_plan(plan, work, model=model, what="answer_scores")
    yield from done


def _forced_rows(model: ModelLike, batch: PromptBatch, answers: Sequence[tuple[int, ...]], rows: Sequence[int],
                 fwd_hooks: Any, batch_size: int) -> Iterator[tuple[list[int], list[list[int]]]]:
    for sl, _, got, _ in _forced(model, batch, answers, rows, fwd_hooks, batch_size):
        yield list(rows[sl]), got


def _device(model: ModelLike) -> torch.device:
    """Where input tokens go (see :func:`tlens_icl.models.adapter.device_of`)."""
    return device_of(model)
