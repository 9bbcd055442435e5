"""Causal vs representational heads (Opiełka et al., "Causality != Invariance", arXiv 2602.22424).

Two ``[layer, head]`` score maps - typically the average indirect effect of each head
(``indirect_effect(...).mean()``, causal) and its concept RSA (``rsa(acts, site="head_out").head_scores()``,
representational) - are compared by Spearman's rank correlation over all heads (scipy) and by the
overlap of their top-k head sets for several k, against the overlap expected by chance for two random
k-sets (k^2 / n_heads_total). Heads are ranked by the signed score (highest first): a positive AIE
restores the answer, a positive RSA matches the hypothesis. Opiełka et al. report near-zero top-k
overlap (FV heads != concept heads) in large models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from tlens_icl._ties import ranked
from tlens_icl._typing import Head
from tlens_icl._validate import checked
from tlens_icl.errors import TlensICLError
from tlens_icl.results.base import Result, run_info


def _as_map(scores: Any, name: str) -> Tensor:
    if hasattr(scores, "mean") and not isinstance(scores, Tensor):
        scores = scores.mean()  # e.g. an IndirectEffectResult -> AIE [layer, head]
    if not isinstance(scores, Tensor) or scores.dim() != 2:
        raise TlensICLError(f"{name} must be a [layer, head] tensor (or a result whose .mean() is one).")
    if not torch.isfinite(scores).all():
        raise TlensICLError(f"{name} contains NaN or inf.")
    return scores.detach().float().cpu()


def top_heads(scores: Float[Tensor, "layer head"], k: int) -> list[Head]:
    """The ``k`` heads with the highest scores (ties within float tolerance: lower layer, then lower head first)."""
    order = ranked(scores)[:k]
    n_heads = scores.shape[1]
    return [Head(int(i) // n_heads, int(i) % n_heads) for i in order]


@dataclass(frozen=True)
class HeadComparisonResult(Result):
    """Rank agreement between a causal and a representational ``[layer, head]`` map.

    ``overlap[j]``: number of heads in both top-``ks[j]`` sets; ``expected[j]``: its chance value.
    ``spearman``/``p``: rank correlation over all heads (higher = the two rankings agree).
    """

    causal: Float[Tensor, "layer head"]
    representational: Float[Tensor, "layer head"]
    ks: tuple[int, ...]
    overlap: tuple[int, ...]
    expected: tuple[float, ...]
    spearman: float
    p: float
    causal_name: str
    representational_name: str
    info: dict[str, Any]

    title = "Causal vs representational heads"

    def to_dataframe(self) -> Any:
        import pandas as pd

        return pd.DataFrame([
            {"k": k, "overlap": o, "expected": e, "causal_top": " ".join(map(str, top_heads(self.causal, k))),
             "representational_top": " ".join(map(str, top_heads(self.representational, k)))}
            for k, o, e in zip(self.ks, self.overlap, self.expected)
        ])

    def summary(self) -> str:
        ov = ", ".join(f"top-{k}: {o} (chance {e:.2f})" for k, o, e in zip(self.ks, self.overlap, self.expected))
        return (f"{self.title}: Spearman rho({self.causal_name}, {self.representational_name}) = {self.spearman:.3f} "
                f"(p = {self.p:.3g}, {self.causal.numel()} heads); overlap {ov}")

    def plot(self, ax: Any = None) -> Any:
        """Scatter of the two scores, one point per head; the top heads of either map are labelled."""
        from tlens_icl.viz.plots import scatter_labelled

        k = self.ks[min(1, len(self.ks) - 1)]
        n_heads = self.causal.shape[1]
        hl = sorted({h.layer * n_heads + h.head for h in set(top_heads(self.causal, k)) | set(top_heads(self.representational, k))})
        labels = [f"L{i // n_heads}H{i % n_heads}" for i in range(self.causal.numel())]
        return scatter_labelled(self.causal.flatten(), self.representational.flatten(), labels, hl, ax=ax,
                                xlabel=self.causal_name, ylabel=self.representational_name,
                                highlight_label=f"top {k} by either score",
                                title=f"{self.causal_name} vs {self.representational_name} per head",
                                subtitle=self._subtitle(f"Spearman rho {self.spearman:.2f} (p = {self.p:.2g}"
                                                        f"{'' if self.p < 0.05 else ': no detectable relation'}); top-{k} "
                                                        f"overlap {self.overlap[self.ks.index(k)]} "
                                                        f"(chance {self.expected[self.ks.index(k)]:.2f})"))


def _info(*sources: Any) -> dict[str, Any]:
    """Provenance, with the model of the first source result that records one (for titles)."""
    info = run_info(None)
    model = next((s.info.get("model") for s in sources if isinstance(getattr(s, "info", None), dict)), None)
    return {**info, "model": model} if model else info


@checked
def compare_heads(
    causal: Any, representational: Any, *, ks: Sequence[int] = (1, 3, 5, 10), causal_name: str = "AIE",
    representational_name: str = "RSA",
) -> HeadComparisonResult:
    """Compare two per-head score maps (e.g. AIE and concept RSA): Spearman rho and top-k overlap.

    Args:
        causal, representational: ``[layer, head]`` tensors, or results whose ``.mean()`` is one
            (an ``IndirectEffectResult``). Both must have the same shape.
        ks: the top-k sizes (each at most the number of heads).
    """
    from scipy.stats import spearmanr

    a, b = _as_map(causal, "causal"), _as_map(representational, "representational")
    if a.shape != b.shape:
        raise TlensICLError(f"The maps differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}.")
    n = a.numel()
    ks = tuple(int(k) for k in ks)
    if not ks or any(not 1 <= k <= n for k in ks):
        raise TlensICLError(f"Every k must be in [1, {n}], got {ks}.")
    overlap = tuple(len(set(top_heads(a, k)) & set(top_heads(b, k))) for k in ks)
    res = spearmanr(a.flatten().numpy(), b.flatten().numpy())
    return HeadComparisonResult(
        causal=a, representational=b, ks=ks, overlap=overlap, expected=tuple(k * k / n for k in ks),
        spearman=float(res.statistic), p=float(res.pvalue), causal_name=causal_name,
        representational_name=representational_name, info=_info(causal, representational),
    )


__all__ = ["HeadComparisonResult", "compare_heads", "top_heads"]
