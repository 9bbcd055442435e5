"""Causal mediation of in-context learning by attention heads (Todd et al., "Function Vectors", ICLR 2024).

For each task: the task-conditioned mean ``hook_z`` of every head at the query position over
``n_mean`` clean ICL prompts; then for each of ``n_corrupted`` corrupted prompts (default: shuffled
labels) and each head, that head's query-position ``hook_z`` is replaced by the mean and the gain in
P(first answer token) is recorded:

    CIE(head | prompt) = P(answer | corrupted, z_head := mean) - P(answer | corrupted)

The average indirect effect (AIE) averages CIEs over prompts and then over tasks ("universal" heads).
Positive AIE = the head's mean activation carries the task and restores the answer. The exact CIEs
come from the engine's fast routes (:mod:`tlens_icl.engine.query`: the corrupted run's keys/values reused,
only query copies recomputed from the patched layer on), equal to one-forward-per-head patching.

Pitfall: shuffled labels are uninformative when the output *type* reveals the task (the corrupted
prompt is still solved, every AIE is ~0). Use ``corruption="zero_shot"`` or ``"other_task_labels"``
for such tasks; tasks that share an output type (e.g. the bitwise operations) work with shuffled labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from tlens_icl._ties import argbest
from tlens_icl._typing import Head, ModelLike
from tlens_icl._validate import checked
from tlens_icl.analyses.causal.attribution import attribution_at_query, require_gradient
from tlens_icl.analyses.causal.patching import scorer
from tlens_icl.engine import hooks
from tlens_icl.engine import query as _engine
from tlens_icl.engine.capture import Custom, capture, query_z
from tlens_icl.engine.runs import chunks, query_logits
from tlens_icl.engine.scoring import METRICS, Metric, get_metric
from tlens_icl.errors import EmptyTaskError, TlensICLError
from tlens_icl.models.adapter import ModelHandle, handle
from tlens_icl.prompts.batch import ROLES, PromptBatch
from tlens_icl.prompts.pairs import CORRUPTIONS, PromptPairBatch
from tlens_icl.prompts.spec import PromptSpec, protocol_defaults, spec_of
from tlens_icl.prompts.templates import PromptTemplate
from tlens_icl.results.base import Result, run_info
from tlens_icl.results.checkpoint import digest, open_checkpoint
from tlens_icl.results.heads import HeadEffectViews
from tlens_icl.tasks import Task
from tlens_icl.viz.html import HTMLView


#: exact routes (auto / fast / naive) or the first-order estimate.
Method = Literal["auto", "fast", "naive", "attribution"]


@dataclass(frozen=True)
class IndirectEffectResult(HeadEffectViews, Result):
    """Per-prompt causal indirect effects of every head, per task.

    ``effects[t, l, h, i]`` = CIE of head ``(l, h)`` on corrupted prompt ``i`` of task ``tasks[t]``
    (``metric(patched) - metric(corrupted)``; positive = restores the answer). ``mean_z[t]`` is the
    task-conditioned mean ``hook_z`` at the query position (the function-vector ingredient).
    ``clean_metric``/``corrupted_metric`` are the unpatched metrics of the paired prompts.
    NaN marks what was not measured: heads outside ``heads=``, and, with ``filter_correct=True``, the
    slots after a task's kept prompts (tasks keep different numbers; ``info["n_kept"]``).
    """

    effects: Float[Tensor, "task layer head example"]
    mean_z: Float[Tensor, "task layer head d_head"]
    clean_metric: Float[Tensor, "task example"]
    corrupted_metric: Float[Tensor, "task example"]
    tasks: tuple[str, ...]
    metric: str
    corruption: str
    n_shots: int
    method: str
    info: dict[str, Any]

    title = "Average indirect effect"
    measured = ("effects",)
    finite = ("mean_z",)
    choices = {"metric": tuple(METRICS), "corruption": tuple(CORRUPTIONS)}
    same_as_info = ("tasks", "metric", "corruption", "n_shots")
    effect_label = "AIE"

    def _stacked(self) -> tuple[Tensor, tuple[str, ...]]:
        return self.effects, self.tasks

    def _n_prompts(self) -> str:
        n = (~self.clean_metric.isnan()).sum(-1).tolist()
        return f"n={n[0]}" if len(set(n)) == 1 else f"n={min(n)}-{max(n)}"

    def _plot_context(self, task: str | None = None) -> str:
        tasks = f"tasks {', '.join(self.tasks)}; " if task is None and 1 < len(self.tasks) <= 8 else ""
        return (f"{tasks}corruption {self.corruption}, {self.n_shots} shots, metric {self.metric}; "
                f"{self._n_prompts()} corrupted prompts per task")

    def summary(self) -> str:
        top = ", ".join(f"{h} {float(self.mean()[h]):.3g}" for h in self.top_heads(5))
        return (f"{self.title} [{self.method}] of {self.model_name} over {len(self.tasks)} task(s) {list(self.tasks)}, "
                f"corruption={self.corruption}, metric={self.metric}, {self._n_prompts()} prompts per task; "
                f"clean {float(self.clean_metric.nanmean()):.3g}, corrupted {float(self.corrupted_metric.nanmean()):.3g}; "
                f"top heads (largest first): {top}")


@checked
def indirect_effect(
    model: ModelLike, tasks: PromptSpec | Task | str | Sequence[Task | str] | PromptPairBatch | Sequence[PromptPairBatch],
    *, n: int = 25, n_mean: int = 100, n_shots: int = 10, corruption: str = "shuffled_labels",
    seed: int = 0, metric: str | Metric = "prob", method: Method = "auto",
    heads: Sequence[Head | tuple[int, int]] | None = None, filter_correct: bool = False,
    other_task: Task | str | None = None, template: PromptTemplate | str | None = None, batch_size: int = 16,
    progress: bool | None = None, mean_z: Float[Tensor, "*task layer head d_head"] | None = None,
    mean_prompts: PromptBatch | Sequence[PromptBatch] | None = None, checkpoint: str | Path | None = None,
) -> IndirectEffectResult:
    """Todd et al.'s causal indirect effect of every attention head, for one or several tasks.

    Args:
        tasks: what to measure, at one of two levels. *Task level*: a task (name), several (their AIE mean is
            the "universal" heads), or a :class:`~tlens_icl.prompts.spec.PromptSpec`; the pairs are the spec's
            ``clean`` stream (``make_prompt_pairs(task, model, n=n, n_shots=n_shots,
            corruption=corruption, seed=seed)``) and the mean prompts its ``mean`` stream (``n_mean`` prompts,
            a seed derived from ``(seed, "mean")``, independent of every other stream). *Data level*: a
            :class:`~tlens_icl.prompts.pairs.PromptPairBatch` (or one per task) with ``mean_prompts=`` (one
            batch per task) or ``mean_z=``; the protocol arguments are then unused and must stay at their defaults.
        n: clean/corrupted pairs per task (the ``clean`` stream): the corrupted prompts patched.
        n_mean: clean prompts averaged for the mean activation (the ``mean`` stream).
        corruption: see :data:`~tlens_icl.prompts.pairs.CORRUPTIONS`; ``zero_shot`` works (query position only).
        metric: ``prob`` (Todd et al.), ``logprob``, ``rank`` or ``top1`` of the first answer token.
        method: ``auto``/``fast``/``naive`` are exact (see :func:`~tlens_icl.analyses.causal.patching.head_patching`);
            ``attribution`` is the first-order estimate from one forward + backward.
        heads: patch only these heads (default all); the others are NaN. ``fast`` is then cheaper.
        filter_correct: Todd et al.'s filter: the mean uses only clean prompts whose top-1 prediction is
            the first answer token, and only corrupted prompts whose clean counterpart is answered so are
            patched. Counts kept go to ``info["n_kept"]`` / ``info["n_mean_kept"]`` (kept pair indices:
            ``info["kept"]``); raises :class:`~tlens_icl.errors.EmptyTaskError` if a task keeps none.
        other_task: label source for ``corruption="other_task_labels"``.
        mean_z: the mean activations to patch in, ``[layer, head, d_head]`` (one task) or
            ``[task, layer, head, d_head]``, instead of running mean prompts - e.g.
            ``mean_head_activations(model, batch, cache=cache)`` from a ``run_with_cache`` you already have.
            Not combinable with ``filter_correct`` (filter those prompts yourself).
        mean_prompts: at the data level, the clean prompts whose mean activation is patched in (one batch per task).
        checkpoint: a folder that makes the call resumable (long scans on big models): each task's mean
            activations and each chunk of ``batch_size`` corrupted prompts are written there when done; the
            same call again loads them instead of recomputing, so an interrupted run loses at most one
            chunk and finishes bit-identical to an uninterrupted one (:mod:`tlens_icl.results.checkpoint`).

    Returns:
        :class:`IndirectEffectResult` (positive = the head's mean activation restores the answer); ``.mean()``
        is the AIE ``[layer, head]``, ``.top_heads(k)``; ``info["spec"]`` is the protocol (task level).
    """
    if isinstance(tasks, PromptPairBatch) or (isinstance(tasks, Sequence) and not isinstance(tasks, str)
                                              and tasks and all(isinstance(t, PromptPairBatch) for t in tasks)):
        protocol_defaults(indirect_effect, n_mean=n_mean, n=n,
                          n_shots=n_shots, corruption=corruption, seed=seed, other_task=other_task, template=template)
        pair_sets = [tasks] if isinstance(tasks, PromptPairBatch) else list(tasks)
        means = [mean_prompts] if isinstance(mean_prompts, PromptBatch) else mean_prompts
        return _indirect_effect(model, pair_sets, means, mean_z, metric=metric, method=method, heads=heads,
                                filter_correct=filter_correct, batch_size=batch_size, progress=progress,
                                checkpoint=checkpoint, info={})
    if mean_prompts is not None:
        raise TlensICLError("indirect_effect(): mean_prompts=... goes with pairs (the data level); with tasks or a "
                            "PromptSpec the mean prompts are the spec's 'mean' stream.")
    spec = spec_of(tasks, indirect_effect, n=n, n_shots=n_shots,
                   corruption=corruption, seed=seed, other_task=other_task, template=template)
    model = handle(model)  # resolved once, for the prompts and every forward
    given = mean_z is not None
    # Build (and so validate) every prompt before the first forward pass.
    pair_sets = [spec.pairs(model, task=t) for t in spec.tasks]
    means = None if given else [spec.prompts(model, "mean", task=t, n=n_mean) for t in spec.tasks]
    return _indirect_effect(model, pair_sets, means, mean_z, metric=metric, method=method, heads=heads,
                            filter_correct=filter_correct, batch_size=batch_size, progress=progress,
                            checkpoint=checkpoint, info={"spec": spec.info(**({} if given else {"mean": n_mean}))})


def _indirect_effect(model: ModelLike, pair_sets: Sequence[PromptPairBatch], mean_prompts: Sequence[PromptBatch] | None,
                     mean_z: Tensor | None, *, metric: str | Metric, method: str,
                     heads: Sequence[Head | tuple[int, int]] | None, filter_correct: bool, batch_size: int,
                     progress: bool | None, checkpoint: str | Path | None, info: dict[str, Any]) -> IndirectEffectResult:
    """The data-level core: CIEs of ``heads`` on each task's pairs, patching the mean of its mean prompts (or
    ``mean_z``)."""
    if not pair_sets:
        raise TlensICLError("indirect_effect needs at least one task (or one PromptPairBatch).")
    given = _given_means(model, mean_z, len(pair_sets), filter_correct)
    model = handle(model)  # resolved once: every forward below reads the same facts
    cells = _engine.resolve_heads(model, heads)
    if given is None:
        if mean_prompts is None or len(mean_prompts) != len(pair_sets):
            raise TlensICLError("indirect_effect(): with pairs, give mean_prompts= (one PromptBatch per pair batch) "
                                f"or mean_z=; got {0 if mean_prompts is None else len(mean_prompts)} mean batch(es) "
                                f"for {len(pair_sets)} pair batch(es).")
        prompts_of: list[PromptBatch | None] = list(mean_prompts)
    else:
        prompts_of = [None] * len(pair_sets)
    metric_name = get_metric(metric)[0]
    if method == "attribution":
        require_gradient(metric_name)
    # each task's scorer over all its pairs, so every task's metric is validated before the first forward pass
    scorers = [scorer(metric, p, model.cfg.d_vocab)[1] for p in pair_sets]
    first_pairs = pair_sets[0]
    ck = open_checkpoint(checkpoint, "indirect_effect", dict(
        prompts=digest(*(t for b in prompts_of if b is not None for t in (b.tokens, b.query_pos)),
                       *(t for p in pair_sets for b in (p.clean, p.corrupted) for t in (b.tokens, b.query_pos, b.answer_tokens)),
                       *([given] if given is not None else [])),
        tasks=[p.task for p in pair_sets], metric=metric_name, method=method, filter_correct=filter_correct,
        heads=[str(h) for h in cells], batch_size=batch_size, spec=info.get("spec"),
        corruption=first_pairs.corruption, template=first_pairs.template,
        mean_z="given" if given is not None else "computed"), model)
    effects, means, clean, corrupted, used, routes = [], [], [], [], set(), set()
    kept: dict[str, list[int]] = {}
    n_mean_kept: dict[str, int] = {}
    for t, (prompts, pairs) in enumerate(zip(prompts_of, pair_sets)):
        # Units of work (resumable with checkpoint=): the task's mean and clean run, then chunks of corrupted prompts.
        score = scorers[t]
        first = ck.unit(f"{t}/mean", lambda: _mean_and_clean(model, prompts, None if given is None else given[t], pairs,
                                                             score, filter_correct, batch_size))
        if filter_correct:
            keep = first["keep"]
            pairs, score = pairs.select(keep), _on_rows(score, keep)
            kept[pairs.task], n_mean_kept[pairs.task] = keep.tolist(), first["n_mean_kept"]
        spans = [slice(None)] if method == "attribution" else list(chunks(len(pairs), batch_size))
        parts = [ck.unit(f"{t}/patch/{c}", lambda sl=sl: _patch_chunk(model, pairs, sl, first["mean_z"], cells, score,
                                                                         method, batch_size, progress))
                 for c, sl in enumerate(spans)]
        used.update("attribution" if p["route"] == "attribution" else "naive" if p["route"] == "naive" else "fast"
                    for p in parts)
        routes.update(p["route"] for p in parts if p["route"] != "attribution")
        effects.append(_engine.head_grid(model, cells, torch.cat([p["effects"] for p in parts], 1)))
        means.append(first["mean_z"])
        corrupted.append(torch.cat([p["baseline"] for p in parts]))
        clean.append(first["clean_metric"])
    names = tuple(p.task for p in pair_sets)
    filtered = {"n_kept": {t: len(k) for t, k in kept.items()}, "n_mean_kept": n_mean_kept, "kept": kept}
    spec = info.get("spec") or {}
    return IndirectEffectResult(
        effects=_stack_padded(effects), mean_z=torch.stack(means), clean_metric=_stack_padded(clean),
        corrupted_metric=_stack_padded(corrupted), tasks=names, metric=metric_name, corruption=first_pairs.corruption,
        n_shots=first_pairs.n_shots, method="+".join(sorted(used)),
        info=run_info(model, tasks=names, corruption=first_pairs.corruption, seed=spec.get("seed", first_pairs.seed),
                      n_shots=first_pairs.n_shots, n_mean=(spec.get("sizes") or {}).get("mean"),
                      n_corrupted=len(first_pairs), metric=metric_name, template=first_pairs.template,
                      other_task=spec.get("other_task"),
                      heads=None if heads is None else [str(h) for h in cells], filter_correct=filter_correct,
                      engine="+".join(sorted(routes)) or None,
                      mean_z="given" if given is not None else "computed",
                      **info, **(filtered if filter_correct else {})),
    )


def _on_rows(score: Any, keep: Tensor) -> Any:
    """``score`` (over all of a task's pairs) for the pairs ``keep`` selects: row ``i`` is pair ``keep[i]``."""
    def kept(logits: Tensor, rows: Tensor | slice) -> Tensor:
        return score(logits, keep[rows])

    return kept


def _mean_and_clean(model: ModelHandle, prompts: PromptBatch | None, given: Tensor | None, pairs: Any,
                    score: Any, filter_correct: bool, batch_size: int) -> dict[str, Any]:
    """One task's mean query ``hook_z`` (over the clean mean prompts, or ``given``) and its clean pairs' metric
    (one unit of work; ``score`` is the task's scorer over all its pairs)."""
    if prompts is None:
        z, mean_logits = given[None], None  # type: ignore[index]
    else:  # without the filter, no unembedding is needed
        z, mean_logits = query_z(model, prompts.tokens, prompts.query_pos, batch_size=batch_size, logits=filter_correct)
    clean_logits = query_logits(model, pairs.clean, batch_size=batch_size)
    out: dict[str, Any] = {}
    rows: Tensor | slice = slice(None)
    if filter_correct:
        z = z[_answered(mean_logits, prompts, "clean mean prompts")]  # type: ignore[arg-type]
        rows = _answered(clean_logits, pairs.clean, "clean counterparts of the corrupted prompts")
        clean_logits = clean_logits[rows]
        out.update(keep=rows, n_mean_kept=len(z))
    out.update(mean_z=z.mean(0), clean_metric=score(clean_logits, rows))
    return out


def _patch_chunk(model: ModelHandle, pairs: Any, sl: slice, mean_z: Tensor, cells: Sequence[Head], score: Any,
                 method: str, batch_size: int, progress: bool | None) -> dict[str, Any]:
    """CIEs of ``cells`` on the corrupted prompts ``pairs[sl]`` (one unit): effects ``[cell, row]``, baseline metric.

    ``score`` is the task's scorer over all its pairs (whether a contrast answer is used is a property of the
    task's pairs, not of a chunk).
    """
    if method == "attribution":
        vals = mean_z.float().expand(len(pairs), -1, -1, -1)
        eff, base = attribution_at_query(model, pairs.corrupted, vals, score, batch_size=batch_size, progress=progress)
        return {"effects": eff[[c.layer for c in cells], [c.head for c in cells]], "baseline": base,
                "route": "attribution"}
    sub = pairs.select(sl)
    start = sl.start or 0
    vals = mean_z.expand(len(sub), -1, -1, -1)

    def chunk_score(logits: Tensor, rows: Tensor | slice) -> Tensor:  # rows of the chunk = rows start + i of the task
        idx = torch.arange(len(sub))[rows] if isinstance(rows, slice) else torch.as_tensor(rows).long().cpu()
        return score(logits, idx + start)

    eff, base, route = _engine.patch_query_heads(model, sub.corrupted.tokens, sub.corrupted.query_pos, vals, cells,
                                                 chunk_score, method=method, batch_size=batch_size, progress=progress)
    return {"effects": eff, "baseline": base, "route": route}


def _given_means(model: ModelLike, mean_z: Tensor | None, n_tasks: int, filter_correct: bool) -> Tensor | None:
    """``mean_z`` as ``[task, layer, head, d_head]`` (validated), or None when the means are to be computed."""
    if mean_z is None:
        return None
    if not isinstance(mean_z, Tensor):
        raise TlensICLError(f"indirect_effect(): mean_z must be a [layer, head, d_head] tensor, got {type(mean_z).__name__}.")
    if filter_correct:
        raise TlensICLError("mean_z=... and filter_correct=True do not combine: filter the mean prompts yourself.")
    shape = (model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_head)
    z = mean_z.detach().float().cpu()
    z = z[None].expand(n_tasks, *shape) if tuple(z.shape) == shape and n_tasks == 1 else z
    if tuple(z.shape) != (n_tasks, *shape):
        raise TlensICLError(f"mean_z must be [layer, head, d_head] = {list(shape)} for one task or "
                            f"[{n_tasks}, {', '.join(map(str, shape))}] for {n_tasks} tasks, got {list(mean_z.shape)}.")
    if not bool(z.isfinite().all()):
        raise TlensICLError("mean_z holds NaN or infinite values.")
    return z


def _answered(logits: Float[Tensor, "batch d_vocab"], batch: PromptBatch, what: str) -> Tensor:
    """Indices of rows whose top-1 prediction is the first answer token; raises if there are none."""
    idx = (argbest(logits.float()) == batch.answer_tokens.to(logits.device)).nonzero().flatten().cpu()
    if len(idx) == 0:
        raise EmptyTaskError(f"filter_correct: the model answers none of the {len(batch)} {what} correctly "
                             "(top-1 of the first answer token); nothing is left to average or patch.")
    return idx


def _stack_padded(parts: Sequence[Tensor]) -> Tensor:
    """Stack per-task tensors along a new first dim, padding the last (example) dim with NaN."""
    n = max(p.shape[-1] for p in parts)
    return torch.stack([torch.nn.functional.pad(p.float(), (0, n - p.shape[-1]), value=float("nan")) for p in parts])


# ---- circuitsvis: attention of the top heads ------------------------------------------------------------
_ROLE_TAG = {"pad": "pad", "bos": "bos", "separator": "sep", "demo_input": "x", "demo_output": "y",
             "query_input": "qx", "answer_position": "ans", "answer": "a"}


@checked
def head_attention_html(model: ModelLike, batch: PromptBatch, heads: Sequence[Head], *, row: int = 0,
                        path: str | Path | None = None) -> HTMLView:
    """The attention patterns of ``heads`` on prompt ``row`` as an offline circuitsvis view, tokens tagged with
    their role.

    Returns an :class:`~tlens_icl.viz.html.HTMLView`: Jupyter renders it (``_repr_html_``), ``.save(path)``
    writes a self-contained page (the circuitsvis bundle inlined once), ``.page()`` is that page's HTML.
    Above the view: the prompt with each token coloured by role, and the colour legend. Token labels in
    the view read ``token|role`` (x/y = demo input/output, qx = query input, ans = answer position, sep =
    separator; newlines shown as ``\\n``). Writes ``path`` too when given.
    """
    from tlens_icl.viz.html import HTMLView, attention_heads, role_tokens

    if not heads:
        raise TlensICLError("head_attention_html needs at least one head.")
    heads = [Head(*h) for h in heads]
    if not (isinstance(row, int) and not isinstance(row, bool) and 0 <= row < len(batch)):
        raise TlensICLError(f"head_attention_html(): row must be an int in [0, {len(batch)}) (a prompt of the batch), "
                            f"got {row!r}.")
    sub = batch.select([row])
    n = int(sub.attention_mask[0].sum())
    layers = sorted({h.layer for h in heads})
    whole = Custom(lambda act, rows: act)
    acts = capture(model, sub.tokens[:, :n], {hooks.pattern(layer): whole for layer in layers}, batch_size=1,
                   operation="head_attention_html")
    patterns = torch.stack([acts[hooks.pattern(h.layer)][0, h.head, :n, :n] for h in heads])
    roles = sub.roles[0, :n]
    str_tokens = sub.str_tokens(model, 0)[:n]
    labels = [f"{_visible(tok)}|{_ROLE_TAG[ROLES[int(r)]]}" for tok, r in zip(str_tokens, roles)]
    names = ", ".join(map(str, heads))
    view = HTMLView(
        (f"<p>Attention of {names} on one prompt ({n} tokens; answer {sub.answers[0]!r}). Choose a head to see where "
         "each token (row) attends; the query position is the last token.</p>",
         role_tokens(str_tokens, roles), attention_heads(patterns, labels, [str(h) for h in heads])),
        title="Attention of the top heads", description=f"{len(heads)} heads ({names}), {n} tokens")
    if path is not None:
        view.save(path)
    return view


def _visible(token: str) -> str:
    """A token as a label: newlines shown as \\n, angle brackets as look-alikes (not read as HTML tags)."""
    return token.replace("\n", "\\n").replace("<", "\u2039").replace(">", "\u203a")


__all__ = ["IndirectEffectResult", "head_attention_html", "indirect_effect"]
