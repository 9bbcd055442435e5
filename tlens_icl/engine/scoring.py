"""Per-example metrics read at each row's query position.

A metric maps ``(logits [batch, d_vocab] at the query position, answer tokens [batch], contrast
tokens [batch] or None)`` to ``[batch]``. Higher is always "more of the clean answer" except ``rank``
(0 = top-1).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Float, Int
from torch import Tensor

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

    Ties count in the answer's favour (competition "min" ranking): an answer tied for the top is rank 0.
    """
    target = logits.gather(-1, answers[:, None])
    return (logits > target).sum(-1).float()


def top1(logits: Tensor, answers: Tensor, contrast: Tensor | None = None) -> Tensor:
    """1.0 where the answer token is the argmax."""
    return (logits.argmax(-1) == answers).float()


METRICS: dict[str, Metric] = {"prob": prob, "logprob": logprob, "logit_diff": logit_diff, "rank": rank, "top1": top1}


def get_metric(metric: str | Metric) -> tuple[str, Metric]:
    if callable(metric):
        return getattr(metric, "__name__", "custom"), metric
    if metric not in METRICS:
        raise TlensICLError(f"Unknown metric {metric!r}; choose one of {sorted(METRICS)} or pass a callable.")
    return metric, METRICS[metric]


def accepted_top1(logits: Float[Tensor, "batch d_vocab"], accepted: tuple[tuple[int, ...], ...]) -> Float[Tensor, " batch"]:
    """1.0 where the argmax is the first token of any accepted answer (output or alternative)."""
    pred = logits.argmax(-1).tolist()
    return torch.tensor([float(p in acc) for p, acc in zip(pred, accepted)])
