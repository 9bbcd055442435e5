"""One evaluation protocol for function vectors, task vectors, in-context vectors and soft injection.

For every task: ``Task.split`` into train/test; every vector is built from train items only (demos,
dummy queries, mediation, soft-injection training), each method's free parameter (injection layer,
ICV strength) is chosen on zero-shot prompts of *train* queries, and every method is then scored on the
same zero-shot prompts of the held-out test items. Baselines on the same test queries: ``zero_shot``
(no demonstrations) and ``icl`` (``n_shots`` demonstrations drawn from train).

Metrics: top-1 accuracy of the first answer token and mean P(answer), unfiltered and filtered to the
items the model answers correctly with ICL (Todd et al.'s protocol), with percentile bootstrap CIs
(``scipy.stats.bootstrap``). Higher = better for both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from tlens_icl._ties import argbest
from tlens_icl._typing import ModelLike
from tlens_icl._validate import checked
from tlens_icl.analyses.vectors.common import (
    evaluate_intervention,
    evaluate_query_interventions,
    mean_head_activations,
)
from tlens_icl.analyses.vectors.function_vectors import (
    function_vector_from_heads,
    function_vector_sweep,
)
from tlens_icl.analyses.vectors.icv import in_context_vector
from tlens_icl.analyses.vectors.soft_injection import soft_injection
from tlens_icl.analyses.vectors.steering import SteeringVector
from tlens_icl.analyses.vectors.task_vectors import task_vector, task_vector_sweep
from tlens_icl.engine.query import Interventions
from tlens_icl.errors import TlensICLError
from tlens_icl.prompts.batch import PromptBatch
from tlens_icl.prompts.pairs import usable_task
from tlens_icl.prompts.spec import PromptSpec, spec_of
from tlens_icl.prompts.templates import PromptTemplate
from tlens_icl.results.base import Result, run_info
from tlens_icl.tasks import Task, load_task

METHODS = ("function_vector", "task_vector", "icv", "soft_injection")
BASELINES = ("zero_shot", "icl")
SWEPT = ("function_vector", "task_vector")


@dataclass(frozen=True)
class ComparisonResult(Result):
    """Per-example scores of every method on the same held-out test items.

    ``correct[m, t, i]`` / ``answer_prob[m, t, i]``: top-1 correctness and P(answer) of method
    ``methods[m]`` (baselines ``zero_shot`` and ``icl`` first) on test item ``i`` of ``tasks[t]``.
    ``layer_accuracy[s, t, l]``: train-query (selection) accuracy of ``SWEPT[s]`` injected at layer ``l``
    (NaN where a method was not run). ``chosen[task][method]`` records the selected parameters.
    """

    correct: Float[Tensor, "method task example"]
    answer_prob: Float[Tensor, "method task example"]
    layer_accuracy: Float[Tensor, "swept task layer"]
    methods: tuple[str, ...]
    tasks: tuple[str, ...]
    chosen: dict[str, Any]
    info: dict[str, Any]

    title = "Task-vector methods on held-out items"

    def icl_correct(self) -> Bool[Tensor, "task example"]:
        return self.correct[self.methods.index("icl")] > 0.5

    def _values(self, metric: str) -> Tensor:
        if metric not in ("accuracy", "prob"):
            raise TlensICLError(f"metric must be 'accuracy' or 'prob', got {metric!r}.")
        return self.correct if metric == "accuracy" else self.answer_prob

    def cell(self, method: str, task: str, *, filtered: bool = False, metric: str = "accuracy") -> Tensor:
        """The per-example values of one (method, task) cell (ICL-correct items only if ``filtered``)."""
        m, t = self.methods.index(method), self.tasks.index(task)
        x = self._values(metric)[m, t]
        return x[self.icl_correct()[t]] if filtered else x

    def to_dataframe(self) -> Any:
        """One row per (method, task, subset) with accuracy, mean P(answer), bootstrap CIs and n."""
        import pandas as pd

        rows = []
        for filtered in (False, True):
            for m in self.methods:
                for t in self.tasks:
                    acc, p = self.cell(m, t, filtered=filtered), self.cell(m, t, filtered=filtered, metric="prob")
                    (alo, ahi), (plo, phi) = bootstrap_mean_ci(acc), bootstrap_mean_ci(p)
                    rows.append({"method": m, "task": t, "subset": "icl_correct" if filtered else "all",
                                 "accuracy": _mean(acc), "accuracy_ci_low": alo, "accuracy_ci_high": ahi,
                                 "mean_prob": _mean(p), "prob_ci_low": plo, "prob_ci_high": phi, "n": int(acc.numel())})
        return pd.DataFrame(rows)

    def table(self, *, filtered: bool = False, metric: str = "accuracy") -> Any:
        """A method x task table (plus the mean over tasks) of accuracy or mean P(answer)."""
        import pandas as pd

        data = {t: [_mean(self.cell(m, t, filtered=filtered, metric=metric)) for m in self.methods] for t in self.tasks}
        df = pd.DataFrame(data, index=list(self.methods))
        df["mean"] = df.mean(axis=1)
        df.index.name = f"{metric} ({'ICL-correct items' if filtered else 'all items'})"
        return df

    def summary(self) -> str:
        means = self.table().loc[:, "mean"]
        return (f"{self.title} ({self.model_name}, {len(self.tasks)} task(s), n={self.correct.shape[-1]} test items "
                "per task), mean accuracy: " + ", ".join(f"{m} {v:.2f}" for m, v in means.items()))

    def plot(self, *, filtered: bool = False, ax: Any = None) -> Any:
        """Grouped bars: top-1 accuracy per task and method with 95% bootstrap CIs (over test items)."""
        from tlens_icl.viz.plots import grouped_bars

        means = torch.full((len(self.methods), len(self.tasks)), float("nan"))
        lo, hi = means.clone(), means.clone()
        for i, m in enumerate(self.methods):
            for j, t in enumerate(self.tasks):
                v = self.cell(m, t, filtered=filtered)
                means[i, j] = _mean(v)
                lo[i, j], hi[i, j] = bootstrap_mean_ci(v)
        n = self.icl_correct().sum(-1).tolist() if filtered else [self.correct.shape[-1]] * len(self.tasks)
        n_text = f"n={n[0]}" if len(set(n)) == 1 else "n=" + "/".join(map(str, n))
        subset = "test items the model answers correctly with ICL" if filtered else "all held-out test items"
        return grouped_bars(self.tasks, self.methods, means, lo, hi, ylabel="top-1 accuracy", ax=ax,
                            title=f"Accuracy by method on {subset}",
                            subtitle=self._subtitle(f"{n_text} per task; zero_shot and icl are the baselines without a "
                                                    "vector (no / n demonstrations); every method on zero-shot prompts"))

    def plot_layers(self, ax: Any = None) -> Any:
        """Selection accuracy vs injection layer for the swept methods (mean over tasks, train queries)."""
        from tlens_icl.viz.plots import line_plot

        from collections import Counter

        from tlens_icl.viz.plots import place_legend as _legend

        acc = self.layer_accuracy.nanmean(1)
        ys = {s: acc[i].tolist() for i, s in enumerate(SWEPT) if not bool(acc[i].isnan().all())}
        fig = line_plot(range(acc.shape[-1]), ys, xlabel="injection layer (after block)",
                        ylabel="accuracy on train queries", ax=ax, ylim=(-0.02, 1.02),
                        title="Layer selection for the swept methods (mean over tasks)",
                        subtitle=self._subtitle(f"n={self.info.get('n_fit', '?')} zero-shot prompts of train queries "
                                                "per task (at most); each task uses its best layer on test (stars: "
                                                "the layers chosen, with the number of tasks that chose each)"))
        a = fig.axes[0] if ax is None else ax
        handles, labels = a.get_legend_handles_labels()
        for method in SWEPT:
            if method not in ys:
                continue
            picked = Counter(int(c[method]["layer"]) for c in self.chosen.values()
                             if isinstance(c.get(method), dict) and c[method].get("layer") is not None)
            for layer, count in sorted(picked.items()):
                a.plot([layer], [ys[method][layer]], marker="*", ms=12, color=f"C{list(ys).index(method)}", mec="white",
                       mew=0.6, ls="", zorder=4)
                if len(self.tasks) > 1:
                    a.annotate(f"{count}", (layer, ys[method][layer]), xytext=(0, 7), textcoords="offset points",
                               ha="center", fontsize=7, color=f"C{list(ys).index(method)}")
        (star,) = a.plot([], [], marker="*", ms=10, color="0.3", ls="")
        _legend(a, len(handles) + 1, handles=[*handles, star],
                labels=[*labels, "layer chosen for a task" + (" (n tasks)" if len(self.tasks) > 1 else "")])
        return fig

    def figures(self, **plot_kwargs: Any) -> dict[str, Any]:
        return {"all": self.plot(filtered=False), "icl_correct": self.plot(filtered=True), "layers": self.plot_layers()}


def _mean(x: Tensor) -> float:
    return float(x.float().mean()) if x.numel() else math.nan


def bootstrap_mean_ci(
    x: Tensor, *, confidence: float = 0.95, n_resamples: int = 1000, seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (``scipy.stats.bootstrap``); a point for constant data, NaN if empty."""
    if x.numel() == 0:
        return math.nan, math.nan
    if x.numel() == 1 or bool((x == x.flatten()[0]).all()):
        v = float(x.flatten()[0])
        return v, v
    from scipy.stats import bootstrap

    res = bootstrap((x.double().numpy(),), lambda a, axis: a.mean(axis=axis), confidence_level=confidence,
                    n_resamples=n_resamples, method="percentile", random_state=seed, vectorized=True)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _fv_heads(model: ModelLike, fv_heads: Any, train: Task, task_name: str, *, k: int, corruption: str,
              other_task: Task | None, n_fit: int, n_shots: int, seed: int,
              template: PromptTemplate | str | None, batch_size: int) -> list[tuple[int, int]]:
    """Heads for the function vector: given explicitly, from a mediation result, or by mediation on train."""
    if isinstance(fv_heads, dict):
        fv_heads = fv_heads[task_name]
    if fv_heads is None:
        from tlens_icl.analyses.causal.mediation import indirect_effect

        fv_heads = indirect_effect(model, PromptSpec((train,), n=n_fit, n_shots=n_shots, corruption=corruption,
                                                     other_task=other_task, seed=seed, template=template),
                                   n_mean=n_fit, batch_size=batch_size)
    if hasattr(fv_heads, "top_heads"):
        tasks = list(fv_heads.tasks)
        return [tuple(h) for h in fv_heads.top_heads(k, task=task_name if task_name in tasks else None)]
    return [tuple(h) for h in fv_heads]


