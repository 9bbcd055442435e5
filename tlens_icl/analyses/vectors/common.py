"""Shared machinery for task-level vectors: result classes, injection hooks, and evaluation.

Four methods compress a task into a vector and inject it into a prompt without demonstrations:

* function vectors (Todd et al.) and task vectors (Hendel et al.) live in the residual stream at one
  layer (``hook_resid_post`` of block ``layer``, i.e. the output of that block);
* in-context vectors (Liu et al.) steer every layer's residual stream;
* soft injection (Park & Rhee) blends per-head task embeddings into ``hook_z``.

This module holds what they share: position indexing, the residual stream and head means at the query
position (through the engine's one capture path), per-example evaluation of an intervention (query-position
interventions through the engine's key/value-reuse routes, others by hooked forwards), vocabulary decoding,
and :class:`LayerSweepResult`. Applying a vector is :mod:`tlens_icl.analyses.vectors.steering`'s job
(:class:`~tlens_icl.SteeringVector`, :func:`~tlens_icl.steer`, :func:`~tlens_icl.generate`).

Accuracy is top-1 of the first answer token (any accepted answer).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Literal, Union

import torch
from jaxtyping import Float
from torch import Tensor

from tlens_icl import _validate
from tlens_icl._ties import argbest_lex
from tlens_icl._typing import ModelLike
from tlens_icl._validate import checked
from tlens_icl.engine import hooks
from tlens_icl.engine.capture import capture_at_query, query_z
from tlens_icl.engine.query import Interventions, Reduce, query_interventions
from tlens_icl.engine.runs import query_logits
from tlens_icl.engine.scoring import accepted_top1, prob
from tlens_icl.errors import TlensICLError
from tlens_icl.models.adapter import readable_weights
from tlens_icl.models.remote import is_remote
from tlens_icl.prompts.batch import PromptBatch
from tlens_icl.results.base import Result

#: Where a residual intervention acts: ``"query"`` (each row's query position; the last position of
#: every forward when no ``query_pos`` is given, which during KV-cached generation is every new token),
#: ``"all"`` positions, or one integer position.
Position = Union[Literal["query", "all"], int]
ResidSite = Literal["resid_pre", "resid_post"]
#: Builds the hooks of an intervention for one chunk of a prompt batch.
HookBuilder = Callable[[PromptBatch], list[tuple[str, Callable[..., Any]]]]


# ---- validation ---------------------------------------------------------------------------------
def check_layer(model: ModelLike, layer: Any) -> int:
    return _validate.layer(model, layer)


def check_position(position: Any) -> Position:
    if isinstance(position, str) and position in ("query", "all"):
        return position
    if _validate.is_int(position) and position >= 0:
        return int(position)
    raise TlensICLError(f"position must be 'query', 'all' or an int >= 0, got {position!r}.")


def resid_hook_name(site: str, layer: int) -> str:
    if site not in ("resid_pre", "resid_post"):
        raise TlensICLError(f"site must be 'resid_pre' or 'resid_post' (not resid_mid: see hooks.py), got {site!r}.")
    return hooks.site_name(site, layer)


def position_index(act: Tensor, position: Position, query_pos: Tensor | None) -> tuple[Any, Any]:
    """``(rows, cols)`` indexing ``act[rows, cols]`` at the intervention positions."""
    b = act.shape[0]
    rows = torch.arange(b, device=act.device)
    if position == "all":
        return slice(None), slice(None)
    if position == "query":
        if query_pos is None:
            return rows, torch.full((b,), act.shape[1] - 1, device=act.device)
        if query_pos.shape[0] != b:
            raise TlensICLError(f"query_pos has {query_pos.shape[0]} rows but the forward pass has {b}.")
        return rows, query_pos.to(act.device)
    if int(position) >= act.shape[1]:
        raise TlensICLError(f"position={position} is outside this {act.shape[1]}-token forward pass.")
    return rows, torch.full((b,), int(position), device=act.device)


# ---- capture and evaluation ---------------------------------------------------------------------
@checked
def mean_head_activations(
    model: ModelLike, batch: PromptBatch, *, batch_size: int = 32, cache: Any = None,
) -> Float[Tensor, "layer head d_head"]:
    """Mean ``hook_z`` at the query position over the prompts (Todd et al.'s task-conditioned mean).

    The same quantity as ``IndirectEffectResult.mean_z`` (computed by the same capture); pass it to
    ``indirect_effect(..., mean_z=...)``. ``cache``: an ``ActivationCache`` from
    ``model.run_with_cache(batch.tokens)`` to read instead of running the model again.
    """
    from tlens_icl.engine.caches import query_z_from_cache

    if cache is not None:
        return query_z_from_cache(cache, batch, model).mean(0)
    return query_z(model, batch.tokens, batch.query_pos, batch_size=batch_size, logits=False)[0].mean(0)


def query_residuals(
    model: ModelLike, batch: PromptBatch, *, site: ResidSite = "resid_post", batch_size: int = 32,
) -> Float[Tensor, "batch layer d_model"]:
    """The residual stream at each row's query position, at every layer's ``site``."""
    names = [resid_hook_name(site, L) for L in range(model.cfg.n_layers)]
    got = capture_at_query(model, batch.tokens, batch.query_pos, names, batch_size=batch_size,
                           operation="query_residuals")
    return torch.stack([got[n] for n in names], dim=1)


def top1_and_prob(batch: PromptBatch) -> Reduce:
    """``reduce(logits, rows) -> [n, 2]``: (accepted top-1, P(answer)) of rows ``rows`` of ``batch``."""
    answers = batch.answer_tokens

    def reduce(logits: Tensor, rows: Tensor) -> Tensor:
        top = accepted_top1(logits, tuple(batch.accepted[int(i)] for i in rows))
        return torch.stack([top, prob(logits, answers[rows].to(logits.device)).float().cpu()], -1)

    return reduce


def evaluate_intervention(
    model: ModelLike, batch: PromptBatch, build_hooks: HookBuilder | None = None, *, batch_size: int = 32,
) -> tuple[Float[Tensor, " batch"], Float[Tensor, " batch"]]:
    """``(correct, P(answer))`` per row, with the hooks ``build_hooks(chunk)`` installed (checked)."""
    logits = query_logits(model, batch, fwd_hooks=build_hooks or (), batch_size=batch_size)
    return accepted_top1(logits, batch.accepted), prob(logits, batch.answer_tokens)


def evaluate_query_interventions(
    model: ModelLike, batch: PromptBatch, interventions: Interventions, *, batch_size: int = 32, method: str = "auto",
) -> tuple[Float[Tensor, "variant batch"], Float[Tensor, "variant batch"], Float[Tensor, " batch"], Float[Tensor, " batch"]]:
    """``(correct, P(answer))`` of every variant of query-position ``interventions``, and of the plain run.

    One base run of ``batch`` serves every variant (:func:`tlens_icl.engine.query.query_interventions`).
    """
    run = query_interventions(model, batch.tokens, batch.query_pos, interventions, top1_and_prob(batch),
                              method=method, batch_size=batch_size, operation="evaluate_query_interventions")
    return run.values[..., 0], run.values[..., 1], run.baseline[:, 0], run.baseline[:, 1]


# ---- decoding -----------------------------------------------------------------------------------
def decode_vector(model: ModelLike, vector: Float[Tensor, " d_model"], k: int = 10) -> list[tuple[str, float]]:
    """Top-``k`` tokens of ``vector`` read through the final norm and the unembedding (logit lens)."""
    with torch.no_grad(), readable_weights(model.ln_final, model.unembed):  # offloaded weights, loaded for the read
        v = vector.to(device=model.W_U.device, dtype=model.W_U.dtype)
        logits = model.ln_final(v[None, None, :])[0, 0] @ model.W_U + model.b_U
        top = logits.topk(min(k, logits.shape[-1]))
    return [(model.tokenizer.decode([int(i)]), float(x)) for x, i in zip(top.values, top.indices)]


class VectorOps:
    """Mixin for frozen vector results: ``.to(device)`` moves every tensor field."""

    def to(self, device: Any) -> Any:
        """A copy with every tensor field on ``device``."""
        changes = {f.name: getattr(self, f.name).to(device) for f in fields(self)  # type: ignore[arg-type]
                   if isinstance(getattr(self, f.name), Tensor)}
        return replace(self, **changes)  # type: ignore[type-var]


class InjectionLayer:
    """Mixin for vector results with a suggested injection ``layer`` field (function and task vectors)."""

    def with_layer(self, layer: int) -> Any:
        """A copy whose suggested injection layer is ``layer`` (an int layer of the model it was made on)."""
        n_layers = (getattr(self, "info", None) or {}).get("n_layers")
        top = n_layers - 1 if isinstance(n_layers, int) else None
        return replace(self, layer=_validate.integer(layer, "layer", minimum=0, maximum=top,  # type: ignore[type-var]
                                                     where=f"{type(self).__name__}.with_layer(): "))


# ---- layer sweeps -------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerSweepResult(Result):
    """Accuracy of a vector injected at each layer, in several prompt settings.

    ``correct[s, l, i]`` is 1.0 when, in setting ``settings[s]`` (e.g. ``"zero_shot"``,
    ``"shuffled_labels"``) with the vector injected at ``layers[l]``, example ``i``'s top-1 token is an
    accepted answer; ``baseline_correct[s, i]`` is the same without any vector.
    """

    correct: Float[Tensor, "setting layer example"]
    answer_prob: Float[Tensor, "setting layer example"]
    baseline_correct: Float[Tensor, "setting example"]
    baseline_prob: Float[Tensor, "setting example"]
    settings: tuple[str, ...]
    layers: tuple[int, ...]
    method: str
    task: str
    info: dict[str, Any]

    title = "Layer sweep"
    measured = ("correct",)

    def accuracy(self) -> Float[Tensor, "setting layer"]:
        return self.correct.mean(-1)

    def baseline_accuracy(self) -> Float[Tensor, " setting"]:
        return self.baseline_correct.mean(-1)

    def best_layer(self, setting: str | None = None) -> int:
        """The layer with the highest accuracy (ties: highest mean P(answer), then the lowest layer; values within
        float tolerance count as tied)."""
        s = self.settings.index(setting) if setting else 0
        return self.layers[argbest_lex(self.accuracy()[s], self.answer_prob[s].mean(-1))]

    def to_dataframe(self) -> Any:
        import pandas as pd

        acc, pr = self.accuracy(), self.answer_prob.mean(-1)
        rows = [{"method": self.method, "task": self.task, "setting": s, "layer": L,
                 "accuracy": float(acc[i, j]), "mean_prob": float(pr[i, j]),
                 "baseline_accuracy": float(self.baseline_accuracy()[i]), "n": self.correct.shape[-1]}
                for i, s in enumerate(self.settings) for j, L in enumerate(self.layers)]
        return pd.DataFrame(rows)

    def summary(self) -> str:
        parts = [f"{s}: best layer {self.best_layer(s)} acc {float(self.accuracy()[i].max()):.2f} "
                 f"(baseline {float(self.baseline_accuracy()[i]):.2f})" for i, s in enumerate(self.settings)]
        return (f"{self.method} layer sweep on {self.task} ({self.model_name}, n={self.correct.shape[-1]}) - "
                + "; ".join(parts))

    def plot(self, ax: Any = None) -> Any:
        """Accuracy vs injection layer per setting (Clopper-Pearson 95% bands), each setting's baseline
        without the vector as a dashed line of the same colour."""
        from tlens_icl.results.stats import clopper_pearson
        from tlens_icl.viz.plots import line_plot

        n = self.correct.shape[-1]
        lo, hi = clopper_pearson(self.correct.sum(-1), n)
        ys = {f"{s} + vector": self.accuracy()[i].tolist() for i, s in enumerate(self.settings)}
        ci = {f"{s} + vector": (lo[i].tolist(), hi[i].tolist()) for i, s in enumerate(self.settings)}
        how = "residual after block replaced by the vector" if self.method == "task_vector" else "vector added after block"
        refs = [(float(self.baseline_accuracy()[i]), f"{s}, no vector", {"ls": "--", "lw": 1.1, "color": f"C{i}"})
                for i, s in enumerate(self.settings)]
        return line_plot(self.layers, ys, xlabel=f"injection layer ({how})", ylabel="top-1 accuracy", refs=refs,
                         title=f"{self.method.replace('_', ' ').capitalize()} injected at each layer: {self.task}",
                         subtitle=self._subtitle(f"n={n} held-out queries per setting"), ax=ax, ci=ci,
                         ylim=(-0.02, 1.02))


def sweep_layers(
    model: ModelLike, batches: dict[str, PromptBatch], make_hooks: Callable[[int, PromptBatch], list[Any]],
    layers: Sequence[int], *, method: str, task: str, info: dict[str, Any], batch_size: int = 32,
    progress: bool | None = None, query_edits: Interventions | None = None,
) -> LayerSweepResult:
    """Evaluate ``make_hooks(layer, chunk)`` at every layer on every named prompt batch.

    ``query_edits`` (variant ``j`` = the same intervention at ``layers[j]``, acting at the query only):
    every layer is evaluated from one base run per batch by the engine; otherwise (and on a remote model,
    whose driver takes the hooks' :class:`~tlens_icl.models.remote.SpecHook` s, not the engine's
    key/value reuse) one forward per layer with ``make_hooks``.
    """
    from tlens_icl.engine.progress import progress_bar

    n = {len(b) for b in batches.values()}
    if len(n) != 1:
        raise TlensICLError(f"All settings need the same number of prompts, got {sorted(n)}.")
    settings = tuple(batches)
    correct = torch.zeros(len(settings), len(layers), n.pop())
    p = torch.zeros_like(correct)
    base_c, base_p = torch.zeros(correct.shape[0], correct.shape[2]), torch.zeros(correct.shape[0], correct.shape[2])
    if query_edits is not None and not is_remote(model):
        if query_edits.n != len(layers):
            raise TlensICLError(f"query_edits has {query_edits.n} variants for {len(layers)} layers.")
        for i, s in enumerate(progress_bar(settings, enabled=progress, desc=f"{method} sweep")):
            correct[i], p[i], base_c[i], base_p[i] = evaluate_query_interventions(model, batches[s], query_edits,
                                                                                  batch_size=batch_size)
        return LayerSweepResult(correct, p, base_c, base_p, settings, tuple(int(x) for x in layers), method, task, info)
    cells = [(i, j) for i in range(len(settings)) for j in range(len(layers))]
    for i, s in enumerate(settings):
        base_c[i], base_p[i] = evaluate_intervention(model, batches[s], batch_size=batch_size)
    for i, j in progress_bar(cells, enabled=progress, desc=f"{method} sweep"):
        L = layers[j]
        correct[i, j], p[i, j] = evaluate_intervention(
            model, batches[settings[i]], lambda sub, L=L: make_hooks(L, sub), batch_size=batch_size)
    return LayerSweepResult(correct, p, base_c, base_p, settings, tuple(int(x) for x in layers), method, task, info)


def resolve_layers(model: ModelLike, layers: Sequence[int] | None) -> tuple[int, ...]:
    if layers is None:
        return tuple(range(model.cfg.n_layers))
    return tuple(check_layer(model, int(L)) for L in layers)
