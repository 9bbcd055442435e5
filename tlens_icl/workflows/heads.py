"""Induction vs function-vector heads in one call (``tlens-icl heads``): head scores, the FV score (AIE), ablation
of each ranking's top heads with exclusion against random heads, and the overlap / depth of the head sets
(Olsson et al. 2022; Yin & Steinhardt 2025)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tlens_icl._typing import ModelLike
from tlens_icl._validate import checked
from tlens_icl.analyses.causal.mediation import IndirectEffectResult, indirect_effect
from tlens_icl.analyses.heads.ablation import HeadAblationResult, head_ablation
from tlens_icl.analyses.heads.overlap import HeadOverlapResult, head_overlap
from tlens_icl.analyses.heads.scores import HeadScoresResult, head_scores
from tlens_icl.engine.ablation import Positions
from tlens_icl.prompts.spec import PromptSpec
from tlens_icl.prompts.templates import PromptTemplate
from tlens_icl.tasks import Task


@dataclass
class HeadsStudy:
    """The four results of :func:`heads_study` (and the RSA head scores with ``rsa=True``), with the seconds each
    step took."""

    scores: HeadScoresResult
    aie: IndirectEffectResult
    ablation: HeadAblationResult
    overlap: HeadOverlapResult
    timings: dict[str, float] = field(default_factory=dict)


@checked
def heads_study(
    model: ModelLike, tasks: Sequence[Task | str], *, n: int = 32, n_shots: int = 5, n_mean: int = 32,
    n_corrupted: int = 16, corruption: str = "zero_shot", seed: int = 0, template: PromptTemplate | str | None = None,
    ks: Sequence[int | float] = (0, 1, 2, 4, 8), exclude: float = 0.0, n_random: int = 3, positions: Positions = "all",
    loss: bool = True, loss_n: int = 16, loss_length: int = 128, rsa: bool = False,
    overlap_ks: Sequence[int] = (1, 3, 5, 10), progress: bool | None = None,
    log: Callable[[str], Any] | None = None,
) -> HeadsStudy:
    """Score every head as an induction / previous-token head and as an FV head, ablate each ranking's top heads
    (``exclude``: the other ranking's top fraction first) against ``n_random`` random head sets, and measure the
    overlap of the rankings. ``log`` receives one line per finished step (with its seconds)."""
    timings: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        t = time.perf_counter()
        res = fn()
        timings[name] = round(time.perf_counter() - t, 1)
        if log is not None:
            log(f"[{name}] {timings[name]} s: {res.summary()}")
        return res

    scores = timed("head scores", lambda: head_scores(model, seed=seed))
    aie = timed("FV score (AIE)", lambda: indirect_effect(
        model, PromptSpec(tuple(tasks), n=n_corrupted, n_shots=n_shots, corruption=corruption, seed=seed,
                          template=template), n_mean=n_mean, progress=progress))
    abl = timed("ablation", lambda: head_ablation(
        model, tasks, {"FV": aie, "induction": scores}, ks=ks, exclude=exclude, n_random=n_random, n=n,
        n_shots=n_shots, seed=seed, positions=positions, loss=loss, loss_n=loss_n, loss_length=loss_length,
        template=template, progress=progress))
    maps: dict[str, Any] = {"FV": aie.mean(), "induction": scores.induction(), "previous_token": scores.previous_token()}
    if rsa:
        from tlens_icl.analyses.representations.activations import task_activations
        from tlens_icl.analyses.representations.rsa import rsa as rsa_of

        res = timed("RSA heads", lambda: rsa_of(task_activations(model, tasks, shots=(n_shots,), n=n, seed=seed,
                                                                 template=template, sites=["head_out"]),
                                                site="head_out", n_permutations=0))
        maps["RSA"] = res.head_scores()
    n_total = model.cfg.n_layers * model.cfg.n_heads
    ov = timed("overlap", lambda: head_overlap(maps, ks=[k for k in overlap_ks if k <= n_total], model=model))
    return HeadsStudy(scores, aie, abl, ov, timings)


__all__ = ["HeadsStudy", "heads_study"]
