"""Forward passes over prompt batches: chunked, no-grad, reading logits at the query position, and
scoring whole answers by teacher forcing (:func:`answer_scores`).

Logits only where they are read: with a 150k-260k vocabulary, unembedding every position of every
prompt is a large share of a forward's time and memory. :func:`logit_rows` cuts the forward before the
unembedding (at :func:`logits_input`) to the positions a caller reads, so the
model's own unembedding (bias, final logit softcapping included) runs on those rows alone; the row plan
(:func:`rows_per_forward`) counts logits only there. :func:`logit_cut` proves the cut once per model
against the full forward and falls back to unembedding every position (one warning) where it differs;
``TLENS_ICL_FULL_LOGITS=1`` turns the cut off.

Memory: rows per forward come from the model's memory budget (:func:`~tlens_icl.models.adapter.memory_budget`,
resolved once into its :class:`~tlens_icl.models.adapter.ModelHandle`: on CUDA half the free memory of the
fullest device the model uses, elsewhere :data:`~tlens_icl.models.adapter.DEFAULT_BUDGET`;
``TLENS_ICL_MEMORY_BUDGET`` overrides it) and the rows a remote driver takes per call (:func:`rows_per_forward`,
counting logits only where a forward unembeds). The estimate can be wrong (fragmentation, another process on
the GPU), so every chunk loop of the engine (capture, query logits, answer scores, query interventions,
ablation sweep, activation patching) runs through :func:`in_plan`: a chunk that raises
``torch.OutOfMemoryError`` is retried with half the rows, down to one, and every later chunk keeps the smaller
size; finished chunks are kept, so no work is lost and the result is the one an unbounded run gives (rows are
independent). One warning per model says what happened.
"""

from __future__ import annotations

import gc
import os
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tlens_icl._typing import ModelLike
from tlens_icl.engine import hooks
from tlens_icl.engine.hooks import checked_hooks
from tlens_icl.engine.scoring import (
    accepted_top1,
    answer_positions,
    forced_scores,
    match_answers,
    prob,
)
from tlens_icl.errors import HookNotFiredError, ModelStateError, TlensICLError
from tlens_icl.models.adapter import BUDGET_ENV, ModelHandle, hooks_set_aside, resolved, warn_once
from tlens_icl.prompts.batch import PromptBatch

#: Set to 1 to unembed every position of every forward (the cut is then never used).
FULL_LOGITS_ENV = "TLENS_ICL_FULL_LOGITS"
_CUT: "weakref.WeakKeyDictionary[Any, str | None]" = weakref.WeakKeyDictionary()


def control_tolerance(dtype: torch.dtype, scale: float) -> float:
    """How far two computations of the same logits may differ: rounding only, scaled to the dtype.

    ``scale`` is the largest logit. float32: ``1e-4 (1 + scale)`` (measured errors are ~1e-7 to
    1e-6; a wrong position, mask or skip moves logits by ~1e-2 to 1e1). Half precision rounds every
    layer's output to 8 (bfloat16) or 11 (float16) bits: ``3e-2`` / ``5e-3`` times ``(1 + scale)``
    (SmolLM2 in bfloat16: control error 0, tolerance 1.2; a copy one position off is 4.9 away).
    """
    rel = {torch.bfloat16: 3e-2, torch.float16: 5e-3}.get(dtype, 1e-4)
    return rel * (1.0 + scale)


class FastPathUnsupported(RuntimeError):
    """An exact fast route cannot reproduce this model's forward pass (the caller falls back)."""


def check_control(control: Tensor, base: Tensor, dtype: torch.dtype) -> float:
    err = float((control.float() - base.float()).abs().max()) if control.numel() else 0.0
    tol = control_tolerance(dtype, float(base.float().abs().max()) if base.numel() else 0.0)
    if not err <= tol:
        raise FastPathUnsupported(f"the unpatched control copy differs from the base run by {err:.3g} (> {tol:.3g})")
    return err


@resolved
def logit_cut(model: ModelLike | ModelHandle) -> str | None:
    """The hook where a forward is cut to the positions read before the unembedding, or None (unembed all).

    Proven once per model (cached): a 2-row forward cut at two positions per row (in different orders)
    must give the full forward's logits there within :func:`control_tolerance`; if not, None and one
    warning. The proof's forwards do not run hooks a caller installed (:func:`~tlens_icl.models.adapter.hooks_set_aside`).
    """
    if os.environ.get(FULL_LOGITS_ENV, "").strip() not in ("", "0"):
        return None
    try:
        if model.model in _CUT:
            return _CUT[model.model]
    except TypeError:
        pass
    name = logits_input(model)
    if name is not None:
        why = _cut_differs(model, name)
        if why:  # once per model: the answer is cached below
            warnings.warn(f"tlens_icl: cutting the forward before the unembedding at {name} is not exact for this "
                          f"model ({why}); every position is unembedded (exact, slower).", stacklevel=3)
            name = None
    try:
        _CUT[model.model] = name
    except TypeError:
        pass
    return name


