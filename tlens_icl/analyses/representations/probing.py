"""Parameterized probing: linear probes for a latent task parameter, with a control task (Yousefi et al.
2023; control tasks and selectivity from Hewitt & Liang, EMNLP 2019).

For each shot count and unit, a linear probe (scikit-learn; standardized features) predicts a latent
parameter of the prompt - a class (the bitwise operator, whether it is negated) with
``LogisticRegression``, or a number (the slope of ``linear_regression``) with ``RidgeCV`` - and is scored
by k-fold cross-validation (accuracy, or R^2 for regression). Higher = the parameter is more linearly
decodable.

Control task: every *input type* (the query input string) gets a random label of the same kind (drawn
from the target's label distribution, or a permutation of the target values for regression), fixed
across all prompts with that input; the same probe is trained on it. A probe that merely memorises the
query identity does well on the control task too; ``selectivity = score - control`` (higher = the probe
reads the task parameter, not the input).
"""

from __future__ import annotations

from collections.abc import Sequence
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

ProbeKind = Literal["auto", "classification", "regression"]


def _probe(kind: str, seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "classification":
        return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, random_state=seed))
    return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 13)))


def cv_score(x: np.ndarray, y: np.ndarray, *, kind: str, folds: int = 5, seed: int = 0) -> float:
    """Mean k-fold cross-validated accuracy (classification) or R^2 (regression) of a linear probe."""
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score

    smallest = int(np.unique(y, return_counts=True)[1].min())
    # stratified folds when every class can appear in every fold (a random control task may not allow it)
    split = StratifiedKFold if kind == "classification" and smallest >= folds else KFold
    cv = split(n_splits=folds, shuffle=True, random_state=seed)
    scoring = "accuracy" if kind == "classification" else "r2"
    return float(cross_val_score(_probe(kind, seed), x, y, cv=cv, scoring=scoring).mean())


def control_labels(inputs: Sequence[str], target: np.ndarray, *, kind: str, seed: int = 0) -> np.ndarray:
    """Hewitt & Liang control task: one random label per distinct input, shared by all its rows."""
    rng = np.random.default_rng(seed)
    types = sorted(set(inputs))
    if kind == "classification":
        draws = rng.choice(target, size=len(types), replace=True)
    else:
        draws = rng.permutation(np.resize(target, len(types)))
    lookup = dict(zip(types, draws))
    return np.array([lookup[x] for x in inputs])


