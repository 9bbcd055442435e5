"""The same heads over training: head scores, FV score (AIE), ICL score and few-shot accuracy at each checkpoint.

Olsson et al. report that induction heads form in a sudden phase change at the same time as in-context
learning; Yin & Steinhardt that many of Pythia's final FV heads first behave as induction heads, and that
FV heads take over few-shot ICL later in training. This follows the *final* model's top induction heads,
top previous-token heads and top FV heads back through the training checkpoints of an embedded model
(``load_model(name, step=N)``) and measures, at every checkpoint: every head's induction and previous-token
score, the AIE of the tracked heads, few-shot accuracy (also with the final top FV heads or the final top
induction heads mean-ablated), and the token-loss ICL score; the training loss of every step is read from
the model's ``train_log.csv`` where it has one.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tlens_icl._validate import checked, optional_steps
from tlens_icl.analyses.accuracy import icl_accuracy
from tlens_icl.analyses.causal.mediation import indirect_effect
from tlens_icl.analyses.heads.ablation import head_ablation
from tlens_icl.analyses.heads.scores import head_scores, lag_scores, top_heads_of
from tlens_icl.analyses.heads.token_loss import token_loss_score
from tlens_icl.errors import TlensICLError
from tlens_icl.models.embedded import EMBEDDED_MODELS, checkpoint_steps, embedded_model_path
from tlens_icl.models.loading import load_model, model_tasks
from tlens_icl.results.base import Result, run_info
from tlens_icl.tasks import Task

#: Columns of ``ablated``: few-shot accuracy with the final top FV heads / top induction heads mean-ablated.
ABLATED = ("FV heads ablated", "induction heads ablated")


def phase_change(steps: Sequence[int], values: Sequence[float], *, lo: float = 0.2, hi: float = 0.8,
                 min_rise: float = 0.2) -> tuple[float, float] | None:
    """The steps where ``values`` first cross ``lo`` and ``hi`` of their rise from the first value to the
    maximum (linear between checkpoints), or None when the rise is under ``min_rise`` (nothing formed)."""
    v = [float(x) for x in values]
    rise = max(v) - v[0]
    if len(v) < 2 or rise < min_rise:
        return None

    def cross(frac: float) -> float:
        level = v[0] + frac * rise
        for i in range(1, len(v)):
            if v[i] >= level:
                t = (level - v[i - 1]) / (v[i] - v[i - 1]) if v[i] != v[i - 1] else 1.0
                return float(steps[i - 1] + t * (steps[i] - steps[i - 1]))
        return float(steps[-1])

    return cross(lo), cross(hi)


def read_train_log(path: Path) -> tuple[Tensor, Tensor, tuple[str, ...]]:
    """``train_log.csv`` of a model folder as (steps, losses [step, column], column names); empty without one."""
    f = Path(path) / "train_log.csv"
    if not f.is_file():
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, 0), ()
    with open(f, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    cols = tuple(c for c in (rows[0] if rows else {}) if c.startswith("loss"))
    steps = torch.tensor([int(r["step"]) for r in rows], dtype=torch.long)
    if len(steps) > 1 and not bool((steps[1:] > steps[:-1]).all()):
        raise TlensICLError(f"{f}: steps are not increasing; the training log is damaged.")
    loss = torch.tensor([[float(r[c]) if r[c] != "" else float("nan") for c in cols] for r in rows])
    return steps, loss.reshape(len(rows), len(cols)), cols


@dataclass(frozen=True)
class HeadDynamicsResult(Result):
    """Head scores, ICL score and accuracy at each training step (the last step is the final model).

    ``induction[s]``/``previous_token[s]``: score maps at ``steps[s]`` (lag 1); ``lag_induction[s, i]`` /
    ``lag_previous[s, i]``: the same scores at lag ``lags[i]`` (:func:`~tlens_icl.analyses.heads.scores.lag_scores`;
    an induction circuit may match the token ``l`` back and read the key ``l`` after the earlier occurrence). The
    final top induction / previous-token heads are those with the highest score at their best lag.
    ``aie[s]``: AIE of the tracked heads (the final top FV, induction and previous-token heads; NaN elsewhere); ``accuracy[s, j]``: mean top-1
    accuracy over ``tasks`` at ``n_shots[j]`` shots; ``ablated[s, i]``: accuracy at ``n_shots[-1]`` shots with
    the final model's top FV heads (i = 0) or top induction heads (i = 1) mean-ablated (NaN: not measured);
    ``icl_score[s]``: the token-loss ICL score, loss at the query's answer minus loss at the first
    demonstration's (negative = in-context learning). ``train_loss[t, c]``: the logged training loss
    ``train_columns[c]`` after step ``train_steps[t]`` (empty when the model has no ``train_log.csv``).
    """

    steps: tuple[int, ...]
    induction: Float[Tensor, "step layer head"]
    previous_token: Float[Tensor, "step layer head"]
    lag_induction: Float[Tensor, "step lag layer head"]
    lag_previous: Float[Tensor, "step lag layer head"]
    lags: tuple[int, ...]
    aie: Float[Tensor, "step layer head"]
    accuracy: Float[Tensor, "step shots"]
    ablated: Float[Tensor, "step 2"]
    icl_score: Float[Tensor, " step"]
    train_steps: Int[Tensor, " logstep"]
    train_loss: Float[Tensor, "logstep column"]
    train_columns: tuple[str, ...]
    n_shots: tuple[int, ...]
    tasks: tuple[str, ...]
    top_fv: tuple[str, ...]
    top_induction: tuple[str, ...]
    top_previous: tuple[str, ...]
    info: dict[str, Any]

    title = "Heads over training"
    finite = ("induction", "previous_token", "lag_induction", "lag_previous", "accuracy", "icl_score")
    measured = ("aie",)

    def __post_init__(self) -> None:
        if list(self.steps) != sorted(set(self.steps)):
            raise TlensICLError(f"HeadDynamicsResult: steps must be strictly increasing, got {list(self.steps)}.")
        n = len(self.steps)
        for name in ("induction", "previous_token", "lag_induction", "lag_previous", "aie", "accuracy", "ablated",
                     "icl_score"):
            if getattr(self, name).shape[0] != n:
                raise TlensICLError(f"HeadDynamicsResult: {name} has {getattr(self, name).shape[0]} rows for {n} steps.")

    def track(self, values: Tensor, labels: Sequence[str]) -> dict[str, list[float]]:
        """``{label: values[:, layer, head] over steps}`` for head labels such as ``"L1H4"``."""
        out = {}
        for lab in labels:
            layer, head = (int(x) for x in lab[1:].split("H"))
            out[lab] = values[:, layer, head].tolist()
        return out

    def best_lag(self, which: str = "induction") -> Tensor:
        """Each head's lag with the highest final score (``"induction"`` or ``"previous"``), ``[layer, head]``."""
        t = self.lag_induction if which == "induction" else self.lag_previous
        return torch.tensor(self.lags)[t[-1].argmax(0)]

    def at_best_lag(self, which: str = "induction") -> Float[Tensor, "step layer head"]:
        """Each head's score at its final best lag, at every step (``"induction"`` or ``"previous"``)."""
        t = self.lag_induction if which == "induction" else self.lag_previous
        idx = t[-1].argmax(0)  # [layer, head]
        return t.gather(1, idx[None, None].expand(t.shape[0], 1, *idx.shape))[:, 0]

    def head_label(self, head: str, which: str = "induction") -> str:
        layer, h = (int(x) for x in head[1:].split("H"))
        return f"{head} lag {int(self.best_lag(which)[layer, h])}"

    def induction_curve(self) -> list[float]:
        """Mean induction score (at each head's best lag) of the final top induction heads at each step (what
        :meth:`phase_change` reads)."""
        cols = list(self.track(self.at_best_lag("induction"), self.top_induction).values())
        return [sum(c[s] for c in cols) / len(cols) for s in range(len(self.steps))]

    def phase_change(self) -> tuple[float, float] | None:
        """The steps over which the final induction heads' mean score makes 20 % -> 80 % of its rise
        (:func:`phase_change`), or None when it rises by less than 0.2 (no induction head formed)."""
        return phase_change(self.steps, self.induction_curve())

    def milestones(self, margin: float = 0.05) -> dict[str, Any]:
        """The answers the figure shows, as numbers: the induction phase change, when few-shot accuracy and the
        ICL score reach 80 % of their final change, each final FV head's largest induction score over training
        (and its step), and the first step from which ablating the FV heads costs more accuracy than ablating
        the induction heads, by more than ``margin``, at every later step."""
        acc = self.accuracy[:, -1].tolist()
        out: dict[str, Any] = {"induction_phase": self.phase_change()}
        for key, curve in (("accuracy", acc), ("icl_score", [-float(v) for v in self.icl_score])):
            band = phase_change(self.steps, curve, min_rise=0.05)
            out[f"{key}_80pct_step"] = band[1] if band else None
        out["fv_heads_peak_induction"] = {  # the FV head's induction score at any lag
            lab: {"max": max(v), "step": self.steps[v.index(max(v))], "final": v[-1]}
            for lab, v in self.track(self.lag_induction.max(1).values, self.top_fv).items()}
        fv_cost = self.accuracy[:, -1] - self.ablated[:, 0]
        ind_cost = self.accuracy[:, -1] - self.ablated[:, 1]
        takeover = None
        for s in range(len(self.steps)):
            if bool((fv_cost[s:] > ind_cost[s:] + margin).all()):
                takeover = self.steps[s]
                break
        out["fv_takeover_step"] = takeover
        return out

    def to_dataframe(self) -> Any:
        import pandas as pd

        rows = []
        for s, step in enumerate(self.steps):
            row: dict[str, Any] = {"step": step}
            for j, k in enumerate(self.n_shots):
                row[f"acc_{k}shot"] = float(self.accuracy[s, j])
            for i, name in enumerate(ABLATED):
                row[f"acc_{self.n_shots[-1]}shot_{name.replace(' ', '_')}"] = float(self.ablated[s, i])
            row["icl_score"] = float(self.icl_score[s])
            for lab, v in self.track(self.at_best_lag("induction"), self.top_induction).items():
                row[f"induction({self.head_label(lab)})"] = v[s]
            for lab, v in self.track(self.induction, self.top_induction).items():
                row[f"induction({lab} lag 1)"] = v[s]
            for lab, v in self.track(self.at_best_lag("previous"), self.top_previous).items():
                row[f"previous({self.head_label(lab, 'previous')})"] = v[s]
            for lab, v in self.track(self.lag_induction.max(1).values, self.top_fv).items():
                row[f"induction({lab} any lag, FV)"] = v[s]
            for lab, v in self.track(self.aie, self.top_fv).items():
                row[f"AIE({lab})"] = v[s]
            row["max_induction"] = float(self.induction[s].max())
            rows.append(row)
        return pd.DataFrame(rows)

    def summary(self) -> str:
        acc = ", ".join(f"{st}:{float(a):.2f}" for st, a in zip(self.steps, self.accuracy[:, -1]))
        band = self.phase_change()
        phase = f"steps {band[0]:.0f}-{band[1]:.0f}" if band else "none (the induction heads' score rises < 0.2)"
        return (f"{self.title} ({len(self.steps)} checkpoints): {self.n_shots[-1]}-shot accuracy {acc}; induction "
                f"phase change {phase}; final FV heads {list(self.top_fv)}, induction heads {list(self.top_induction)}")

    def plot(self, ax: Any = None) -> Any:
        """Stacked panels on one step axis: training loss, ICL score, accuracy, head scores, AIE; the induction
        phase change (:meth:`phase_change`) shaded in every panel."""
        from tlens_icl.viz.heads import training_panels

        n = self.n_shots[-1]
        panels: list[tuple[str, dict[str, Any], tuple[float, float] | None]] = []
        if len(self.train_steps):
            x = self.train_steps.tolist()
            cols = [c for c in self.train_columns if c != "loss"] or list(self.train_columns)  # per kind, if logged
            panels.append(("training loss\n(mean of 25 steps)",
                           {c.replace("loss_", "") if c != "loss" else "all rows":
                            (x, self.train_loss[:, self.train_columns.index(c)].tolist()) for c in cols}, None))
        steps = list(self.steps)
        panels.append(("token-loss ICL score\n(negative = ICL)", {"loss[query] - loss[first demo]":
                                                                   (steps, self.icl_score.tolist())}, None))
        acc = {f"{k}-shot": (steps, self.accuracy[:, j].tolist()) for j, k in enumerate(self.n_shots)}
        acc.update({f"{n}-shot, {name}": (steps, self.ablated[:, i].tolist()) for i, name in enumerate(ABLATED)
                    if not bool(self.ablated[:, i].isnan().all())})
        panels.append(("few-shot accuracy", acc, (0.0, 1.0)))
        heads = {f"{self.head_label(lab)} induction (induction head)": (steps, v)
                 for lab, v in self.track(self.at_best_lag("induction"), self.top_induction).items()}
        heads.update({f"{self.head_label(lab, 'previous')} back (previous-token head)": (steps, v)
                      for lab, v in self.track(self.at_best_lag("previous"), self.top_previous).items()})
        heads.update({f"{lab} induction, any lag (FV head)": (steps, v)
                      for lab, v in self.track(self.lag_induction.max(1).values, self.top_fv).items()})
        panels.append(("head score\n(at the head's lag)", heads, (0.0, 1.0)))
        panels.append(("AIE (FV score)", {f"{lab} (FV head)": (steps, v)
                                          for lab, v in self.track(self.aie, self.top_fv).items()}, None))
        model = str(self.info.get("model", ""))
        name = Path(model).name + " (a training run)" if ("/" in model or "\\" in model) else model
        band = self.phase_change()
        return training_panels(panels, band=band, band_label="induction heads form (20-80 % of their rise)",
                               title=f"{name}: in-context learning as it forms (final model's top heads, "
                                     f"{len(self.tasks)} tasks, n = {self.info.get('n', '?')} prompts per task)",
                               axes=ax)


