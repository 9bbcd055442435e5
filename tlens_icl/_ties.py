"""Discrete decisions taken from floats, the same on every machine: near-ties are broken by a fixed rule.

Float results differ in their last bits between CPUs (vector widths, reduction orders) and between
routes that compute the same quantity (a KV-reused forward vs a full one, a remote driver vs the local
model). A decision read off such values - the nearest neighbours of a point, the top-k heads, the best
layer, whether the answer is the argmax - must not flip on that noise. Every such decision goes through
this module:

* values closer than a tolerance are **tied**; the tolerance is relative to the scale of the values
  compared (``RTOL`` x the largest magnitude, or x the largest distance), far above float32 rounding
  (~1e-7 relative) and far below any difference that means something;
* in a ranking, consecutive sorted values whose gap is within the tolerance form one tied group
  (chained: exact ties plus rounding noise always stay together), and a tied group is ordered by a
  fixed rule - the candidates' index (lower layer, then lower head; lower token id), or a fixed
  pseudo-random order of the candidates where index order would favour one class (kNN neighbours);
* an argmax is the first index among the candidates within the tolerance of the maximum.

A decision can still change where a gap sits right at the tolerance, which float noise hits with
probability ~noise/tolerance instead of at every exact tie.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

#: Values within RTOL x (the largest magnitude compared) of each other are tied.
RTOL = 1e-5


def tolerance(values: Tensor | np.ndarray, rtol: float = RTOL) -> float:
    """``rtol`` x the largest finite magnitude in ``values`` (0.0 when there is none)."""
    v = values.detach().double().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values, dtype=np.float64)
    v = np.abs(v[np.isfinite(v)])
    return float(rtol * v.max()) if v.size else 0.0


def tie_groups(sorted_values: np.ndarray, tol: float) -> np.ndarray:
    """Group ids along the last axis of already sorted values: a new group starts where the gap exceeds ``tol``."""
    gaps = np.abs(np.diff(sorted_values, axis=-1))
    starts = np.concatenate([np.zeros(sorted_values.shape[:-1] + (1,), dtype=np.int64),
                             (gaps > tol).astype(np.int64)], axis=-1)
    return np.cumsum(starts, axis=-1)


def ranked(values: Tensor, *, descending: bool = True, rtol: float = RTOL, tol: float | None = None) -> Tensor:
    """Indices of the finite entries of a 1-D ``values``, best first; near-ties (:func:`tie_groups`) in index order.

    NaN entries are left out (not measured). ``tol`` overrides ``rtol`` x the largest magnitude.

    >>> import torch
    >>> from tlens_icl._ties import ranked
    >>> ranked(torch.tensor([0.5, 2.0, 2.000001, float("nan"), 1.0])).tolist()   # 1 and 2 tie: index order
    [1, 2, 4, 0]
    >>> ranked(torch.tensor([0.5, 2.0, 2.000001, float("nan"), 1.0]), descending=False).tolist()
    [0, 4, 1, 2]
    """
    flat = values.detach().double().cpu().flatten()
    ok = (~flat.isnan()).nonzero().flatten().numpy()
    v = flat.numpy()[ok]
    if not len(v):
        return torch.zeros(0, dtype=torch.long)
    t = tolerance(v, rtol) if tol is None else tol
    key = -v if descending else v
    order = np.argsort(key, kind="stable")
    groups = np.empty_like(order)
    groups[order] = tie_groups(key[order], t)
    final = np.lexsort((ok, groups))  # by group, then by index
    return torch.from_numpy(ok[final].copy()).long()


def argbest(values: Tensor, dim: int = -1, *, largest: bool = True, rtol: float = RTOL) -> Tensor:
    """Argmax (``largest=False``: argmin) along ``dim``: the first index within the tolerance of the best.

    The tolerance is ``rtol`` x the largest finite magnitude of each slice; NaN is never chosen (an all-NaN
    slice gives index 0).

    >>> import torch
    >>> from tlens_icl._ties import argbest
    >>> scores = torch.tensor([[1.0, 3.0, 3.000001], [float("nan"), 0.0, -2.0]])
    >>> scores.argmax(-1).tolist(), argbest(scores).tolist()   # neither rounding noise nor NaN decides
    ([2, 0], [1, 1])
    >>> argbest(scores, largest=False).tolist()
    [0, 2]
    """
    v = values.detach()
    v = v.double() if v.dtype == torch.float64 else v.float()  # logits of a big vocabulary: no float64 copy
    v = v if largest else -v
    v = v.movedim(dim, -1)
    finite = v.isfinite() | (v == float("inf"))
    filled = torch.where(finite, v, torch.full_like(v, -float("inf")))
    best = filled.max(-1, keepdim=True).values
    scale = torch.where(v.isfinite(), v.abs(), torch.zeros_like(v)).max(-1, keepdim=True).values
    near = filled >= best - rtol * scale
    return near.to(torch.uint8).argmax(-1)


def argbest_lex(*keys: Tensor, rtol: float = RTOL) -> int:
    """The index that is best by ``keys[0]``, near-ties (within its tolerance) decided by ``keys[1]``, and so on;
    remaining ties go to the lowest index. Every key is a 1-D tensor over the same candidates; higher is better.

    >>> import torch
    >>> from tlens_icl._ties import argbest_lex
    >>> accuracy = torch.tensor([0.9, 1.0, 1.0])
    >>> margin = torch.tensor([5.0, 0.2, 0.7])
    >>> argbest_lex(accuracy, margin)   # candidates 1 and 2 tie on accuracy; 2 has the larger margin
    2
    """
    alive = torch.ones(len(keys[0]), dtype=torch.bool)
    for key in keys:
        v = key.detach().double().cpu()
        v = torch.where(alive & ~v.isnan(), v, torch.full_like(v, -float("inf")))
        best = float(v.max())
        if best == -float("inf"):
            break
        alive &= v >= best - tolerance(v, rtol)
    return int(alive.to(torch.uint8).argmax())


def neighbour_order(dist: np.ndarray, tie_rank: np.ndarray, *, rtol: float = RTOL) -> np.ndarray:
    """Each row's other points, nearest first: ``[n, n - 1]`` column indices of a square distance matrix.

    A point is never its own neighbour. Distances within ``rtol`` x the largest distance of the matrix are
    tied (chained along each sorted row) and ordered by ``tie_rank`` (one integer per point, a fixed rule).
    """
    n = dist.shape[0]
    d = np.array(dist, dtype=np.float64)
    finite = d[np.isfinite(d)]
    tol = rtol * float(np.abs(finite).max()) if finite.size else 0.0
    np.fill_diagonal(d, np.inf)
    order = np.argsort(d, axis=1, kind="stable")[:, : n - 1]
    srt = np.take_along_axis(d, order, axis=1)
    groups = tie_groups(srt, tol)
    final = np.lexsort((tie_rank[order], groups), axis=-1)
    return np.take_along_axis(order, final, axis=1)


__all__ = ["RTOL", "argbest", "argbest_lex", "neighbour_order", "ranked", "tie_groups", "tolerance"]
