"""Representational similarity analysis with hypothesis matrices (Yousefi et al. 2023; Opiełka et al. 2026).

For each shot count and unit (a layer, or a head for head sites), the representational dissimilarity
matrix (RDM) of the prompts is ``scipy.spatial.distance.pdist`` of their vectors (cosine distance by
default; cosine and Euclidean RDMs are invariant to orthogonal rotations of the features). A hypothesis
matrix says which prompts *should* be similar: 0 for a pair that shares a label (same task, same
format, ...), 1 otherwise, or any user dissimilarity matrix. The RSA score is Spearman's rho between
the lower triangles (diagonal excluded) of the RDM and the hypothesis; higher = the representation
groups prompts as the hypothesis does (1 = same rank order of dissimilarities).

p-values come from a Mantel permutation test: the prompts of the hypothesis are relabelled at random
(rows and columns permuted together, which keeps the dependence between cells of a distance matrix
that an ordinary Spearman p-value ignores); p = (1 + #{rho_perm >= rho}) / (1 + n_permutations),
one-sided. Comparing 0 shots with k shots gives the before/after-ICL contrast of Yousefi et al.;
per-head scores of a concept hypothesis are Opiełka et al.'s Concept-RSA.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from tlens_icl._validate import checked
from tlens_icl.analyses.representations.activations import ActivationSet
from tlens_icl.errors import TlensICLError
from tlens_icl.results.base import Result

RDMMetric = Literal["cosine", "euclidean", "correlation"]
HypothesisSpec = Any  # str (ActivationSet label), one label per row, or an [example, example] dissimilarity tensor


def rdm(x: Float[Tensor, "n d"], *, metric: RDMMetric = "cosine") -> Float[Tensor, "n n"]:
    """Representational dissimilarity matrix (symmetric, zero diagonal) of the rows of ``x``."""
    from scipy.spatial.distance import pdist, squareform

    if metric not in ("cosine", "euclidean", "correlation"):
        raise TlensICLError(f"metric must be 'cosine', 'euclidean' or 'correlation', got {metric!r}.")
    return torch.from_numpy(squareform(pdist(x.double().numpy(), metric=metric))).float()


def hypothesis_rdm(labels: Sequence[Any]) -> Float[Tensor, "n n"]:
    """Hypothesis dissimilarity matrix: 0 where two rows share a label, 1 otherwise."""
    lookup: dict[str, int] = {}
    codes = torch.tensor([lookup.setdefault(str(v), len(lookup)) for v in labels])
    return (codes[:, None] != codes[None, :]).float()


def rsa_score(a: Float[Tensor, "n n"], b: Float[Tensor, "n n"]) -> float:
    """Spearman's rho between the lower triangles (diagonal excluded) of two dissimilarity matrices."""
    from scipy.stats import spearmanr

    if a.shape != b.shape or a.shape[0] != a.shape[1] or a.shape[0] < 3:
        raise TlensICLError(f"rsa_score needs two square matrices of the same size >= 3, got {tuple(a.shape)}, {tuple(b.shape)}.")
    i, j = np.tril_indices(a.shape[0], -1)
    return float(spearmanr(a.numpy()[i, j], b.numpy()[i, j]).statistic)


def _standardized_ranks(v: np.ndarray) -> np.ndarray | None:
    """Ranks (average ties) centred and scaled so that a dot product / len is Pearson's r of the ranks."""
    from scipy.stats import rankdata

    r = rankdata(v, axis=-1)
    r = r - r.mean(-1, keepdims=True)
    sd = r.std(-1, keepdims=True)
    if np.any(sd == 0):
        return None
    return r / sd