@checked
def compare_methods(
    model: ModelLike, tasks: PromptSpec | Task | str | Sequence[Task | str], *, methods: Sequence[str] = METHODS,
    n: int = 64, n_fit: int = 32, n_shots: int = 8, test_size: float = 0.3, seed: int = 0,
    fv_heads: Any = None, fv_k: int = 10, fv_corruption: str | dict[str, str] = "shuffled_labels",
    icv_strengths: Sequence[float] = (0.05, 0.1, 0.2, 0.5), icv_contrast: str = "pair", icv_direction: str = "pc1",
    soft_steps: int = 100, soft_lr: float = 0.2, template: PromptTemplate | str | None = None,
    batch_size: int = 32, progress: bool | None = None,
) -> ComparisonResult:
    """Zero-shot, ICL, function vector, task vector, ICV and soft injection on the same held-out items.

    Args:
        tasks: one or several tasks, or a :class:`~tlens_icl.prompts.spec.PromptSpec` (its ``n`` is ``n``);
            each task is split ``test_size`` (test) / rest (train) with ``seed``. Streams: the test prompts are
            the spec's ``clean`` stream, the prompts that build each vector its ``fit`` stream, those that choose a
            layer or strength its ``validation`` stream, and the FV heads' mediation runs on the train split with
            a spec derived from the label ``"fv_heads"`` (every stream independent of the others).
        methods: any of :data:`METHODS`.
        n: test items per task (capped at the test split's size; every item at most once).
        n_fit: prompts per task used to build each vector / train soft injection / choose parameters.
        n_shots: demonstrations in ICL prompts (the ``icl`` baseline and every vector's source prompts).
        fv_heads: the FV heads: ``None`` runs :func:`~tlens_icl.analyses.causal.mediation.indirect_effect` on the
            train split with ``fv_corruption`` (``other_task_labels`` takes labels from the next task in
            ``tasks``; a ``{task: corruption}`` dict sets it per task); or an ``IndirectEffectResult``, a
            head list, or ``{task: heads}``.
        icv_strengths: the ICV strength is chosen among these on train queries.
        icv_contrast, icv_direction: see :func:`~tlens_icl.analyses.vectors.icv.in_context_vector` (defaults: the paper).
        soft_steps, soft_lr: Adam steps and learning rate for soft injection.

    Returns:
        :class:`ComparisonResult`; ``.table()`` / ``.table(filtered=True)`` give method x task accuracy.
    """
    from tlens_icl.engine.progress import progress_bar

    _validate(methods, fv_corruption, icv_contrast, icv_direction, n, n_fit)
    spec = spec_of(tasks, compare_methods, n=n, n_shots=n_shots, seed=seed, template=template)
    n_test, n_shots, seed, template = spec.n, spec.n_shots, spec.seed, spec.template
    task_list = [load_task(t) for t in spec.tasks]
    usable = [usable_task(model, t, template=template) for t in task_list]
    splits = [t.split(test_size, seed=seed) for t in usable]
    n = min([n_test] + [len(test) for _, test in splits])
    # Build (and validate) all evaluation prompts before the first forward pass.
    evals = [{"zero_shot": spec.prompts(model, "clean", task=test, n=n, n_shots=0),
              "icl": spec.prompts(model, "clean", task=test, n=n, demos_from=train)}
             for train, test in splits]
    all_methods = BASELINES + tuple(methods)
    n_layers = model.cfg.n_layers
    correct = torch.zeros(len(all_methods), len(task_list), n)
    p = torch.zeros_like(correct)
    layer_acc = torch.full((len(SWEPT), len(task_list), n_layers), math.nan)
    chosen: dict[str, Any] = {}
    for t, ((train, _), batches) in enumerate(progress_bar(list(zip(splits, evals)), enabled=progress, desc="tasks")):
        name = usable[t].name
        icl = all_methods.index("icl")
        correct[icl, t], p[icl, t] = evaluate_intervention(model, batches["icl"], batch_size=batch_size)
        zs = batches["zero_shot"]
        at_query: dict[str, Interventions] = {}
        other = splits[(t + 1) % len(splits)][0] if len(splits) > 1 else None
        fit = dict(model=model, train=train, n_fit=n_fit, n_shots=n_shots, spec=spec, template=template,
                   batch_size=batch_size)
        chosen[name] = {}
        for m in methods:
            if m == "function_vector":
                corruption = fv_corruption[name] if isinstance(fv_corruption, dict) else fv_corruption
                heads = _fv_heads(model, fv_heads, train, name, k=fv_k, corruption=corruption, other_task=other,
                                  n_fit=n_fit, n_shots=n_shots, seed=spec.derive("fv_heads").seed, template=template,
                                  batch_size=batch_size)
                builder, sweep, params = _function_vector(heads=heads, **fit)
            elif m == "task_vector":
                builder, sweep, params = _task_vector(**fit)
            elif m == "icv":
                builder, sweep, params = _icv(strengths=icv_strengths, contrast=icv_contrast, direction=icv_direction,
                                              **fit)
            else:
                builder, sweep, params = _soft(steps=soft_steps, lr=soft_lr, **fit)
            i = all_methods.index(m)
            if isinstance(builder, Interventions):
                at_query[m] = builder
            else:
                correct[i, t], p[i, t] = evaluate_intervention(model, zs, builder, batch_size=batch_size)
            if sweep is not None:
                layer_acc[SWEPT.index(m), t] = sweep
            chosen[name][m] = params
        # The zero-shot baseline and every query-position method from one base run of the test prompts.
        both = sum(at_query.values(), Interventions(0))
        c, pr, c0, p0 = evaluate_query_interventions(model, zs, both, batch_size=batch_size)
        zero = all_methods.index("zero_shot")
        correct[zero, t], p[zero, t] = c0, p0
        for j, m in enumerate(at_query):
            correct[all_methods.index(m), t], p[all_methods.index(m), t] = c[j], pr[j]
    info = run_info(model, method="compare_methods", n_test=n, n_fit=n_fit, n_shots=n_shots, test_size=test_size,
                    seed=seed, fv_k=fv_k, fv_corruption=fv_corruption, icv_contrast=icv_contrast,
                    icv_direction=icv_direction,
                    soft_steps=soft_steps, soft_lr=soft_lr, task_sha256={t.name: t.sha256 for t in usable},
                    spec=spec.info(fit=n_fit, validation=n_fit))
    return ComparisonResult(correct, p, layer_acc, all_methods, tuple(t.name for t in usable), chosen, info)


