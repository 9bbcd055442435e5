"""Activation patching on clean/corrupted prompt pairs: per attention head, and per layer x position.

Sign convention: an *effect* is ``metric(patched run) - metric(unpatched run)``, per example, where the
metric always scores the **clean answer** at the query position.

* ``direction="denoise"``: clean activations are patched into the corrupted run. A positive effect
  (for prob/logprob/logit_diff/top1) means the activation restores the clean behaviour.
* ``direction="noise"``: corrupted activations are patched into the clean run. A negative effect
  means the clean behaviour needs the activation.

For ``metric="rank"`` lower is better, so the signs flip. Head patching at ``position="query"`` and
activation patching run on the engine's exact fast routes (:mod:`tlens_icl.engine.query`: key/value
reuse or query copies; :mod:`tlens_icl.engine.positions`: suffix replay); head patching at other positions
runs one forward per head. Results equal ``transformer_lens.patching`` on the same inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from tlens_icl._typing import Head, ModelLike
from tlens_icl._validate import checked
from tlens_icl.engine import hooks
from tlens_icl.engine import positions as _positions
from tlens_icl.engine import query as _engine
from tlens_icl.engine.capture import query_z
from tlens_icl.engine.scoring import METRICS, Metric, get_metric
from tlens_icl.errors import TlensICLError
from tlens_icl.models.adapter import handle
from tlens_icl.prompts.batch import ROLES, PromptBatch
from tlens_icl.prompts.pairs import PromptPairBatch
from tlens_icl.results.base import Result, run_info
from tlens_icl.results.heads import HeadEffectViews, bootstrap_ci

DIRECTIONS = ("denoise", "noise")
#: Sites accepted by :func:`activation_patching`.
ACTIVATION_SITES = ("resid_pre", "resid_post", "attn_out", "mlp_out")


# ---- validation shared with attribution patching ---------------------------------------------------
def check_position(position: str, pairs: PromptPairBatch, operation: str) -> None:
    allowed = ("query", "all", *[r for r in ROLES if r != "pad"])
    if position not in allowed:
        raise TlensICLError(f"position must be one of {allowed}, got {position!r}.")
    if position != "query":
        pairs.require_aligned(f"{operation}(position={position!r})")


def sides(pairs: PromptPairBatch, direction: str) -> tuple[PromptBatch, PromptBatch]:
    """``(base run, source of the patched values)`` for a direction."""
    if direction not in DIRECTIONS:
        raise TlensICLError(f"direction must be one of {DIRECTIONS}, got {direction!r}.")
    return (pairs.corrupted, pairs.clean) if direction == "denoise" else (pairs.clean, pairs.corrupted)


def scorer(metric: str | Metric, pairs: PromptPairBatch, d_vocab: int) -> tuple[str, _engine.Scorer]:
    """The metric on the clean answer (contrast: the corrupted answer when it differs), validated up front on
    zero logits over ``d_vocab`` tokens."""
    name, fn = get_metric(metric)
    answers = pairs.clean.answer_tokens
    contrast = None if torch.equal(answers, pairs.corrupted.answer_tokens) else pairs.corrupted.answer_tokens

    def score(logits: Tensor, rows: Tensor | slice) -> Tensor:
        """The metric of ``logits [n, d_vocab]`` read for rows ``rows`` of the pairs."""
        return fn(logits, answers[rows].to(logits.device),
                  None if contrast is None else contrast[rows].to(logits.device)).float().cpu()

    score(torch.zeros(1, d_vocab), slice(0, 1))  # raises now (e.g. logit_diff without contrast)
    return name, score


def position_mask(batch: PromptBatch, position: str) -> Tensor | None:
    """Positions patched for ``position`` (None: every position; the query is handled separately)."""
    return None if position in ("all", "query") else batch.mask(position)


# ---- head patching -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class HeadPatchingResult(HeadEffectViews, Result):
    """Per-example effect of patching each head's ``hook_z`` (see the module docstring for signs).

    ``effects[layer, head, i] = metric(patched run) - metric(unpatched run)`` for pair ``i``;
    ``clean_metric``/``corrupted_metric`` are the unpatched metrics. ``method`` is ``fast``/``naive``
    (exact) or ``attribution`` (first-order approximation). Heads left out by ``heads=`` hold NaN
    (``mean``/``top_heads``/tables skip them).
    """

    effects: Float[Tensor, "layer head example"]
    clean_metric: Float[Tensor, " example"]
    corrupted_metric: Float[Tensor, " example"]
    metric: str
    direction: str
    position: str
    method: str
    task: str
    corruption: str
    info: dict[str, Any]

    title = "Head patching"
    measured = ("effects",)
    choices = {"metric": tuple(METRICS), "direction": DIRECTIONS}

    def _stacked(self) -> tuple[Tensor, tuple[str, ...]]:
        return self.effects[None], (self.task,)

    def baseline(self) -> Float[Tensor, " example"]:
        """The metric of the unpatched base run (corrupted when denoising, clean when noising)."""
        return self.corrupted_metric if self.direction == "denoise" else self.clean_metric

    def patched(self) -> Float[Tensor, "layer head example"]:
        """The metric of each patched run."""
        return self.effects + self.baseline()

    def normalized(self) -> Float[Tensor, "layer head"]:
        """``(patched - corrupted) / (clean - corrupted)`` on means: 1 = fully clean, 0 = corrupted."""
        corrupted, clean = self.corrupted_metric.mean(), self.clean_metric.mean()
        return (self.patched().mean(-1) - corrupted) / (clean - corrupted)

    def _plot_context(self, task: str | None = None) -> str:
        return (f"{self.direction} at {self.position}, corruption {self.corruption}, metric {self.metric}; "
                f"n={self.effects.shape[-1]} prompt pairs")

    def summary(self) -> str:
        top = ", ".join(f"{h} {float(self.mean()[h]):+.3g}" for h in self.top_heads(3))
        return (f"{self.title} [{self.method}] of {self.model_name}: {self.direction} at {self.position}, "
                f"metric={self.metric}, task={self.task}, corruption={self.corruption}, n={self.effects.shape[-1]}; "
                f"clean {float(self.clean_metric.mean()):.3g}, corrupted {float(self.corrupted_metric.mean()):.3g}; "
                f"top (largest first): {top}")


@checked
def head_patching(
    model: ModelLike, pairs: PromptPairBatch, *, metric: str | Metric = "prob", direction: str = "denoise",
    position: str = "query", method: str = "auto", heads: Sequence[Head | tuple[int, int]] | None = None,
    batch_size: int = 16, progress: bool | None = None,
) -> HeadPatchingResult:
    """Patch every attention head's output (``hook_z``) between the clean and corrupted runs.

    Args:
        model: a TransformerLens model in eval mode.
        pairs: clean/corrupted prompt pairs (``make_prompt_pairs``). Positions other than ``"query"``
            need aligned pairs.
        metric: ``prob`` | ``logprob`` | ``logit_diff`` | ``rank`` | ``top1`` or a callable
            ``(logits [b, V], answers [b], contrast [b] | None) -> [b]``; it scores the clean answer.
        direction: ``"denoise"`` (clean -> corrupted run) or ``"noise"`` (corrupted -> clean run).
        position: ``"query"`` (each row's answer-predicting position), ``"all"`` positions, or a token
            role from :data:`~tlens_icl.prompts.ROLES` (e.g. ``"demo_output"``).
        method: ``"auto"``/``"fast"``/``"naive"`` for ``position="query"`` (all exact; ``fast`` reuses the
            base run's keys/values or appends query copies, ``auto`` falls back to ``naive`` with a warning
            where ``fast`` is not exact). The route used is ``info["engine"]`` (``kv``/``copies``/``naive``).
        heads: patch only these heads (``Head`` or ``(layer, head)``; default all). The others' effects
            are NaN; ``fast`` runs one query copy per requested head, so a subset is proportionally cheaper.
        batch_size: rows per forward pass. progress: show a progress bar.

    Returns:
        :class:`HeadPatchingResult`; a positive effect restores the clean answer when denoising.
    """
    if method not in ("auto", "fast", "naive"):
        raise TlensICLError(f"method must be 'auto', 'fast' or 'naive', got {method!r}.")
    check_position(position, pairs, "head_patching")
    model = handle(model)  # resolved once: every forward below reads the same facts
    cells = _engine.resolve_heads(model, heads)
    base, source = sides(pairs, direction)
    metric_name, score = scorer(metric, pairs, model.cfg.d_vocab)
    if position != "query" and method == "fast":
        raise TlensICLError("method='fast' only applies to position='query'; use 'auto' or 'naive'.")
    if position == "query":
        values, source_logits = query_z(model, source.tokens, source.query_pos, batch_size=batch_size)
        effects, base_score, route = _engine.patch_query_heads(model, base.tokens, base.query_pos, values, cells, score,
                                                               method=method, batch_size=batch_size, progress=progress)
        source_score = score(source_logits, torch.arange(len(source)))
    else:
        eng_cells = [_positions.Cell(hooks.z(h.layer), head=h.head) for h in cells]
        effects, base_score, source_score = _positions.patch_positions(
            model, base, source, eng_cells, score, mask=position_mask(base, position), batch_size=batch_size,
            progress=progress)
        route = "naive"
    used = "naive" if route == "naive" else "fast"
    clean, corrupted = (source_score, base_score) if direction == "denoise" else (base_score, source_score)
    return HeadPatchingResult(
        effects=_engine.head_grid(model, cells, effects), clean_metric=clean,
        corrupted_metric=corrupted, metric=metric_name, direction=direction, position=position, method=used,
        task=pairs.task, corruption=pairs.corruption,
        info=run_info(model, task=pairs.task, corruption=pairs.corruption, seed=pairs.seed, n_shots=pairs.n_shots,
                      metric=metric_name, n=len(pairs), heads=None if heads is None else [str(h) for h in cells],
                      engine=route),
    )


# ---- residual / attention-output / MLP-output patching per layer x position --------------------------
@dataclass(frozen=True)
class ActivationPatchingResult(Result):
    """Per-example effect of patching a whole activation at one (layer, position).

    ``effects[layer, pos, i] = metric(patched) - metric(unpatched)`` for pair ``i`` (signs as in
    :mod:`tlens_icl.analyses.causal.patching`); ``tokens`` labels the positions of row 0.
    """

    effects: Float[Tensor, "layer pos example"]
    clean_metric: Float[Tensor, " example"]
    corrupted_metric: Float[Tensor, " example"]
    site: str
    metric: str
    direction: str
    task: str
    corruption: str
    tokens: tuple[str, ...]
    info: dict[str, Any]

    title = "Activation patching"
    measured = ("effects",)
    choices = {"metric": tuple(METRICS), "direction": DIRECTIONS}

    def mean(self) -> Float[Tensor, "layer pos"]:
        return self.effects.mean(-1)

    def ci(self, *, confidence: float = 0.95, n_resamples: int = 1000, seed: int = 0) -> tuple[Tensor, Tensor]:
        """Percentile bootstrap interval of :meth:`mean` over examples."""
        return bootstrap_ci(self.effects[None], confidence=confidence, n_resamples=n_resamples, seed=seed)

    def patched(self) -> Float[Tensor, "layer pos example"]:
        return self.effects + (self.corrupted_metric if self.direction == "denoise" else self.clean_metric)

    def to_dataframe(self) -> Any:
        import pandas as pd

        mean, (lo, hi) = self.mean(), self.ci()
        n_layers, n_pos = mean.shape
        return pd.DataFrame([{"layer": layer, "pos": pos, "token": self.tokens[pos] if pos < len(self.tokens) else "",
                              "effect": float(mean[layer, pos]), "ci_low": float(lo[layer, pos]),
                              "ci_high": float(hi[layer, pos])}
                             for layer in range(n_layers) for pos in range(n_pos)])

    def plot(self, ax: Any = None) -> Any:
        """Layer x position heatmap of the mean effect; positions labelled with prompt 0's tokens."""
        from tlens_icl.viz.plots import position_heatmap

        return position_heatmap(self.mean(), self.tokens, ax=ax, label=f"effect on {self.metric}",
                                title=f"Activation patching of {self.site} per layer and position ({self.task})",
                                subtitle=self._subtitle(f"{self.direction}, corruption {self.corruption}",
                                                        f"n={self.effects.shape[-1]} prompt pairs"))

    def summary(self) -> str:
        return (f"{self.title} of {self.model_name}: {self.site}, {self.direction}, metric={self.metric}, "
                f"task={self.task}, n={self.effects.shape[-1]}, max |mean effect| {float(self.mean().abs().max()):.3g}")


@checked
def activation_patching(
    model: ModelLike, pairs: PromptPairBatch, *, site: str = "resid_pre", metric: str | Metric = "prob",
    direction: str = "denoise", method: str = "auto", batch_size: int = 16, progress: bool | None = None,
) -> ActivationPatchingResult:
    """Patch ``site`` (``resid_pre``/``resid_post``/``attn_out``/``mlp_out``) at each layer and position.

    Equals ``transformer_lens.patching.get_act_patch_resid_pre`` (one forward per cell) and its siblings.
    ``method="auto"`` replays only positions ``p ..`` through blocks ``L ..`` per cell, reusing the
    unpatched run's keys/values (:mod:`tlens_icl.engine.positions`), where the model allows, else one
    forward per cell; ``"kv"`` forces the replay, ``"naive"`` the loop. Cells that are exactly the
    unpatched run (equal activations, or positions after the query) are not run. Needs aligned pairs.
    Effects: ``metric(patched) - metric(unpatched)``.
    """
    if site not in ACTIVATION_SITES:
        raise TlensICLError(f"site must be one of {ACTIVATION_SITES}, got {site!r}.")
    if method not in ("auto", "kv", "naive"):
        raise TlensICLError(f"method must be 'auto', 'kv' or 'naive', got {method!r}.")
    pairs.require_aligned("activation_patching")
    base, source = sides(pairs, direction)
    metric_name, score = scorer(metric, pairs, model.cfg.d_vocab)
    model = handle(model)
    hooks.require_hooks(model, [hooks.site_name(site, layer) for layer in range(model.cfg.n_layers)])
    run = _positions.patch_layer_positions(model, base.tokens, source.tokens, base.query_pos, site, score,
                                           method=method, batch_size=batch_size, progress=progress)
    clean, corrupted = ((run.source_score, run.base_score) if direction == "denoise"
                        else (run.base_score, run.source_score))
    return ActivationPatchingResult(
        effects=run.effects, clean_metric=clean, corrupted_metric=corrupted,
        site=site, metric=metric_name, direction=direction, task=pairs.task, corruption=pairs.corruption,
        tokens=tuple(base.str_tokens(model, 0)),
        info=run_info(model, task=pairs.task, corruption=pairs.corruption, seed=pairs.seed, n_shots=pairs.n_shots,
                      metric=metric_name, n=len(pairs), engine=run.method, forwards=run.forwards),
    )


__all__ = ["ActivationPatchingResult", "HeadPatchingResult", "activation_patching", "head_patching"]
