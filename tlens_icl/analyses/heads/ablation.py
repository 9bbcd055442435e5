"""Ablation with exclusion (Yin & Steinhardt, "Which Attention Heads Matter for In-Context Learning?", ICML 2025).

For each ranking of heads (default: function-vector heads by Todd et al.'s AIE and induction heads by
induction score) and each ``k``, the top-``k`` heads are mean-ablated and few-shot ICL accuracy over
a set of tasks and the token-loss ICL score are measured; ``k`` random heads (several seeds) are
the control. With ``exclude=p`` the top ``p`` fraction of the *other* ranking's heads is removed
from the candidates first, so "FV heads" never include a strong induction head and vice versa.

Mean ablation (``engine.ablation``): a head's ``hook_z`` is replaced by its mean over the evaluated
data - the few-shot prompts of all tasks pooled (so the mean carries no task identity) for accuracy,
the loss sequences for the loss score - at every real token but BOS (``positions="all"``, default)
or only at the query position (``positions="query"``, as Yin & Steinhardt's accuracy runs). Sign
conventions: accuracy is top-1 of an accepted answer's first token; the loss score is
``loss[late] - loss[early]`` (negative = in-context learning; ablation that hurts ICL raises it).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from numbers import Integral, Real
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from tlens_icl._typing import Head, ModelLike
from tlens_icl._validate import checked
from tlens_icl.analyses.heads.scores import HeadScoresResult, top_heads_of
from tlens_icl.analyses.heads.token_loss import (
    DataKind,
    LossData,
    loss_data,
)
from tlens_icl.engine.ablation import (
    Positions,
    ablated_query_scores,
    ablation_positions,
    ablation_sweep,
    mean_head_z,
    query_reduce,
)
from tlens_icl.engine.scoring import accepted_top1
from tlens_icl.errors import TlensICLError
from tlens_icl.models.adapter import handle
from tlens_icl.prompts.batch import PromptBatch
from tlens_icl.prompts.spec import PromptSpec, protocol_defaults, spec_of
from tlens_icl.prompts.templates import PromptTemplate
from tlens_icl.results.base import Result, require_same_model, run_info
from tlens_icl.results.heads import bootstrap_ci
from tlens_icl.tasks import Task

RANDOM = "random"


def score_map(scores: Any, name: str = "scores") -> Float[Tensor, "layer head"]:
    """A ``[layer, head]`` map from a tensor, a :class:`HeadScoresResult` (its induction score) or a result
    whose ``.mean()`` is one (an ``IndirectEffectResult``: the AIE). NaN = not measured (never selected)."""
    if isinstance(scores, HeadScoresResult):
        scores = scores.induction()
    elif hasattr(scores, "mean") and not isinstance(scores, Tensor):
        scores = scores.mean()
    if not isinstance(scores, Tensor) or scores.dim() != 2:
        raise TlensICLError(f"{name} must be a [layer, head] tensor, a HeadScoresResult or a result with .mean().")
    return scores.detach().float().cpu()


def resolve_k(k: int | float, n_total: int) -> int:
    """``k`` as a head count: an int is a count, a float in (0, 1) a fraction of all heads (rounded, at least 1).

    A float outside (0, 1) is refused (``1.0`` is "all heads" or "one head" depending on the reader), as is a
    count outside ``[0, n_total]``.
    """
    if isinstance(k, Real) and not isinstance(k, (bool, Integral)):
        if not 0.0 < float(k) < 1.0:
            raise TlensICLError(f"k={k!r}: a float k is a fraction of all heads, in (0, 1); give a head count as an "
                                "int (e.g. 1, not 1.0).")
        return max(1, round(float(k) * n_total))
    if not isinstance(k, Integral) or isinstance(k, bool) or not 0 <= int(k) <= n_total:
        raise TlensICLError(f"k must be a count in [0, {n_total}] or a fraction in (0, 1), got {k!r}.")
    return int(k)


def select_heads(scores: Float[Tensor, "layer head"], k: int | float, *,
                 exclude_scores: Float[Tensor, "layer head"] | None = None, exclude: float = 0.0) -> list[Head]:
    """Top-``k`` heads by ``scores`` after removing the top ``exclude`` fraction of ``exclude_scores``' heads.

    The excluded count is ``floor(exclude * n_heads_total)`` (Yin & Steinhardt: 2 % of the heads).
    """
    n_total = scores.numel()
    count = resolve_k(k, n_total)
    if not 0.0 <= exclude < 1.0:
        raise TlensICLError(f"exclude must be a fraction in [0, 1), got {exclude}.")
    banned: set[Head] = set()
    if exclude > 0:
        if exclude_scores is None:
            raise TlensICLError("exclude > 0 needs exclude_scores (the other ranking).")
        if exclude_scores.shape != scores.shape:
            raise TlensICLError(f"exclude_scores {tuple(exclude_scores.shape)} != scores {tuple(scores.shape)}.")
        banned = set(top_heads_of(exclude_scores, int(exclude * n_total)))
    ranked = [h for h in top_heads_of(scores, n_total) if h not in banned]
    if count > len(ranked):
        raise TlensICLError(f"k={count} heads requested but only {len(ranked)} remain after exclusion.")
    return ranked[:count]


def random_heads(n_layers: int, n_heads: int, k: int, seed: int) -> list[Head]:
    """``k`` distinct heads drawn uniformly (seeded; another seed draws another set)."""
    cells = [Head(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    if not (isinstance(k, Integral) and not isinstance(k, bool) and 0 <= k <= len(cells)):
        raise TlensICLError(f"random_heads: k must be an int in [0, {len(cells)}] (the model's {n_layers} x {n_heads} "
                            f"heads), got {k!r}.")
    return random.Random(f"tlens_icl.random_heads/{seed}").sample(cells, k)


@dataclass(frozen=True)
class HeadAblationResult(Result):
    """Few-shot accuracy and token-loss score with the top-``k`` heads of each ranking mean-ablated.

    ``correct[m, j, s, t, i]``: 1.0 if example ``i`` of task ``tasks[t]`` is answered (top-1) with the
    heads of method ``methods[m]`` at ``ks[j]`` (seed ``s``; only the random control has several seeds,
    the other methods fill seed 0 and NaN elsewhere) ablated. ``loss[m, j, s, r]``: the loss score
    ``loss[late] - loss[early]`` of loss row ``r`` (negative = ICL; NaN when not measured).
    ``heads[method][j][s]``: the ablated heads as ``"L{l}H{h}"`` strings.
    """

    correct: Float[Tensor, "method k seed task example"]
    loss: Float[Tensor, "method k seed row"]
    methods: tuple[str, ...]
    ks: tuple[int, ...]
    tasks: tuple[str, ...]
    heads: dict[str, Any]
    n_shots: int
    exclude: float
    positions: str
    info: dict[str, Any]

    title = "Head ablation"
    measured = ("correct",)
    choices = {"positions": ("all", "query")}

    def _series(self, values: Tensor, method: str, seeds_first: bool = True) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(mean [k], CI low [k], CI high [k], per-seed means [k, seed]) of per-example ``values``."""
        m = self.methods.index(method)
        v = values[m]  # [k, seed, *group, example]
        if bool(v.isnan().all()):
            nan = torch.full((v.shape[0],), float("nan"))
            return nan, nan, nan, torch.full(v.shape[:2], float("nan"))
        seeds = v.flatten(2).nanmean(-1) if v.dim() > 3 else v.nanmean(-1)
        pooled = v.nanmean(1)  # seed mean per example: [k, *group, example]
        if pooled.dim() == 2:
            pooled = pooled[:, None]
        stacked = pooled.transpose(0, 1)  # [group, k, example]
        lo, hi = bootstrap_ci(stacked)
        return stacked.nanmean(-1).mean(0), lo, hi, seeds

    def accuracy(self, method: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Mean accuracy over tasks per k, its 95 % bootstrap CI (examples resampled within tasks; random:
        seed-averaged first), and each seed's accuracy ``[k, seed]``."""
        return self._series(self.correct, method)

    def loss_score(self, method: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Like :meth:`accuracy` for the token-loss score (rows resampled)."""
        return self._series(self.loss, method)

    def to_dataframe(self) -> Any:
        import pandas as pd

        rows = []
        for method in self.methods:
            acc, alo, ahi, _ = self.accuracy(method)
            los, llo, lhi, _ = self.loss_score(method)
            for j, k in enumerate(self.ks):
                rows.append({"method": method, "k": k, "accuracy": float(acc[j]), "acc_ci_low": float(alo[j]),
                             "acc_ci_high": float(ahi[j]), "loss_score": float(los[j]), "loss_ci_low": float(llo[j]),
                             "loss_ci_high": float(lhi[j]), "heads": " ".join(self.heads[method][j][0])})
        return pd.DataFrame(rows)

    def summary(self) -> str:
        df = self.to_dataframe()
        last = df[df.k == max(self.ks)]
        parts = ", ".join(f"{r.method} {r.accuracy:.2f}" for r in last.itertuples())
        base = float(df[df.k == min(self.ks)].accuracy.iloc[0])
        return (f"{self.title} over {len(self.tasks)} task(s), {self.n_shots}-shot, exclude={self.exclude}, "
                f"positions={self.positions}: accuracy {base:.2f} at k={min(self.ks)} -> at k={max(self.ks)}: {parts}")

    def plot(self, ax: Any = None) -> Any:
        """Accuracy and loss score vs k, one line per method with its 95 % CI; random seeds as dots."""
        from tlens_icl.viz.heads import ablation_curves

        acc = {m: self.accuracy(m) for m in self.methods}
        measured = not bool(self.loss.isnan().all())
        los = {m: self.loss_score(m) for m in self.methods} if measured else None
        n_total = int(self.info.get("n_layers", 0)) * int(self.info.get("n_heads", 0))
        return ablation_curves(list(self.ks), acc, los, n_total=n_total, random_name=RANDOM,
                               title=f"{self.info.get('model', '')}: ablating top-k heads "
                                     f"({self.n_shots}-shot, {len(self.tasks)} tasks"
                                     + (f", excl. top {self.exclude:.0%} of the other" if self.exclude else "") + ")",
                               axes=ax)


def _pooled_means(model: ModelLike, batches: Sequence[Any], positions: Positions, batch_size: int) -> Tensor:
    total, count = None, 0
    for b in batches:
        where = ablation_positions(b, positions)
        n = int(where.sum())
        part = mean_head_z(model, b.tokens, where, batch_size=batch_size).double() * n
        total, count = (part if total is None else total + part), count + n
    return (total / count).float()


@checked
def head_ablation(
    model: ModelLike, tasks: PromptSpec | Task | str | Sequence[Task | str] | PromptBatch | Sequence[PromptBatch],
    rankings: Mapping[str, Any], *,
    ks: Sequence[int | float] = (0, 1, 2, 4, 8), exclude: float = 0.0, n_random: int = 3, n: int = 32,
    n_shots: int = 5, seed: int = 0, positions: Positions = "all", loss: bool = True,
    loss_data_kind: DataKind | LossData = "auto", loss_n: int = 16, loss_length: int = 128,
    template: PromptTemplate | str | None = None, batch_size: int = 16, method: Literal["auto", "naive"] = "auto",
    progress: bool | None = None,
) -> HeadAblationResult:
    """Mean-ablate the top-``k`` heads of each ranking (and ``k`` random heads) and measure ICL.

    Args:
        tasks: the few-shot tasks (accuracy is averaged over them) or a
            :class:`~tlens_icl.prompts.spec.PromptSpec`: each task's ``n`` prompts are the spec's ``clean``
            stream (``make_prompts(model, task, n=n, n_shots=n_shots, seed=seed)``). At the data level: the
            prompt batches themselves (one per task, of one size; ``n``, ``n_shots`` and ``template`` then stay at
            their defaults, ``seed`` draws only the random-heads control and the loss rows, and ``loss`` needs
            ``loss_data_kind`` to be a ``LossData`` or ``"text"``).
        rankings: name -> ``[layer, head]`` score (higher = ablate first), e.g.
            ``{"FV": indirect_effect(...), "induction": head_scores(model)}``.
        ks: head counts (int) or fractions of all heads (float in (0, 1)); 0 = the unablated run.
        exclude: with two rankings, drop the top ``exclude`` fraction of the other ranking's heads from
            each ranking's candidates (Yin & Steinhardt: 0.02).
        n_random: seeds of the random-heads control (0 = no control).
        positions: ``"all"`` (every real token but BOS) or ``"query"`` (the query position only).
        loss: also measure the token-loss score (``loss_data_kind``: ``"auto"``/``"text"``/``"episodes"`` with
            ``loss_n`` rows of ``loss_length``, or a :class:`~tlens_icl.analyses.heads.token_loss.LossData`).
        method: ``"auto"`` (each chunk's clean run is shared; a head set re-runs only the blocks from its first
            ablated layer, or only query copies with ``positions="query"``) or ``"naive"`` (every set in full).
    """
    given = isinstance(tasks, PromptBatch) or (isinstance(tasks, Sequence) and not isinstance(tasks, str) and tasks
                                                and all(isinstance(t, PromptBatch) for t in tasks))
    if given:
        # seed still draws the random-heads control and the loss rows; n, n_shots, template are the prompts'
        protocol_defaults(head_ablation, n=n, n_shots=n_shots, template=template)
        batches = [tasks] if isinstance(tasks, PromptBatch) else list(tasks)
        task_list: list[Any] = [b.task or f"batch {i}" for i, b in enumerate(batches)]
        spec = None
    else:
        spec = spec_of(tasks, head_ablation, n=n, n_shots=n_shots, seed=seed,
                       template=template)
        task_list = list(spec.tasks)
        n, n_shots, seed, template = spec.n, spec.n_shots, spec.seed, spec.template
    if not isinstance(rankings, Mapping) or not rankings:
        raise TlensICLError("head_ablation(): rankings must be a non-empty dict name -> [layer, head] scores (e.g. "
                            f"{{'FV': indirect_effect(...)}}), got {rankings!r}.")
    if isinstance(ks, (str, bytes)) or not isinstance(ks, Sequence) or not ks:
        raise TlensICLError(f"head_ablation(): ks must be a non-empty list of head counts, got {ks!r}.")
    maps = {name: score_map(s, name) for name, s in rankings.items()}
    shape = (model.cfg.n_layers, model.cfg.n_heads)
    for name, m in maps.items():
        if tuple(m.shape) != shape:
            raise TlensICLError(f"Ranking {name!r} has shape {tuple(m.shape)}; the model has {shape} heads.")
    if RANDOM in maps:
        raise TlensICLError(f"{RANDOM!r} is the name of the control; rename that ranking.")
    if exclude > 0 and len(maps) != 2:
        raise TlensICLError("exclude needs exactly two rankings (each excludes the other's top heads).")
    n_total = shape[0] * shape[1]
    counts = tuple(resolve_k(k, n_total) for k in ks)
    if len(set(counts)) != len(counts):
        raise TlensICLError(f"ks {tuple(ks)} give repeated head counts {counts}.")
    names = list(maps)
    plan: dict[str, list[list[list[Head]]]] = {}
    for name in names:
        other = maps[names[1 - names.index(name)]] if exclude > 0 else None
        plan[name] = [[select_heads(maps[name], c, exclude_scores=other, exclude=exclude)] for c in counts]
    if n_random:
        plan[RANDOM] = [[random_heads(*shape, c, seed * 1000 + s) for s in range(n_random)] for c in counts]
    methods = tuple(plan)
    n_seeds = max(1, n_random)
    model = handle(model)  # resolved once: every forward below reads the same facts
    for name, s in rankings.items():
        require_same_model(model, s, f"ranking {name!r}", where="head_ablation(): ")

    # Every prompt and loss row is built (and so validated) before the first forward pass.
    if spec is not None:
        batches = [spec.prompts(model, "clean", task=t) for t in task_list]
    if len({len(b) for b in batches}) != 1:
        raise TlensICLError(f"head_ablation(): the prompt batches must be of one size, got {[len(b) for b in batches]}.")
    n = len(batches[0])
    ldata = loss_data(model, loss_data_kind, tasks=task_list, n=loss_n, length=loss_length, seed=seed,
                      template=template) if loss else None
    means = _pooled_means(model, batches, positions, batch_size)

    correct = torch.full((len(methods), len(counts), n_seeds, len(task_list), n), float("nan"))
    n_rows = len(ldata.tokens) if ldata is not None else 1
    losses = torch.full((len(methods), len(counts), n_seeds, n_rows), float("nan"))
    from tlens_icl.engine.progress import progress_bar

    jobs = [(m, j, s) for m, name in enumerate(methods) for j in range(len(counts)) for s in range(len(plan[name][j]))]
    # Every distinct head set is run once; all sets of a prompt batch share one engine call per batch.
    sets = list(dict.fromkeys(frozenset(plan[methods[m]][j][s]) for m, j, s in jobs))
    head_lists = [sorted(k) for k in sets]
    per_task = []
    for b in progress_bar(batches, enabled=progress, desc="ablating (tasks)"):
        def top1(logits: Tensor, rows: Tensor, b: Any = b) -> Tensor:
            return accepted_top1(logits, tuple(b.accepted[int(i)] for i in rows))

        if positions == "query":  # one base run; each set recomputes only query copies from its first layer
            per_task.append(ablated_query_scores(model, b, head_lists, means, top1, batch_size=batch_size,
                                                 method=method).values)
        else:  # one clean run per chunk; each set re-runs only the blocks from its first ablated layer
            per_task.append(torch.stack(ablation_sweep(model, b.tokens, b.query_pos, ablation_positions(b, positions),
                                                       head_lists, means, query_reduce(b, top1), batch_size=batch_size,
                                                       method=method)))
    if ldata is not None:
        loss_scores = ldata.ablation_scores(model, head_lists, batch_size=batch_size, method=method)
    for i, key in enumerate(sets):
        acc = torch.stack([v[i] for v in per_task])  # [task, example]
        ls = loss_scores[i] if ldata is not None else torch.full((1,), float("nan"))
        for m, j, s in jobs:
            if frozenset(plan[methods[m]][j][s]) == key:
                correct[m, j, s], losses[m, j, s] = acc, ls
    heads_json = {name: [[[str(h) for h in hs] for hs in per_k] for per_k in plan[name]] for name in methods}
    return HeadAblationResult(
        correct=correct, loss=losses, methods=methods, ks=counts, tasks=tuple(b if isinstance(b, str) else b.name
                                                                             for b in task_list),
        heads=heads_json, n_shots=int(batches[0].demo_index[0].max()) + 1 if given else n_shots, exclude=exclude, positions=positions,
        info=run_info(model, seed=seed, n=n, **({"spec": spec.info()} if spec is not None else {}), ks_requested=list(ks), n_random=n_random, loss=loss,
                      loss_data=ldata.kind if ldata is not None else None,
                      loss_window=list(ldata.window) if ldata is not None else None, template=getattr(template, "name", template),
                      forwards=len(sets), method=method),
    )


__all__ = ["HeadAblationResult", "head_ablation", "random_heads", "resolve_k", "score_map", "select_heads"]