def _validate(methods: Sequence[str], fv_corruption: Any, icv_contrast: str, icv_direction: str, n_test: int,
              n_fit: int) -> None:
    from tlens_icl.prompts.pairs import CORRUPTIONS

    if isinstance(methods, str) or not methods:
        raise TlensICLError(f"compare_methods(): methods must be a non-empty list of {METHODS}, got {methods!r}.")
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise TlensICLError(f"Unknown method(s) {bad}; choose from {METHODS}.")
    corruptions = fv_corruption.values() if isinstance(fv_corruption, dict) else [fv_corruption]
    if any(c not in CORRUPTIONS for c in corruptions):
        raise TlensICLError(f"fv_corruption must be one of {sorted(CORRUPTIONS)}, got {fv_corruption!r}.")
    if icv_contrast not in ("pair", "icl") or icv_direction not in ("pc1", "pc1+mean"):
        raise TlensICLError("icv_contrast must be 'pair' or 'icl' and icv_direction 'pc1' or 'pc1+mean'.")
    if n_test < 1 or n_fit < 2:
        raise TlensICLError(f"n must be >= 1 and n_fit >= 2, got {n_test} and {n_fit}.")


# ---- per-method fitting on the train split: (hook builder for test prompts, layer accuracies, params) ----
def _selection_prompts(train: Task, model: ModelLike, n_fit: int, spec: PromptSpec) -> PromptBatch:
    return spec.prompts(model, "validation", task=train, n=min(n_fit, len(train)), n_shots=0)


