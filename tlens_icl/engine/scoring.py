"""Per-example metrics: first-token metrics at the query position, and whole-answer metrics.

A first-token metric maps ``(logits [batch, d_vocab] at the query position, answer tokens [batch],
contrast tokens [batch] or None)`` to ``[batch]``. Higher is always "more of the clean answer" except
``rank`` (0 = top-1). First-token metrics are what some methods define (Todd et al.'s indirect effect
is a change in P(first answer token)); they are wrong for answers of several tokens under a BPE
tokenizer (every number ``' 42'`` starts with the token ``' '``).

Whole-answer metrics (teacher forcing: the answer's tokens appended to the prompt, one forward):

* ``answer_logprob`` - log P(answer) = the sum over answer tokens of log P(token | prompt, previous
  answer tokens).
* ``exact_match`` - greedy decoding would produce the answer: the argmax at every answer position is
  the next answer token. Accepted alternatives count only on their full token sequence.

:func:`greedy_knowledge` and :func:`match_answers` implement exact match over several accepted answers
with as few extra forwards as possible (only an alternative that agrees with everything greedy decoding
is known to produce, and is longer than that, needs its own forward).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tlens_icl._ties import RTOL, argbest
from tlens_icl.errors import TlensICLError

Metric = Callable[[Float[Tensor, "batch d_vocab"], Int[Tensor, " batch"], "Int[Tensor, ' batch'] | None"], Float[Tensor, " batch"]]


def at_query(logits: Float[Tensor, "batch pos d_vocab"], query_pos: Int[Tensor, " batch"]) -> Float[Tensor, "batch d_vocab"]:
    """Logits at each row's query position."""
    return logits[torch.arange(logits.shape[0], device=logits.device), query_pos.to(logits.device)]


def prob(logits: Tensor, answers: Tensor, contrast: Tensor | None = None) -> Tensor:
    """P(answer first token), the quantity of Todd et al.'s indirect effect."""
    return logits.float().softmax(-1).gather(-1, answers[:, None]).squeeze(-1)


def logprob(logits: Tensor, answers: Tensor, contrast: Tensor | None = None) -> Tensor:
    return logits.float().log_softmax(-1).gather(-1, answers[:, None]).squeeze(-1)


def logit_diff(logits: Tensor, answers: Tensor, contrast: Tensor | None = None) -> Tensor:
    """logit(answer) - logit(contrast); needs contrast tokens."""
    if contrast is None:
        raise TlensICLError("metric='logit_diff' needs contrast tokens (e.g. corruption='corrupted_query').")
    return (logits.gather(-1, answers[:, None]) - logits.gather(-1, contrast[:, None])).squeeze(-1).float()


def rank(logits: Tensor, answers: Tensor, contrast: Tensor | None = None) -> Tensor:
    """Rank of the answer token (0 = most likely): the number of tokens with a strictly larger logit.

    Ties count in the answer's favour (competition "min" ranking): an answer tied for the top is rank 0; a
    logit within float tolerance of the answer's (``tlens_icl._ties``) is a tie.
    """
    target = logits.float().gather(-1, answers[:, None])
    return (logits.float() > target + _row_tolerance(logits)).sum(-1).float()


def _row_tolerance(logits: Tensor) -> Tensor:
    """The tie tolerance of each row of logits: ``RTOL`` x its largest finite magnitude, ``[batch, 1]``."""
    v = logits.float()
    return RTOL * torch.where(v.isfinite(), v.abs(), torch.zeros_like(v)).amax(-1, keepdim=True)


def top1(logits: Tensor, answers: Tensor, contrast: Tensor | None = None) -> Tensor:
    """1.0 where the answer token is the argmax (near-ties within float tolerance: the lowest token id)."""
    return (argbest(logits.float()) == answers.to(logits.device)).float()


METRICS: dict[str, Metric] = {"prob": prob, "logprob": logprob, "logit_diff": logit_diff, "rank": rank, "top1": top1}


def get_metric(metric: str | Metric) -> tuple[str, Metric]:
    """``(name, function)``: a name of :data:`METRICS`, or ``"custom:<function name>"`` for a callable (results record
    the name, and a loaded result's metric must be one of these)."""
    if callable(metric):
        return f"custom:{getattr(metric, '__name__', 'metric')}", metric
    if metric not in METRICS:
        raise TlensICLError(f"Unknown metric {metric!r}; choose one of {sorted(METRICS)} or pass a callable.")
    return metric, METRICS[metric]