def logits_input(model: ModelHandle) -> str | None:
    """The hook whose output only the unembedding reads (cut it to some positions: logits there only), or None.

    Which one is a model-family fact (:attr:`tlens_icl.models.adapter.Capabilities.logits_input`).
    """
    name = {"unembed_in": hooks.unembed_in()}.get(model.caps.logits_input or "")
    hook_dict = getattr(model, "hook_dict", None)
    return name if name is not None and hook_dict is not None and name in hook_dict else None


def _cut_differs(model: ModelHandle, name: str) -> str:
    """Why the cut at ``name`` does not reproduce the full forward's logits ("" when it does)."""
    vocab = max(int(model.cfg.d_vocab), 1)
    toks = ((torch.arange(12).reshape(2, 6) * 7 + 3) % vocab).to(model.device)
    pos = torch.tensor([[1, 4], [5, 2]])
    try:
        cut = LogitRows(pos, name)
        with torch.inference_mode(), hooks_set_aside(model):  # a local model (a remote one has no cut)
            want = LogitRows(pos, None).read(model(toks))
            with model.hooks(fwd_hooks=cut.hooks):
                got = cut.read(model(toks))  # raises unless the cut fired (the logits' shape)
    except (RuntimeError, ModelStateError, HookNotFiredError, TypeError, ValueError) as e:
        return f"{type(e).__name__}: {str(e)[:80]}"
    err = float((got.float() - want.float()).abs().max())
    tol = control_tolerance(model.dtype, float(want.float().abs().max()))
    return "" if err <= tol else f"the cut logits differ by {err:.3g} (> {tol:.3g})"


@dataclass(frozen=True)
class LogitRows:
    """Logits at ``positions`` of each row of one forward: put :attr:`hooks` on it, :meth:`read` its output.

    ``positions``: ``[batch]`` (one per row; :meth:`read` gives ``[batch, d_vocab]``) or ``[batch, k]``
    (``[batch, k, d_vocab]``). With a cut (``name``) the forward unembeds those positions only; without,
    it unembeds every position and :meth:`read` picks them. Make one with :func:`logit_rows`.
    """

    positions: Int[Tensor, "batch *k"]  # noqa: F821 - a jaxtyping shape, not the expression batch * k
    name: str | None

    @property
    def hooks(self) -> list[tuple[str, Callable[..., Tensor]]]:
        if self.name is None:
            return []
        positions = self.positions

        def cut(act: Tensor, hook: Any) -> Tensor:
            p = positions.to(act.device)
            ar = torch.arange(act.shape[0], device=act.device)
            return act[ar, p][:, None] if p.dim() == 1 else act[ar[:, None], p]

        return [(self.name, cut)]

    def read(self, logits: Float[Tensor, "batch pos d_vocab"]) -> Tensor:
        p = self.positions.to(logits.device)
        if self.name is None:
            ar = torch.arange(logits.shape[0], device=logits.device)
            return logits[ar, p] if p.dim() == 1 else logits[ar[:, None], p]
        k = 1 if p.dim() == 1 else p.shape[1]
        if logits.dim() != 3 or logits.shape[:2] != (p.shape[0], k):
            raise ModelStateError(f"The forward cut at {self.name} returned logits of shape {tuple(logits.shape)}, "
                                  f"not [{p.shape[0]}, {k}, d_vocab]: the cut did not reach the unembedding.")
        return logits[:, 0] if p.dim() == 1 else logits


@resolved
def logit_rows(model: ModelLike | ModelHandle, positions: Int[Tensor, "batch *k"],  # noqa: F821 - a jaxtyping shape
               fwd_hooks: Sequence[tuple[str, Any]] = ()) -> LogitRows:
    """How to read logits at ``positions`` of a forward that also carries ``fwd_hooks`` (cut when exact).

    A caller's hook at the cut or on the logits themselves sees every position: no cut then.
    """
    name = logit_cut(model)
    if name is not None and any(n in (name, hooks.unembed_out()) for n, _ in fwd_hooks):
        name = None
    return LogitRows(positions, name)


