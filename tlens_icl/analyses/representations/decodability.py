"""Concept (task) decodability: can the latent task be read off a representation? (Han et al., arXiv 2412.12276)

For every shot count and every unit (layer, or head for head sites), each prompt's representation is
classified by a k-nearest-neighbour vote among the *other* prompts of the same shot count
(leave-one-out: a point is never its own neighbour - the unofficial reference code fits and predicts
on the same points, which inflates the score), with k = 10 and cosine distance by default. The score
CD is the fraction of prompts whose task is predicted correctly; higher = the task is more decodable.
Ties in the vote go to the class of the nearest neighbour among the tied classes; neighbours at
distances tied within float tolerance (duplicate prompts, rounding noise) are taken in a fixed order
(:func:`tie_rank`), so no decision depends on the CPU's float rounding or the route that computed the
activations. With fewer than ``k + 1`` prompts per shot count, ``k`` is lowered to
the number of other prompts; the result records the ``k`` used (``info["k_requested"]``: what was asked).

Controls: ``chance`` = sum of squared class frequencies (1/K for K balanced tasks; the accuracy of a
guess drawn from the label frequencies) and a shuffled-label control (the same kNN with the task
labels permuted among the prompts, averaged over ``n_shuffles`` permutations), which is what an
uninformative representation scores. ``DecodabilityResult.correlate(accuracy)`` relates per-task CD to
ICL accuracy across tasks and shot counts (Han et al.: CD predicts ICL performance).

Read CD against the shuffled-label control: it is what the same kNN on the same points scores when
the labels carry no information (near ``chance``; leave-one-out with balanced classes sits slightly
below it, since leaving a point out removes one vote of its own class). CD *below* the control means
prompts of different labels are closer than prompts of the same label - typically identical prompts
under several labels (0-shot prompts whose query recurs under several tasks: a duplicate with another
label is the nearest neighbour). That is the honest leave-one-out value of a representation that
cannot carry the label, not decoding "worse than chance". :meth:`DecodabilityResult.above_control` is
CD minus the control.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from tlens_icl._ties import argbest, neighbour_order
from tlens_icl._validate import checked
from tlens_icl.analyses.representations.activations import ActivationSet
from tlens_icl.errors import TlensICLError
from tlens_icl.results.base import Result

DistanceMetric = Literal["cosine", "euclidean"]
#: Seed of the fixed order of tied neighbours (:func:`tie_rank`).
_TIE_SEED = 20261207


def pairwise_distances(x: np.ndarray, metric: DistanceMetric = "cosine") -> np.ndarray:
    """``[n, n]`` distances between the rows of ``x``, in float64 (cosine: ``1 - cos``; a zero row is at distance 1)."""
    from scipy.spatial.distance import cdist

    x = np.asarray(x, dtype=np.float64)
    if metric == "euclidean":
        return cdist(x, x)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    unit = x / np.where(norm == 0, 1.0, norm)
    return np.clip(1.0 - unit @ unit.T, 0.0, 2.0)


def tie_rank(n: int) -> np.ndarray:
    """The fixed order in which tied neighbours are taken: a permutation of ``range(n)`` from a constant seed, the
    same on every machine (index order would hand every tie to the first task's prompts)."""
    return np.random.default_rng(_TIE_SEED).permutation(n)


def loo_knn_predict(x: np.ndarray, labels: np.ndarray, *, k: int = 10, metric: DistanceMetric = "cosine") -> np.ndarray:
    """Leave-one-out kNN prediction of integer ``labels`` for every row of ``x`` (never using the row itself).

    Neighbours are ordered by distance; distances tied within float tolerance (``tlens_icl._ties``: exact
    duplicates of a prompt, or rounding noise) are ordered by :func:`tie_rank`, so the neighbours and the
    vote do not depend on the machine's float rounding or on the route that computed ``x``.
    """
    return knn_vote(loo_neighbours(x, k=k, metric=metric), labels)


def loo_neighbours(x: np.ndarray, *, k: int = 10, metric: DistanceMetric = "cosine") -> np.ndarray:
    """``[n, min(k, n - 1)]``: each row's nearest other rows, nearest first (ties by :func:`tie_rank`)."""
    n = x.shape[0]
    if n < 2:
        raise TlensICLError("Leave-one-out kNN needs at least 2 points.")
    return neighbour_order(pairwise_distances(x, metric), tie_rank(n))[:, : min(k, n - 1)]


def knn_vote(idx: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The majority label among each row's neighbours ``idx``; a tie between classes goes to the class of the
    nearest neighbour among the tied classes."""
    n, k_eff = idx.shape
    neighbour_labels = labels[idx]  # [n, k_eff], nearest first
    rows = np.arange(n)
    votes = np.zeros((n, int(labels.max()) + 1), dtype=np.int64)
    np.add.at(votes, (np.repeat(rows, k_eff), neighbour_labels.ravel()), 1)
    tied = votes[rows[:, None], neighbour_labels] == votes.max(1, keepdims=True)
    return neighbour_labels[rows, tied.argmax(1)]


def _encode(labels: Sequence[Any]) -> tuple[np.ndarray, list[Any]]:
    classes = sorted(set(labels), key=str)
    lookup = {c: i for i, c in enumerate(classes)}
    return np.array([lookup[v] for v in labels]), classes


@dataclass(frozen=True)
class DecodabilityResult(Result):
    """Leave-one-out kNN decodability of the task label, per shot count and unit.

    ``correct[s, u, i]`` is 1.0 when row ``i`` of shot count ``n_shots[s]`` is assigned its own label at unit
    ``units[u]`` (a layer ``(l,)`` or a head ``(l, h)``); ``row_labels[s][i]`` is that row's label.
    ``shuffled[s, u]`` is the mean accuracy with permuted labels; ``chance[s]`` the frequency baseline.
    Higher = more decodable.
    """

    correct: Float[Tensor, "shots unit example"]
    shuffled: Float[Tensor, "shots unit"]
    chance: Float[Tensor, " shots"]
    n_shots: tuple[int, ...]
    units: tuple[tuple[int, ...], ...]
    row_labels: tuple[tuple[str, ...], ...]
    site: str
    k: int
    metric: str
    info: dict[str, Any]

    title = "Concept decodability"
    finite = ("correct", "shuffled", "chance")
    choices = {"metric": ("cosine", "euclidean")}

    def scores(self) -> Float[Tensor, "shots unit"]:
        """CD: the fraction of rows decoded correctly."""
        return self.correct.mean(-1)

    def above_control(self) -> Float[Tensor, "shots unit"]:
        """CD minus the shuffled-label control: what the representation decodes beyond the kNN's own bias."""
        return self.scores() - self.shuffled

    def per_task(self) -> Any:
        """CD of each label's rows: a DataFrame (label, n_shots, unit) -> cd."""
        import pandas as pd

        rows = []
        for s, shots in enumerate(self.n_shots):
            labels = np.array(self.row_labels[s])
            for label in sorted(set(labels)):
                sel = torch.from_numpy(labels == label)
                for u, unit in enumerate(self.units):
                    rows.append({"task": label, "n_shots": shots, "unit": _unit_name(unit), "layer": unit[0],
                                 "cd": float(self.correct[s, u, sel].mean())})
        return pd.DataFrame(rows)

    def ci(self, confidence: float = 0.95) -> tuple[Tensor, Tensor]:
        """Clopper-Pearson interval of each CD (rows treated as independent trials)."""
        from tlens_icl.results.stats import clopper_pearson

        return clopper_pearson(self.correct.sum(-1), self.correct.shape[-1], confidence)

    def to_dataframe(self) -> Any:
        import pandas as pd

        cd, (lo, hi) = self.scores(), self.ci()
        return pd.DataFrame([
            {"n_shots": shots, "unit": _unit_name(unit), "layer": unit[0], "cd": float(cd[s, u]),
             "ci_low": float(lo[s, u]), "ci_high": float(hi[s, u]), "shuffled": float(self.shuffled[s, u]),
             "chance": float(self.chance[s]), "n": self.correct.shape[-1]}
            for s, shots in enumerate(self.n_shots) for u, unit in enumerate(self.units)
        ])

    def table(self) -> Any:
        """CD as a unit x n_shots table."""
        return self.to_dataframe().pivot(index="unit", columns="n_shots", values="cd").loc[
            [_unit_name(u) for u in self.units]]

    def correlate(self, accuracy: Any, *, method: Literal["spearman", "pearson"] = "spearman") -> Any:
        """Correlation, per unit, between per-task CD and ICL accuracy over (task, shot count) cells.

        ``accuracy`` is an :class:`~tlens_icl.analyses.accuracy.AccuracyResult` (``icl_accuracy``) covering the same
        tasks and shot counts. Returns a DataFrame unit -> (r, p, n_cells).
        """
        import pandas as pd
        from scipy.stats import pearsonr, spearmanr

        acc = accuracy.accuracy()
        cells = [(t, s) for s in self.n_shots for t in accuracy.tasks
                 if s in accuracy.n_shots and t in set(self.row_labels[self.n_shots.index(s)])]
        if len(cells) < 3:
            raise TlensICLError("correlate needs at least 3 (task, shot count) cells shared with the accuracy result.")
        pt = self.per_task().set_index(["task", "n_shots", "unit"])["cd"]
        y = [float(acc[accuracy.tasks.index(t), accuracy.n_shots.index(s)]) for t, s in cells]
        corr = spearmanr if method == "spearman" else pearsonr
        rows = []
        for unit in self.units:
            x = [pt[(t, s, _unit_name(unit))] for t, s in cells]
            r, p = corr(x, y) if np.std(x) > 0 and np.std(y) > 0 else (float("nan"), float("nan"))
            rows.append({"unit": _unit_name(unit), "layer": unit[0], "r": float(r), "p": float(p), "n_cells": len(cells)})
        return pd.DataFrame(rows)

    def summary(self) -> str:
        cd = self.scores()
        at = argbest(cd)
        best = [f"{s} shots: {float(cd[i, at[i]]):.2f} at {_unit_name(self.units[int(at[i])])} "
                f"(shuffled control {float(self.shuffled[i, at[i]]):.2f})"
                for i, s in enumerate(self.n_shots)]
        asked = self.info.get("k_requested")
        capped = f" (k={asked} asked; capped at n - 1)" if isinstance(asked, int) and asked != self.k else ""
        return (f"{self.title} of {self.model_name} ({self.site}, {self.k}-NN{capped} {self.metric}, leave-one-out, "
                f"n={self.correct.shape[-1]} per shot count; chance {float(self.chance.mean()):.2f}): " + "; ".join(best))

    def plot(self, ax: Any = None) -> Any:
        """CD vs layer, one line per shot count with Clopper-Pearson 95% bands (head sites: the best head of each
        layer); chance and the shuffled-label control as labelled reference lines."""
        from tlens_icl.results.stats import clopper_pearson
        from tlens_icl.viz.plots import line_plot

        cd = self.scores()
        layers = sorted({u[0] for u in self.units})
        of_layer = [[i for i, u in enumerate(self.units) if u[0] == layer] for layer in layers]
        best = [[idx[int(argbest(cd[s, idx]))] for idx in of_layer] for s in range(len(self.n_shots))]
        n = self.correct.shape[-1]
        lo, hi = clopper_pearson(self.correct.sum(-1), n)
        ys = {f"{s} shots": [float(cd[i, u]) for u in best[i]] for i, s in enumerate(self.n_shots)}
        ci = {f"{s} shots": ([float(lo[i, u]) for u in best[i]], [float(hi[i, u]) for u in best[i]])
              for i, s in enumerate(self.n_shots)}
        refs = [(float(self.chance.mean()), "chance (majority label)"),
                (float(self.shuffled.mean()), "shuffled-label control")]
        head = " (best head per layer)" if len(self.units[0]) == 2 else ""
        return line_plot(layers, ys, xlabel="layer", ylabel="concept decodability", ax=ax, ci=ci, refs=refs,
                         ylim=(-0.02, 1.02),
                         title=f"Task decodability per layer{head} ({len(set(self.row_labels[-1]))} labels)",
                         subtitle=self._subtitle(f"{self.site} at the query, leave-one-out {self.k}-NN {self.metric}",
                                                 f"n={n} prompts per shot count"))


def _unit_name(unit: Sequence[int]) -> str:
    return f"L{unit[0]}" if len(unit) == 1 else f"L{unit[0]}H{unit[1]}"


@checked
def concept_decodability(
    acts: ActivationSet, *, site: str = "resid_post", label: str | Sequence[Any] = "task", k: int = 10,
    metric: DistanceMetric = "cosine", n_shuffles: int = 5, seed: int = 0, progress: bool | None = None,
) -> DecodabilityResult:
    """Leave-one-out kNN decodability of ``label`` (default: the task) from ``acts`` at ``site``.

    Prompts are compared only with prompts of the same shot count. Every shot count must have the same
    number of rows (``task_activations`` guarantees it). Higher = more decodable; see the module docstring.

    Args:
        acts: from :func:`~tlens_icl.analyses.representations.activations.task_activations` / ``collect_activations``.
        site: a collected site; head sites (``z``, ``head_out``) score every head.
        label: ``"task"``, ``"condition"``, ``"meta.<key>"`` or one label per row.
        k: neighbours (Han et al.: 10); metric: ``"cosine"`` or ``"euclidean"``.
        n_shuffles: label permutations for the shuffled-label control.
    """
    from tlens_icl.engine.progress import progress_bar

    if metric not in ("cosine", "euclidean"):
        raise TlensICLError(f"metric must be 'cosine' or 'euclidean', got {metric!r}.")
    if k < 1:
        raise TlensICLError(f"k must be >= 1, got {k}.")
    values, units = acts.units(site)
    all_labels = [str(v) for v in acts.labels(label)]
    groups = acts.shot_groups()
    sizes = {len(idx) for idx in groups.values()}
    if len(sizes) != 1:
        raise TlensICLError(f"Every shot count needs the same number of rows, got {sorted(sizes)}.")
    rng = np.random.default_rng(seed)
    n_rows = sizes.pop()
    if n_rows < 2:
        raise TlensICLError(f"Leave-one-out kNN needs at least 2 prompts per shot count, got {n_rows}.")
    k_used = min(k, n_rows - 1)
    if k_used < k:
        import warnings

        warnings.warn(f"concept_decodability(): k={k} neighbours asked, but each shot count has only {n_rows} prompts: "
                      f"k={k_used} is used (every other prompt votes, so the vote nears the majority label). "
                      "Use more prompts or a smaller k.", stacklevel=3)
    correct = torch.zeros(len(groups), len(units), n_rows)
    shuffled = torch.zeros(len(groups), len(units))
    chance = torch.zeros(len(groups))
    row_labels = []
    bar = progress_bar(total=len(groups) * len(units), enabled=progress, desc="decodability")
    for s, idx in enumerate(groups.values()):
        names = [all_labels[i] for i in idx.tolist()]
        y, _ = _encode(names)
        if y.max() == 0:
            raise TlensICLError("Decodability needs at least two distinct labels per shot count.")
        row_labels.append(tuple(names))
        chance[s] = float(((np.bincount(y) / len(y)) ** 2).sum())
        perms = [rng.permutation(y) for _ in range(n_shuffles)]
        for u in range(len(units)):
            near = loo_neighbours(values[idx, u].numpy(), k=k_used, metric=metric)  # shared by the permutations
            correct[s, u] = torch.from_numpy(knn_vote(near, y) == y).float()
            if perms:
                shuffled[s, u] = float(np.mean([(knn_vote(near, p) == p).mean() for p in perms]))
            bar.update()
    bar.close()
    return DecodabilityResult(
        correct=correct, shuffled=shuffled, chance=chance, n_shots=tuple(groups), units=units,
        row_labels=tuple(row_labels), site=site, k=k_used, metric=metric,
        info={**acts.info, "label": label if isinstance(label, str) else "custom", "n_shuffles": n_shuffles,
              "k_requested": k,
              "seed": seed, "position": acts.position},
    )


__all__ = ["DecodabilityResult", "concept_decodability", "knn_vote", "loo_knn_predict", "loo_neighbours",
           "pairwise_distances", "tie_rank"]