def _function_vector(*, model: ModelLike, train: Task, heads: list[tuple[int, int]], n_fit: int,
                     n_shots: int, spec: PromptSpec, template: Any, batch_size: int) -> tuple[Any, Any, dict[str, Any]]:
    icl = spec.prompts(model, "fit", task=train, n=n_fit)
    fv = function_vector_from_heads(model, mean_head_activations(model, icl, batch_size=batch_size), heads,
                                    task=train.name)
    sweep = function_vector_sweep(model, fv, train, settings=("zero_shot",), n=min(n_fit, len(train)),
                                  seed=spec.seed_of("validation"), template=template, batch_size=batch_size)
    layer = sweep.best_layer("zero_shot")
    builder = SteeringVector.from_function_vector(fv, layer=layer).query_edits()  # at the query: engine route
    return builder, sweep.accuracy()[0], {"layer": layer, "heads": [list(h) for h in heads]}


def _task_vector(*, model: ModelLike, train: Task, n_fit: int, n_shots: int, spec: PromptSpec,
                 template: Any, batch_size: int) -> tuple[Any, Any, dict[str, Any]]:
    tv = task_vector(model, train, n=n_fit, n_shots=n_shots, seed=spec.seed_of("fit"), template=template,
                     batch_size=batch_size)
    sweep = task_vector_sweep(model, tv, train, n=min(n_fit, len(train)), seed=spec.seed_of("validation"), template=template,
                              batch_size=batch_size)
    layer = sweep.best_layer("zero_shot")
    builder = SteeringVector.from_task_vector(tv, layer=layer).query_edits()
    return builder, sweep.accuracy()[0], {"layer": layer}