def _mantel(model_ranks: np.ndarray, hyp: np.ndarray, n_permutations: int, rng: np.random.Generator,
            chunk: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Spearman rho of each unit's RDM (standardized ranks ``[unit, M]``) with ``hyp`` ``[n, n]``, and Mantel p."""
    from scipy.stats import rankdata

    n = hyp.shape[0]
    i, j = np.triu_indices(n, 1)  # pdist's pair order (the same cells as the lower triangle)
    ranks = np.zeros((n, n))
    ranks[i, j] = rankdata(hyp[i, j])  # ranks of a permuted hypothesis are the permuted ranks
    ranks = ranks + ranks.T
    mu, sd = ranks[i, j].mean(), ranks[i, j].std()
    if sd == 0:
        nan = np.full(model_ranks.shape[0], np.nan)
        return nan, nan
    h = (ranks[i, j] - mu) / sd
    m = len(i)
    rho = model_ranks @ h / m
    exceed = np.zeros_like(rho)
    for start in range(0, n_permutations, chunk):
        perms = [rng.permutation(n) for _ in range(min(chunk, n_permutations - start))]
        hp = (np.stack([ranks[p[i], p[j]] for p in perms]) - mu) / sd  # [chunk, M]
        exceed += ((model_ranks @ hp.T) / m >= rho[:, None] - 1e-12).sum(1)
    return rho, (1 + exceed) / (1 + n_permutations)


@dataclass(frozen=True)
class RSAResult(Result):
    """Spearman RSA of every unit's RDM with each hypothesis, per shot count.

    ``rho[s, k, u]`` / ``p[s, k, u]``: shot count ``n_shots[s]``, hypothesis ``hypotheses[k]``, unit
    ``units[u]`` (``(layer,)`` or ``(layer, head)``). Higher rho = the representation matches the hypothesis.
    """

    rho: Float[Tensor, "shots hypothesis unit"]
    p: Float[Tensor, "shots hypothesis unit"]
    n_shots: tuple[int, ...]
    hypotheses: tuple[str, ...]
    units: tuple[tuple[int, ...], ...]
    site: str
    metric: str
    n_permutations: int
    info: dict[str, Any]

    title = "RSA"

    def _index(self, hypothesis: str | None, n_shots: int | None) -> tuple[int, int]:
        h = hypothesis if hypothesis is not None else self.hypotheses[0]
        if h not in self.hypotheses:
            raise TlensICLError(f"Unknown hypothesis {h!r}; this result has {self.hypotheses}.")
        s = n_shots if n_shots is not None else self.n_shots[-1]
        if s not in self.n_shots:
            raise TlensICLError(f"No {s}-shot prompts in this result (shots: {self.n_shots}).")
        return self.n_shots.index(s), self.hypotheses.index(h)

    def scores(self, hypothesis: str | None = None, n_shots: int | None = None) -> Float[Tensor, " unit"]:
        """rho per unit for one hypothesis (default: the first) and shot count (default: the largest)."""
        s, k = self._index(hypothesis, n_shots)
        return self.rho[s, k]

    def head_scores(self, hypothesis: str | None = None, n_shots: int | None = None) -> Float[Tensor, "layer head"]:
        """rho as a ``[layer, head]`` map (head sites only), e.g. for
        :func:`~tlens_icl.analyses.representations.compare_heads.compare_heads`."""
        if len(self.units[0]) != 2:
            raise TlensICLError(f"Site {self.site!r} is a layer site; collect 'z' or 'head_out' for per-head RSA.")
        n_layers = len({u[0] for u in self.units})
        return self.scores(hypothesis, n_shots).reshape(n_layers, -1)

    def to_dataframe(self) -> Any:
        import pandas as pd

        return pd.DataFrame([
            {"n_shots": shots, "hypothesis": h, "unit": _unit_name(unit), "layer": unit[0],
             "head": unit[1] if len(unit) == 2 else None, "rho": float(self.rho[s, k, u]), "p": float(self.p[s, k, u])}
            for s, shots in enumerate(self.n_shots) for k, h in enumerate(self.hypotheses)
            for u, unit in enumerate(self.units)
        ])

    def table(self, hypothesis: str | None = None) -> Any:
        """rho as a unit x n_shots table for one hypothesis."""
        h = hypothesis if hypothesis is not None else self.hypotheses[0]
        df = self.to_dataframe()
        return df[df.hypothesis == h].pivot(index="unit", columns="n_shots", values="rho").loc[
            [_unit_name(u) for u in self.units]]

    def summary(self) -> str:
        parts = []
        for k, h in enumerate(self.hypotheses):
            best = ", ".join(f"{s} shots {float(self.rho[i, k].max()):.2f}" for i, s in enumerate(self.n_shots))
            parts.append(f"{h}: max rho {best}")
        return (f"{self.title} of {self.model_name} ({self.site}, {self.metric} RDM, Spearman, "
                f"{self.n_permutations} permutations): " + "; ".join(parts))

    def plot(self, hypothesis: str | None = None, ax: Any = None) -> Any:
        """Layer sites: rho vs layer per shot count. Head sites: [layer, head] maps, fewest vs most shots."""
        from tlens_icl.viz.plots import heatmap_panels, line_plot

        h = hypothesis if hypothesis is not None else self.hypotheses[0]
        n = self.info.get("n")
        context = self._subtitle(f"{self.site} at the query, {self.metric} RDM, Mantel test with {self.n_permutations} "
                                 "permutations", f"n={n} prompts per task and shot count" if n else "")
        if len(self.units[0]) == 1:
            ys = {f"{s} shots": self.scores(h, s).tolist() for s in self.n_shots}
            return line_plot([u[0] for u in self.units], ys, xlabel="layer", ylabel="RSA Spearman rho", ax=ax,
                             hline=0.0, hline_label="no relation (rho = 0)",
                             title=f"RSA with the '{h}' hypothesis per layer", subtitle=context)
        if ax is not None:
            raise ValueError("ax= is not supported for head sites (the figure has one panel per shot count).")
        ends = sorted({self.n_shots[0], self.n_shots[-1]})
        return heatmap_panels({f"{s} shots": self.head_scores(h, s) for s in ends}, label="RSA Spearman rho",
                              title=f"RSA with the '{h}' hypothesis per head", subtitle=context)


def _unit_name(unit: Sequence[int]) -> str:
    return f"L{unit[0]}" if len(unit) == 1 else f"L{unit[0]}H{unit[1]}"


def _hypothesis_matrix(acts: ActivationSet, spec: HypothesisSpec) -> Tensor:
    if isinstance(spec, Tensor):
        if spec.shape != (len(acts), len(acts)):
            raise TlensICLError(f"A hypothesis matrix must be [{len(acts)}, {len(acts)}], got {tuple(spec.shape)}.")
        if not torch.allclose(spec, spec.T):
            raise TlensICLError("A hypothesis dissimilarity matrix must be symmetric.")
        return spec.float()
    return hypothesis_rdm(acts.labels(spec))


@checked
def rsa(
    acts: ActivationSet, hypotheses: Mapping[str, HypothesisSpec] | None = None, *, site: str = "resid_post",
    metric: RDMMetric = "cosine", n_permutations: int = 1000, seed: int = 0, progress: bool | None = None,
) -> RSAResult:
    """RSA of every unit at ``site`` with each hypothesis, separately for each shot count.

    Args:
        acts: from :func:`~tlens_icl.analyses.representations.activations.task_activations` / ``collect_activations``.
        hypotheses: name -> ``"task"`` / ``"condition"`` / ``"meta.<key>"`` (same label = similar), one label
            per row, or an ``[example, example]`` dissimilarity tensor. Default ``{"task": "task"}``.
        site: a collected site; head sites give Opiełka et al.'s per-head RSA.
        metric: RDM distance (``cosine``, ``euclidean``, ``correlation``).
        n_permutations: Mantel permutations for the p-values (0 = no p-values, all 1.0).

    Returns:
        :class:`RSAResult`; ``.scores(h, n_shots)``, ``.head_scores(...)``, ``.table()``. Higher rho = closer
        to the hypothesis.
    """
    from scipy.spatial.distance import pdist
    from tlens_icl.engine.progress import progress_bar

    if hypotheses is not None and not isinstance(hypotheses, Mapping):
        raise TlensICLError(f"rsa(): hypotheses must be a dict name -> label spec (e.g. {{'task': 'task'}}), got "
                            f"{type(hypotheses).__name__}.")
    hyps = dict(hypotheses) if hypotheses is not None else {"task": "task"}
    if not hyps:
        raise TlensICLError("rsa needs at least one hypothesis.")
    matrices = {name: _hypothesis_matrix(acts, spec) for name, spec in hyps.items()}
    rdm(torch.zeros(3, 2), metric=metric)  # validates the metric
    values, units = acts.units(site)
    groups = acts.shot_groups()
    rng = np.random.default_rng(seed)
    rho = torch.full((len(groups), len(hyps), len(units)), float("nan"))
    p = torch.full_like(rho, float("nan"))
    for s, idx in enumerate(progress_bar(list(groups.values()), enabled=progress, desc="rsa")):
        if len(idx) < 3:
            raise TlensICLError(f"RSA needs at least 3 prompts per shot count, got {len(idx)}.")
        ranks = [_standardized_ranks(pdist(values[idx, u].double().numpy(), metric=metric)) for u in range(len(units))]
        ok = [u for u, r in enumerate(ranks) if r is not None]  # a constant RDM has no rank order: rho stays NaN
        if not ok:
            continue
        stacked = np.stack([ranks[u] for u in ok])
        for k, mat in enumerate(matrices.values()):
            r, pv = _mantel(stacked, mat[idx][:, idx].double().numpy(), n_permutations, rng)
            rho[s, k, ok] = torch.from_numpy(r).float()
            p[s, k, ok] = torch.from_numpy(pv).float()
    return RSAResult(rho=rho, p=p, n_shots=tuple(groups), hypotheses=tuple(hyps), units=units, site=site,
                     metric=metric, n_permutations=n_permutations,
                     info={**acts.info, "seed": seed, "position": acts.position,
                           "hypotheses": {k: v if isinstance(v, str) else "custom" for k, v in hyps.items()}})


__all__ = ["RSAResult", "hypothesis_rdm", "rdm", "rsa", "rsa_score"]
