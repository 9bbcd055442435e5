"""Shared statistics for results: binomial confidence intervals."""

from __future__ import annotations

import torch
from torch import Tensor


def clopper_pearson(successes: Tensor, n: Tensor | int, confidence: float = 0.95) -> tuple[Tensor, Tensor]:
    """Exact (Clopper-Pearson) interval of a binomial proportion, elementwise; equals scipy's
    ``binomtest(k, n).proportion_ci(confidence, method="exact")``.

    >>> import torch
    >>> from tlens_icl.results.stats import clopper_pearson
    >>> lo, hi = clopper_pearson(torch.tensor([0.0, 5.0, 10.0]), 10)   # 0, 5 and 10 right out of 10
    >>> [round(x, 3) for x in lo.tolist()], [round(x, 3) for x in hi.tolist()]
    ([0.0, 0.187, 0.692], [0.308, 0.813, 1.0])
    """
    from scipy.stats import beta

    k = successes.double().round()
    n_t = torch.as_tensor(n, dtype=torch.float64).expand_as(k)
    alpha = (1.0 - confidence) / 2
    lo = torch.from_numpy(beta.ppf(alpha, k.numpy(), (n_t - k + 1).numpy())).nan_to_num(0.0)
    hi = torch.from_numpy(beta.ppf(1 - alpha, (k + 1).numpy(), (n_t - k).numpy())).nan_to_num(1.0)
    lo = torch.where(k == 0, torch.zeros_like(lo), lo)
    hi = torch.where(k == n_t, torch.ones_like(hi), hi)
    return lo.float(), hi.float()


__all__ = ["clopper_pearson"]