@resolved
def read_logits(model: ModelLike | ModelHandle, tokens: Int[Tensor, "batch pos"], at: LogitRows | None,
                fwd_hooks: Sequence[tuple[str, Any]] = ()) -> Any:
    """One forward of ``tokens`` with ``fwd_hooks`` (checked to have fired), its logits read as ``at`` says (None:
    the forward's output as it is). The one checked forward of the engine's row plans."""
    with checked_hooks(model, list(fwd_hooks) + (at.hooks if at is not None else [])):
        logits = model.forward(tokens)
    return at.read(logits) if at is not None else logits


@resolved
def logit_bytes(model: ModelLike | ModelHandle) -> int:
    """Bytes of one position's logits (in the model's dtype, plus a float32 copy and its softmax)."""
    return _logit_bytes(model.cfg, torch.finfo(model.dtype).bits // 8)


@resolved
def bytes_per_token(model: ModelLike | ModelHandle, keys: int, *, logits: bool = True) -> int:
    """Rough activation bytes of one token in a forward attending to ``keys`` positions (``logits``: with its
    logits, incl. a float32 copy)."""
    elem = torch.finfo(model.dtype).bits // 8
    return _activation_bytes(model.cfg, elem, keys) + (_logit_bytes(model.cfg, elem) if logits else 0)


def _logit_bytes(cfg: Any, elem: int) -> int:
    return (elem + 8) * cfg.d_vocab


def _activation_bytes(cfg: Any, elem: int, keys: int) -> int:
    d_mlp = getattr(cfg, "d_mlp", None) or 4 * cfg.d_model
    return elem * (2 * d_mlp + 12 * cfg.d_model + 3 * cfg.n_heads * keys)


@resolved
def rows_per_forward(model: ModelLike | ModelHandle, seq: int, batch_size: int, budget: int | None = None, *,
                     edits: bool = False, logit_positions: int | None = None) -> int:
    """``batch_size`` capped so one forward of ``seq`` tokens per row fits the memory budget
    (default the budget of the model's :class:`~tlens_icl.models.adapter.ModelHandle`) and the rows one call of the model's
    family takes (a remote driver: often one prompt; ``edits``: the forward carries interventions).

    ``logit_positions``: how many positions per row are unembedded (None: all ``seq``; 0: none, a forward
    stopped before the unembedding). Counted only where :func:`logit_cut` can cut the forward.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    k = seq
    if logit_positions is not None and (logit_positions == 0 or logit_cut(model) is not None):
        k = min(seq, logit_positions)
    elem = torch.finfo(model.dtype).bits // 8
    row = _activation_bytes(model.cfg, elem, seq) * seq + _logit_bytes(model.cfg, elem) * k
    fit = (budget or model.budget) // max(row, 1)
    limit = model.edit_rows if edits else model.call_rows  # a remote driver's rows per call (None: any)
    return max(1, min(batch_size if limit is None else limit, fit))


@resolved
def query_plan(model: ModelLike | ModelHandle, query_pos: Int[Tensor, " batch"], batch_size: int,
               budget: int | None = None, *, edits: bool = False) -> list[tuple[Int[Tensor, " rows"], int]]:
    """Row chunks for reading the query position: sorted by it, cut after it, memory-capped (logits counted
    at the query only: forwards on this plan read them through :func:`logit_rows`).

    The one plan of :func:`query_logits` and of the engine's base runs, so the same prompts give
    bit-identical unpatched logits through either.
    """
    width = int(query_pos.max()) + 1 if len(query_pos) else 1
    return length_chunks(query_pos, rows_per_forward(model, width, batch_size, budget, edits=edits, logit_positions=1))


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


@resolved
def query_logits(
    model: ModelLike | ModelHandle, batch: PromptBatch, *,
    fwd_hooks: Sequence[tuple[str, Any]] | Callable[[PromptBatch], Sequence[tuple[str, Any]]] = (),
    batch_size: int = 32,
) -> Float[Tensor, "batch d_vocab"]:
    """Logits at each row's query position, in chunks, under ``torch.inference_mode``.

    Right padding needs no attention mask for a causal model: positions up to ``query_pos`` never see
    the pads. Rows are chunked by query position (:func:`query_plan`); without hooks each chunk is cut
    after its last query. ``fwd_hooks`` is a list of ``(name, fn)`` or, for hooks that depend on the rows (e.g. their
    query positions), a callable ``chunk -> list``; every hook is checked to have fired.
    """
    out: list[Tensor | None] = [None]
    dev = model.device

    def work(rows: Tensor, width: int) -> None:
        sub = batch.select(rows)
        fwd = list(fwd_hooks(sub) if callable(fwd_hooks) else fwd_hooks)
        toks = sub.tokens if fwd else sub.tokens[:, :width]  # hooks may edit any position of the chunk
        part = read_logits(model, toks.to(dev), logit_rows(model, sub.query_pos, fwd), fwd).float().cpu()
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


@resolved
def answer_scores(
    model: ModelLike | ModelHandle, batch: PromptBatch, *,
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


def _forced(model: ModelHandle, batch: PromptBatch, answers: Sequence[tuple[int, ...]], rows: Sequence[int],
            fwd_hooks: Any, batch_size: int, keep: bool = False) -> Iterator[tuple[slice, Tensor, list[list[int]], Tensor]]:
    """Teacher-forced forwards of ``rows`` with ``answers`` appended: (slice into rows, log P, known greedy, query logits)."""
    ext = batch.select(list(rows)).with_answers(answers)
    dev = model.device
    done: list[tuple[slice, Tensor, list[list[int]], Tensor]] = []

    def work(chunk: Tensor, _: int) -> None:
        sl = slice(int(chunk[0]), int(chunk[-1]) + 1)
        sub = ext.select(sl)
        fwd = list(fwd_hooks(sub) if callable(fwd_hooks) else fwd_hooks)
        # the answer positions query_pos .. query_pos + len(answer) (the last predicts the token after it)
        at = logit_rows(model, answer_positions(sub.query_pos, [len(a) + 1 for a in answers[sl]])[1], fwd)
        picked = read_logits(model, sub.tokens.to(dev), at, fwd)
        total, got = forced_scores(picked, answers[sl])
        ql = picked[:, 0].float().cpu() if keep else torch.empty(0)  # position query_pos + 0
        done.append((sl, total, got, ql))

    longest = max((len(a) for a in answers), default=0) + 1
    size = rows_per_forward(model, ext.tokens.shape[1], batch_size, edits=bool(fwd_hooks), logit_positions=longest)
    plan = [(torch.arange(sl.start, sl.stop), 0) for sl in chunks(len(ext), size)]
    with torch.no_grad():
        in_plan(plan, work, model=model, what="answer_scores")
    yield from done


def _forced_rows(model: ModelHandle, batch: PromptBatch, answers: Sequence[tuple[int, ...]], rows: Sequence[int],
                 fwd_hooks: Any, batch_size: int) -> Iterator[tuple[list[int], list[list[int]]]]:
    for sl, _, got, _ in _forced(model, batch, answers, rows, fwd_hooks, batch_size):
        yield list(rows[sl]), got


# ---- back-off on out-of-memory ----------------------------------------------------------------------------
def is_oom(error: BaseException) -> bool:
    """True for an out-of-memory error of any torch backend."""
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower())


def _release() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def in_plan(plan: Sequence[tuple[Tensor, int]], work: Callable[[Tensor, int], None], *, model: Any = None,
            what: str = "forward") -> int:
    """Call ``work(rows, width)`` on each chunk of a row plan (``(row indices, width)``, as
    :func:`tlens_icl.engine.runs.length_chunks` makes), backing off on OOM.

    A chunk that runs out of memory is run again as its first half and the rest, down to one row; every
    later chunk is cut to the smaller size too (at its own width: exact, since rows are independent and
    each chunk is already cut after its longest row). ``work`` must write its outputs only once it
    succeeds. Returns the chunk size that was used last.
    """
    queue = deque((torch.as_tensor(rows), int(width)) for rows, width in plan)
    size = max((len(rows) for rows, _ in queue), default=1)
    if size < 1:
        raise TlensICLError(f"batch size must be >= 1, got {size}.")
    while queue:
        rows, width = queue.popleft()
        if len(rows) > size:
            queue.appendleft((rows[size:], width))
            rows = rows[:size]
        try:
            work(rows, width)
        except RuntimeError as e:
            if not is_oom(e) or len(rows) == 1:
                raise
            _release()
            smaller = max(1, len(rows) // 2)
            warn_once(model, f"oom:{what}", f"tlens_icl: out of memory in {what} with {len(rows)} rows per forward; "
                      f"continuing with {smaller} (finished rows kept). Pass a smaller batch_size or set "
                      f"{BUDGET_ENV} to avoid the retries.", stacklevel=4)
            size = smaller
            queue.appendleft((rows, width))
    return size


def in_chunks(n: int, size: int, work: Callable[[slice], None], *, model: Any = None, what: str = "forward") -> int:
    """:func:`in_plan` over consecutive chunks of ``range(n)`` of at most ``size`` rows; ``work`` takes a slice."""
    if size < 1:
        raise TlensICLError(f"batch size must be >= 1, got {size}.")
    plan = [(torch.arange(start, min(n, start + size)), 0) for start in range(0, n, size)]
    if not plan:
        return size
    return in_plan(plan, lambda rows, _: work(slice(int(rows[0]), int(rows[-1]) + 1)), model=model, what=what)