def accepted_top1(
    logits: Float[Tensor, "batch d_vocab"], accepted: Sequence[Sequence[Sequence[int]]]
) -> Float[Tensor, " batch"]:
    """First-token top-1: 1.0 where the argmax is the first token of the answer (``accepted[i][0]``) or is
    a one-token alternative. A longer alternative never counts by its first token (that is not a match:
    use :func:`match_answers` for whole answers). Near-ties within float tolerance go to the lowest token id."""
    pred = argbest(logits.float()).tolist()
    hits = []
    for p, acc in zip(pred, accepted):
        ok = {acc[0][0]} | {a[0] for a in acc[1:] if len(a) == 1}
        hits.append(float(p in ok))
    return torch.tensor(hits)


# ---- whole answers (teacher forcing) ---------------------------------------------------------------
def answer_positions(query_pos: Int[Tensor, " batch"], lengths: Sequence[int]) -> tuple[Tensor, Tensor, Tensor]:
    """``(rows, positions, valid)`` ``[batch, max_len]``: position ``query_pos + k`` predicts answer token ``k``."""
    width = max(lengths)
    k = torch.arange(width)
    valid = k[None, :] < torch.tensor(list(lengths))[:, None]
    pos = (query_pos.cpu()[:, None] + k[None, :]) * valid
    rows = torch.arange(len(lengths))[:, None].expand_as(pos)
    return rows, pos, valid


def teacher_forced(
    logits: Float[Tensor, "batch pos d_vocab"], query_pos: Int[Tensor, " batch"], answers: Sequence[Sequence[int]],
) -> tuple[Float[Tensor, " batch"], list[list[int]]]:
    """From a forward on prompt + answer (right-padded): log P(answer) per row, and the greedy tokens
    known from it (see :func:`greedy_knowledge`). Reads only positions ``query_pos .. query_pos + len``.
    """
    rows, pos, _ = answer_positions(query_pos, [len(a) + 1 for a in answers])  # +1: the token after the answer
    dev = logits.device
    return forced_scores(logits[rows.to(dev), pos.to(dev)], answers)


def forced_scores(
    picked: Float[Tensor, "batch answer_pos d_vocab"], answers: Sequence[Sequence[int]],
) -> tuple[Float[Tensor, " batch"], list[list[int]]]:
    """:func:`teacher_forced` from the logits already read at :func:`answer_positions` (``len(answer) + 1``
    per row; entries past a row's length are ignored)."""
    lengths = [len(a) for a in answers]
    width = max(lengths) + 1
    valid = torch.arange(width)[None, :] <= torch.tensor(lengths)[:, None]
    dev = picked.device
    picked = picked[:, :width].float()
    logp = picked.log_softmax(-1)
    target = torch.zeros(valid.shape, dtype=torch.long)
    for i, a in enumerate(answers):
        target[i, : len(a)] = torch.tensor(a)
    tok_lp = logp.gather(-1, target.to(dev)[..., None])[..., 0].cpu()
    answer_valid = valid.clone()
    answer_valid[torch.arange(len(lengths)), torch.tensor(lengths)] = False
    total = (tok_lp * answer_valid).sum(-1)
    argmax = argbest(picked).cpu().tolist()  # greedy tokens; near-ties within float tolerance: the lowest id
    return total, [greedy_knowledge(g[: n + 1], a) for g, a, n in zip(argmax, answers, lengths)]


def greedy_knowledge(argmax: Sequence[int], forced: Sequence[int]) -> list[int]:
    """The greedy continuation a teacher-forced forward proves: ``argmax[k]`` is the greedy token ``k``
    as long as every earlier forced token was the greedy one. ``argmax`` has ``len(forced) + 1`` entries
    (the last predicts the token after the answer)."""
    known = []
    for k, g in enumerate(argmax):
        known.append(int(g))
        if k >= len(forced) or g != forced[k]:
            break
    return known


def match_answers(known: Sequence[int], accepted: Sequence[Sequence[int]]) -> tuple[bool, list[tuple[int, ...]]]:
    """``(matched, pending)``: whether greedy decoding (known prefix ``known``) produces an accepted answer,
    and the accepted answers that agree with ``known`` but are longer (each needs a forward to decide)."""
    matched, pending = False, []
    for a in accepted:
        a = tuple(a)
        if len(a) <= len(known) and list(a) == list(known[: len(a)]):
            matched = True
        elif len(a) > len(known) and list(a[: len(known)]) == list(known):
            pending.append(a)
    return matched, pending
