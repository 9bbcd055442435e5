"""Batched ICL evaluation: top-1 accuracy of the first answer token and mean P(answer) per shot count."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from tlens_icl._typing import ModelLike
from tlens_icl._validate import checked
from tlens_icl.engine.runs import query_logits
from tlens_icl.engine.scoring import accepted_top1, prob
from tlens_icl.models.loading import require_eval_mode
from tlens_icl.prompts.pairs import make_prompts
from tlens_icl.prompts.templates import PromptTemplate
from tlens_icl.results.base import Result, run_info
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
        """Clopper-Pearson interval of each cell's accuracy (scipy ``binomtest``)."""
        from scipy.stats import binomtest

        n = self.correct.shape[-1]
        k = self.correct.sum(-1).round().long()
        lo, hi = torch.zeros(k.shape), torch.zeros(k.shape)
        for idx in torch.cartesian_prod(*[torch.arange(s) for s in k.shape]).reshape(-1, k.dim()):
            interval = binomtest(int(k[tuple(idx)]), n).proportion_ci(confidence)
            lo[tuple(idx)], hi[tuple(idx)] = interval.low, interval.high
        return lo, hi

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
        return f"ICL accuracy on {len(self.tasks)} task(s), shots {list(self.n_shots)}, n={self.correct.shape[-1]}"

    def plot(self, ax: Any = None) -> Any:
        from tlens_icl.viz.plots import accuracy_curve

        return accuracy_curve(self, ax=ax)


@checked
def icl_accuracy(
    model: ModelLike, tasks: Task | str | Sequence[Task | str], *, n_shots: Sequence[int] = (0, 1, 5, 10),
    n: int = 64, seed: int = 0, template: PromptTemplate | str | None = None, batch_size: int = 32,
    demos_from: Task | str | None = None,
) -> AccuracyResult:
    """Top-1 accuracy of the first answer token and mean P(answer) for each task and shot count.

    The same query items are used at every shot count (same seed), so the curve compares like with like.
    """
    require_eval_mode(model, "icl_accuracy")
    task_list = [tasks] if isinstance(tasks, (str, Task)) else list(tasks)
    shots = tuple(int(s) for s in n_shots)
    # Validate every prompt set before the first forward pass.
    batches = [[make_prompts(t, model, n=n, n_shots=s, seed=seed, template=template, demos_from=demos_from)
                for s in shots] for t in task_list]
    correct = torch.zeros(len(task_list), len(shots), n)
    p_answer = torch.zeros_like(correct)
    for i, row in enumerate(batches):
        for j, batch in enumerate(row):
            logits = query_logits(model, batch, batch_size=batch_size)
            correct[i, j] = accepted_top1(logits, batch.accepted)
            p_answer[i, j] = prob(logits, batch.answer_tokens)
    names = tuple(_task_name(t) for t in task_list)
    return AccuracyResult(correct, p_answer, names, shots, run_info(model, seed=seed, n=n))


def _task_name(task: Task | str) -> str:
    return task if isinstance(task, str) else task.name