def _icv(*, model: ModelLike, train: Task, strengths: Sequence[float], contrast: Any, direction: Any,
         n_fit: int, n_shots: int, spec: PromptSpec, template: Any, batch_size: int) -> tuple[Any, Any, dict[str, Any]]:
    if not strengths:
        raise TlensICLError("icv_strengths must not be empty.")
    icv = in_context_vector(model, train, n=n_fit, contrast=contrast, direction=direction, n_shots=n_shots,
                            seed=spec.seed_of("fit"), template=template, batch_size=batch_size)
    sel = _selection_prompts(train, model, n_fit, spec)
    steering = [SteeringVector.from_in_context_vector(icv, coeff=s).check_model(model) for s in strengths]
    scores = [evaluate_intervention(model, sel, lambda sub, sv=sv: sv.as_hooks(),
                                    batch_size=batch_size)[0].mean() for sv in steering]
    i = int(argbest(torch.stack(scores)))  # near-ties: the first strength listed
    return (lambda sub: steering[i].as_hooks()), None, {"strength": float(strengths[i])}


def _soft(*, model: ModelLike, train: Task, steps: int, lr: float, n_fit: int, n_shots: int,
          spec: PromptSpec, template: Any, batch_size: int) -> tuple[Any, Any, dict[str, Any]]:
    si = soft_injection(model, train, n_mean=n_fit, n_shots=n_shots, n_fit=n_fit, steps=steps, lr=lr,
                        seed=spec.seed_of("fit"), template=template, batch_size=batch_size)
    builder = SteeringVector.from_soft_injection(si).query_edits()
    final = float(si.losses[-1]) if si.losses.numel() else math.nan
    return builder, None, {"final_loss": final, "mean_alpha": float(si.alpha.mean())}
