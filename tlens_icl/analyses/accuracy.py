"""Batched ICL evaluation: top-1 accuracy of the first answer token and mean P(answer) per shot count."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from tlens_icl._typing import ModelLike
from tlens_icl._validate import checked
from tlens_icl.engine.progress import progress_bar
from tlens_icl.engine.runs import query_logits
from tlens_icl.engine.scoring import accepted_top1, prob
from tlens_icl.models.loading import require_eval_mode
from tlens_icl.prompts.batch import PromptBatch
from tlens_icl.prompts.pairs import make_prompts
from tlens_icl.prompts.templates import PromptTemplate
from tlens_icl.results.base import Result, run_info
from tlens_icl.results.checkpoint import digest, open_checkpoint
from tlens_icl.tasks import Task


@dataclass(frozen=True)
class AccuracyResult(Result):
    """Per-example correctness and P(answer) for each (task, n_shots) cell.

    ``correct[t, s, i]``: 1.0 if the argmax at the query position is the first token of an accepted
    answer, for task ``tasks[t]`` at ``n_shots[s]`` and example ``i``.
    """

    correct: Float[Tensor, "task shots example"]
    answer_prob: Float[Tensor, "task shots example"]
    tasks: tuple[str, ...]
    n_shots: tuple[int, ...]
    info: dict[str, Any]

    title = "ICL accuracy"

    def accuracy(self) -> Float[Tensor, "task shots"]:
        return self.correct.mean(-1)

    def ci(self, confidence: float = 0.95) -> tuple[Tensor, Tensor]:
        """Clopper-Pearson interval of each cell's accuracy."""
        from tlens_icl.results.stats import clopper_pearson

        return clopper_pearson(self.correct.sum(-1), self.correct.shape[-1], confidence)

    def to_dataframe(self) -> Any:
        import pandas as pd

        lo, hi = self.ci()
        rows = [
            {"task": t, "n_shots": s, "accuracy": float(self.correct[i, j].mean()),
             "ci_low": float(lo[i, j]), "ci_high": float(hi[i, j]),
             "mean_prob": float(self.answer_prob[i, j].mean()), "n": self.correct.shape[-1]}
            for i, t in enumerate(self.tasks) for j, s in enumerate(self.n_shots)
        ]
        return pd.DataFrame(rows)

    def table(self) -> Any:
        """Accuracy as a task x n_shots table."""
        return self.to_dataframe().pivot(index="task", columns="n_shots", values="accuracy")

    def summary(self) -> str:
        mean = ", ".join(f"{s}: {float(a):.2f}" for s, a in zip(self.n_shots, self.accuracy().mean(0)))
        return (f"{self.title} of {self.model_name} on {len(self.tasks)} task(s), n={self.correct.shape[-1]} "
                f"queries per cell; mean accuracy by shots {mean}")

    def plot(self, ax: Any = None) -> Any:
        """Accuracy vs shots with Clopper-Pearson 95% CIs: one axes with a legend for up to 6 tasks, small
        multiples (each with the mean over tasks as a dashed reference) for more."""
        from tlens_icl.viz.plots import curves

        if ax is not None and len(self.tasks) > 6:
            raise ValueError("ax= is supported for up to 6 tasks (more tasks are drawn as small multiples).")
        lo, hi = self.ci()
        acc = self.accuracy()
        n = self.correct.shape[-1]
        fig = curves(self.n_shots, acc, lo, hi, self.tasks, xlabel="demonstrations (shots)", ylabel="top-1 accuracy",
                     title=f"ICL accuracy vs number of demonstrations ({len(self.tasks)} tasks)",
                     subtitle=self._subtitle(f"n={n} queries per task and shot count"),
                     reference=(acc.mean(0).tolist(), "mean over all tasks") if len(self.tasks) > 1 else None, ax=ax)
        return fig


@checked
def icl_accuracy(
    model: ModelLike, tasks: Task | str | Sequence[Task | str], *, n_shots: Sequence[int] = (0, 1, 5, 10),
    n: int = 64, seed: int = 0, template: PromptTemplate | str | None = None, batch_size: int = 32,
    demos_from: Task | str | None = None, progress: bool | None = None, checkpoint: str | Path | None = None,
) -> AccuracyResult:
    """Top-1 accuracy of the first answer token and mean P(answer) for each task and shot count.

    The same query items are used at every shot count (same seed), so the curve compares like with like.
    ``progress``: a progress bar (``None``: only when interactive; see :mod:`tlens_icl.engine.progress`).
    ``checkpoint``: a folder that makes the call resumable, one unit per task and shot count
    (:mod:`tlens_icl.results.checkpoint`).
    """
    require_eval_mode(model, "icl_accuracy")
    task_list = [tasks] if isinstance(tasks, (str, Task)) else list(tasks)
    shots = tuple(int(s) for s in n_shots)
    # Validate every prompt set before the first forward pass.
    batches = [[make_prompts(t, model, n=n, n_shots=s, seed=seed, template=template, demos_from=demos_from)
                for s in shots] for t in task_list]
    ck = open_checkpoint(checkpoint, "icl_accuracy", dict(
        prompts=digest(*(t for row in batches for b in row for t in (b.tokens, b.query_pos, b.answer_tokens))),
        tasks=[_task_name(t) for t in task_list], n_shots=list(shots), batch_size=batch_size), model)
    correct = torch.zeros(len(task_list), len(shots), n)
    p_answer = torch.zeros_like(correct)
    cells = [(i, j) for i in range(len(batches)) for j in range(len(shots))]
    for i, j in progress_bar(cells, enabled=progress, desc="ICL accuracy"):
        cell = ck.unit(f"{i}/{shots[j]}", lambda batch=batches[i][j]: _score_cell(model, batch, batch_size))
        correct[i, j], p_answer[i, j] = cell["correct"], cell["prob"]
    names = tuple(_task_name(t) for t in task_list)
    return AccuracyResult(correct, p_answer, names, shots, run_info(model, seed=seed, n=n))


def _score_cell(model: ModelLike, batch: PromptBatch, batch_size: int) -> dict[str, Tensor]:
    logits = query_logits(model, batch, batch_size=batch_size)
    return {"correct": accepted_top1(logits, batch.accepted), "prob": prob(logits, batch.answer_tokens)}


def _task_name(task: Task | str) -> str:
    return task if isinstance(task, str) else task.name