@checked(model_name=True, rules={"steps": optional_steps})
def head_dynamics(
    model: str = "icl-forming", tasks: Sequence[Task | str] | None = None, *, steps: Sequence[int] | None = None,
    k: int = 3, n_shots: int = 4, n: int = 32, n_mean: int = 32, n_corrupted: int = 16,
    corruption: str = "zero_shot", n_random: int = 16, length: int = 20, lags: Sequence[int] = tuple(range(1, 9)),
    ablate: bool = True, seed: int = 0,
    batch_size: int = 16, progress: bool | None = None,
) -> HeadDynamicsResult:
    """Track the final model's top-``k`` FV, induction and previous-token heads over the checkpoints of ``model``.

    Args:
        model: an embedded model name (``"icl-forming"`` ships its checkpoints) or a training-script folder.
        tasks: default the model's own tasks (its card).
        steps: which checkpoints (default all; the final model is always included last).
        n_shots, n: few-shot prompts per task for accuracy (also at 0 shots), the AIE, the ablation and the ICL
            score (episodes of ``n_shots`` demonstrations).
        n_mean, n_corrupted, corruption: :func:`~tlens_icl.indirect_effect` settings.
        n_random, length: repeated random sequences for the head scores; ``lags``: the lags of
            :func:`~tlens_icl.analyses.heads.scores.lag_scores` (``length`` must exceed twice the largest).
        ablate: also measure accuracy with the final top FV heads / top induction heads mean-ablated.
    """
    from tlens_icl.engine.progress import progress_bar

    available = checkpoint_steps(model)
    if not available:
        raise TlensICLError(f"{model!r} has no training checkpoints; load 'icl-forming', or rebuild a model with "
                            "`python -m tlens_icl.models.embedded.train` (which keeps them).")
    final_step = available[-1]
    chosen = sorted(set(available if steps is None else [int(s) for s in steps]) | {final_step})
    missing = [s for s in chosen if s not in available]
    if missing:
        raise TlensICLError(f"No checkpoint at steps {missing}; available: {available}.")
    final = load_model(model, step=final_step)
    task_list = list(tasks) if tasks is not None else model_tasks(final)

    lags = [int(x) for x in lags]

    def measure(m: Any, heads: Sequence[Any] | None, rank: dict[str, Tensor] | None,
                lagged: tuple[Tensor, Tensor] | None = None, aie: Tensor | None = None) -> tuple[Tensor, ...]:
        """One checkpoint's row; ``lagged`` / ``aie``: the final model's scores, already measured."""
        lag_ind, lag_prev = lagged if lagged is not None else lag_scores(
            m, lags=lags, n=n_random, length=length, seed=seed, batch_size=batch_size)
        if 1 in lags:  # lag 1 is head_scores' induction / previous-token score: same sequences, one pass
            ind, prev = lag_ind[lags.index(1)], lag_prev[lags.index(1)]
        else:
            hs = head_scores(m, n=n_random, length=length, seed=seed, batch_size=batch_size)
            ind, prev = hs.induction(), hs.previous_token()
        if aie is None:
            aie = indirect_effect(m, task_list, n_mean=n_mean, n=n_corrupted, n_shots=n_shots,
                                  corruption=corruption, seed=seed, heads=heads, batch_size=batch_size).mean()
        acc = icl_accuracy(m, task_list, shots=(0, n_shots), n=n, seed=seed, batch_size=batch_size)
        icl = token_loss_score(m, "episodes", tasks=task_list, n=n * len(task_list), n_shots=n_shots, seed=seed,
                               batch_size=batch_size)
        abl = torch.full((len(ABLATED),), float("nan"))
        if rank is not None:
            ab = head_ablation(m, task_list, rank, ks=(0, k), n_random=0, n=n, n_shots=n_shots, seed=seed,
                               loss=False, batch_size=batch_size)
            per = ab.correct.nanmean(dim=(2, 3, 4))  # [method, k]
            abl = torch.stack([per[list(ab.methods).index(name), 1] for name in ("FV", "induction")])
        return ind, prev, aie, acc.accuracy().mean(0), abl, torch.tensor(icl.score()), lag_ind, lag_prev

    lag_ind_f, lag_prev_f = lag_scores(final, lags=lags, n=n_random, length=length, seed=seed, batch_size=batch_size)
    aie_all = indirect_effect(final, task_list, n_mean=n_mean, n=n_corrupted, n_shots=n_shots,
                              corruption=corruption, seed=seed, batch_size=batch_size).mean()
    top_fv = top_heads_of(aie_all, k)
    top_ind, top_prev = top_heads_of(lag_ind_f.max(0).values, k), top_heads_of(lag_prev_f.max(0).values, k)
    tracked = list(dict.fromkeys(top_fv + top_ind + top_prev))
    aie_final = torch.full_like(aie_all, float("nan"))  # the row holds the tracked heads only, as at every step
    at = ([h.layer for h in tracked], [h.head for h in tracked])
    aie_final[at] = aie_all[at]
    rank = None
    if ablate:  # indicator maps: exactly the final top-k heads of each kind, whatever a checkpoint's own scores
        rank = {}
        for name, heads in (("FV", top_fv), ("induction", top_ind)):
            mask = torch.zeros(final.cfg.n_layers, final.cfg.n_heads)
            mask[[h.layer for h in heads], [h.head for h in heads]] = 1.0
            rank[name] = mask
    rows = []
    for step in progress_bar(chosen, enabled=progress, desc="checkpoints"):
        if step == final_step:
            rows.append(measure(final, tracked, rank, (lag_ind_f, lag_prev_f), aie_final))
        else:
            rows.append(measure(load_model(model, step=step), tracked, rank))
    path = embedded_model_path(model) if str(model) in EMBEDDED_MODELS else Path(model)
    train_steps, train_loss, cols = read_train_log(path)
    return HeadDynamicsResult(
        steps=tuple(chosen), induction=torch.stack([r[0] for r in rows]), previous_token=torch.stack([r[1] for r in rows]),
        lag_induction=torch.stack([r[6] for r in rows]), lag_previous=torch.stack([r[7] for r in rows]),
        lags=tuple(lags),
        aie=torch.stack([r[2] for r in rows]), accuracy=torch.stack([r[3] for r in rows]),
        ablated=torch.stack([r[4] for r in rows]), icl_score=torch.stack([r[5] for r in rows]).float(),
        train_steps=train_steps, train_loss=train_loss, train_columns=cols, n_shots=(0, n_shots),
        tasks=tuple(t if isinstance(t, str) else t.name for t in task_list), top_fv=tuple(map(str, top_fv)),
        top_induction=tuple(map(str, top_ind)), top_previous=tuple(map(str, top_prev)),
        info=run_info(final, source=str(model), seed=seed, k=k, corruption=corruption, n=n, n_mean=n_mean,
                      n_corrupted=n_corrupted, n_random=n_random, length=length, lags=list(lags), ablate=ablate),
    )


__all__ = ["ABLATED", "HeadDynamicsResult", "head_dynamics", "phase_change", "read_train_log"]