@dataclass(frozen=True)
class ProbeResult(Result):
    """Cross-validated linear-probe scores per shot count and unit, with the control task.

    ``score[s, u]``: accuracy (classification) or R^2 (regression) for shot count ``n_shots[s]`` at unit
    ``units[u]``; ``control[s, u]``: the same on the control task; ``chance[s]``: the majority-class rate
    (classification) or 0 (regression). ``selectivity()`` = score - control; higher = more task-specific.
    """

    score: Float[Tensor, "shots unit"]
    control: Float[Tensor, "shots unit"]
    chance: Float[Tensor, " shots"]
    n_shots: tuple[int, ...]
    units: tuple[tuple[int, ...], ...]
    target: str
    kind: str
    site: str
    folds: int
    info: dict[str, Any]

    title = "Linear probe"

    def selectivity(self) -> Float[Tensor, "shots unit"]:
        return self.score - self.control

    def to_dataframe(self) -> Any:
        import pandas as pd

        return pd.DataFrame([
            {"n_shots": shots, "unit": _unit_name(unit), "layer": unit[0], "score": float(self.score[s, u]),
             "control": float(self.control[s, u]), "selectivity": float(self.score[s, u] - self.control[s, u]),
             "chance": float(self.chance[s])}
            for s, shots in enumerate(self.n_shots) for u, unit in enumerate(self.units)
        ])

    def table(self, column: str = "score") -> Any:
        """``score`` / ``control`` / ``selectivity`` as a unit x n_shots table."""
        return self.to_dataframe().pivot(index="unit", columns="n_shots", values=column).loc[
            [_unit_name(u) for u in self.units]]

    def summary(self) -> str:
        metric = "accuracy" if self.kind == "classification" else "R^2"
        best = "; ".join(f"{s} shots {float(self.score[i].max()):.2f} (control {float(self.control[i, int(self.score[i].argmax())]):.2f})"
                         for i, s in enumerate(self.n_shots))
        return f"{self.title} for {self.target!r} on {self.model_name} ({self.site}, {self.folds}-fold {metric}): best {best}"

    def plot(self, ax: Any = None) -> Any:
        """Probe score per unit and shot count (solid), the control task (dashed, same colour) and chance."""
        from tlens_icl.viz.plots import figure_axes, integer_ticks, set_titles

        fig, ax = figure_axes(ax, (max(5.6, 2.2 + 0.22 * len(self.units)), 3.7))
        x = list(range(len(self.units)))
        for s, shots in enumerate(self.n_shots):
            (line,) = ax.plot(x, self.score[s].tolist(), marker="o", ms=4, lw=1.6, label=f"{shots} shots")
            ax.plot(x, self.control[s].tolist(), ls="--", color=line.get_color(), lw=1)
        ax.plot([], [], ls="--", color="0.3", lw=1, label="control task (same colour)")
        ax.axhline(float(self.chance.mean()), ls=":", c="0.45", lw=1,
                   label="chance (majority class)" if self.kind == "classification" else "R^2 = 0")
        integer_ticks(ax, "x", x, [_unit_name(u) for u in self.units], fontsize=7)
        if len(x) > 12:
            ax.tick_params(axis="x", labelrotation=90)
        metric = "accuracy" if self.kind == "classification" else "R^2"
        ax.set_ylabel(f"held-out {metric}")
        ax.set_xlabel("layer" if len(self.units[0]) == 1 else "head")
        ax.grid(alpha=0.25, lw=0.5)
        set_titles(ax, f"Linear probe for {self.target!r} per {'layer' if len(self.units[0]) == 1 else 'head'}",
                   self._subtitle(f"{self.site} at the query, {self.folds}-fold cross-validation; "
                                  "control = Hewitt-Liang control task"))
        ax.legend(fontsize=7.5, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        return fig


def _unit_name(unit: Sequence[int]) -> str:
    return f"L{unit[0]}" if len(unit) == 1 else f"L{unit[0]}H{unit[1]}"


@checked
def probe(
    acts: ActivationSet, target: str | Sequence[Any] = "task", *, site: str = "resid_post", kind: ProbeKind = "auto",
    folds: int = 5, seed: int = 0, name: str | None = None, progress: bool | None = None,
) -> ProbeResult:
    """Linear probes for ``target`` at every unit of ``site``, per shot count, with a control task.

    Args:
        acts: from :func:`~tlens_icl.analyses.representations.activations.task_activations` / ``collect_activations``.
        target: ``"task"``, ``"meta.<key>"`` (e.g. ``"meta.slope"``) or one value per row.
        kind: ``"classification"`` (LogisticRegression, accuracy), ``"regression"`` (RidgeCV, R^2) or
            ``"auto"`` (regression when every value is a number and there are more than 10 distinct values).
        folds: cross-validation folds (stratified for classification).
        name: the target's name in the result (default: ``target`` when it is a string, else ``"custom"``).

    Returns:
        :class:`ProbeResult`; higher score = more decodable, ``selectivity()`` = score - control.
    """
    from tlens_icl.engine.progress import progress_bar

    values = acts.labels(target)
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if kind == "auto":
        kind = "regression" if numeric and len(set(values)) > 10 else "classification"
    if kind not in ("classification", "regression"):
        raise TlensICLError(f"kind must be 'auto', 'classification' or 'regression', got {kind!r}.")
    if kind == "regression" and not numeric:
        raise TlensICLError("A regression probe needs numeric targets.")
    y_all = np.array(values, dtype=float) if kind == "regression" else np.array([str(v) for v in values])
    x_all, units = acts.units(site)
    groups = acts.shot_groups()
    score = torch.zeros(len(groups), len(units))
    control = torch.zeros_like(score)
    chance = torch.zeros(len(groups))
    bar = progress_bar(total=len(groups) * len(units), enabled=progress, desc="probing")
    for s, idx in enumerate(groups.values()):
        rows = idx.numpy()
        y = y_all[rows]
        if len(set(y.tolist())) < 2:
            raise TlensICLError("Probing needs at least two distinct target values per shot count.")
        y_ctrl = control_labels([acts.queries[i] for i in rows], y, kind=kind, seed=seed)
        if kind == "classification":
            chance[s] = float(np.unique(y, return_counts=True)[1].max() / len(y))
        for u in range(len(units)):
            x = x_all[rows, u].numpy()
            score[s, u] = cv_score(x, y, kind=kind, folds=folds, seed=seed)
            control[s, u] = cv_score(x, y_ctrl, kind=kind, folds=folds, seed=seed) if len(set(y_ctrl.tolist())) > 1 else float(chance[s])
            bar.update()
    bar.close()
    return ProbeResult(score=score, control=control, chance=chance, n_shots=tuple(groups), units=units,
                       target=name or (target if isinstance(target, str) else "custom"), kind=kind, site=site, folds=folds,
                       info={**acts.info, "seed": seed, "position": acts.position})


__all__ = ["ProbeResult", "control_labels", "cv_score", "probe"]
