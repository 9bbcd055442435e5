"""Batched ICL evaluation per task and shot count: whole-answer exact match, log P(answer), and the
first-token metrics (top-1, P(first token)).

Metrics (see :mod:`tlens_icl.engine.scoring`), all from one teacher-forced forward per prompt:

* ``exact_match`` (the default ``metric``): greedy decoding produces the whole answer, or the whole
  of an accepted alternative.
* ``first_token``: the argmax at the query position is the answer's first token (or a one-token
  alternative). Only right for one-token answers: under a BPE tokenizer every number ``' 42'`` starts
  with ``' '``, so a model that predicts a space "answers" every numeric query.

The result keeps every metric; ``correct`` holds the chosen one and ``metric`` names it.
"""

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
from tlens_icl.engine.runs import answer_scores
from tlens_icl.errors import TlensICLError
from tlens_icl.models.adapter import handle
from tlens_icl.prompts.batch import PromptBatch
from tlens_icl.prompts.pairs import SingleToken, make_prompts
from tlens_icl.prompts.templates import PromptTemplate
from tlens_icl.results.base import Result, run_info
from tlens_icl.results.checkpoint import digest, open_checkpoint
from tlens_icl.tasks import Task

#: ``metric=`` choices of :func:`icl_accuracy`.
METRICS = ("exact_match", "first_token")
#: The per-row scores of one (task, shot count) cell (fields of :class:`~tlens_icl.engine.runs.AnswerScores`).
CELL_FIELDS = ("exact_match", "first_token_top1", "first_token_prob", "answer_logprob", "n_answer_tokens")


@dataclass(frozen=True)
class AccuracyResult(Result):
    """Per-example scores for each (task, n_shots) cell; ``[t, s, i]`` is task ``tasks[t]``, ``n_shots[s]``, example ``i``.

    ``correct``: the chosen ``metric`` (``"exact_match"`` or ``"first_token"``), 1.0 or 0.0.
    ``answer_prob``: P(first answer token) at the query position (Todd et al.'s quantity).
    ``exact_match``, ``first_token_correct``, ``answer_logprob`` (log P of the whole answer) and
    ``n_answer_tokens``: every metric, whichever was chosen (None on results built by hand).
    """

    correct: Float[Tensor, "task shots example"]
    answer_prob: Float[Tensor, "task shots example"]
    tasks: tuple[str, ...]
    n_shots: tuple[int, ...]
    info: dict[str, Any]
    metric: str = "first_token"
    exact_match: Float[Tensor, "task shots example"] | None = None
    first_token_correct: Float[Tensor, "task shots example"] | None = None
    answer_logprob: Float[Tensor, "task shots example"] | None = None
    n_answer_tokens: Float[Tensor, "task shots example"] | None = None

    title = "ICL accuracy"
    measured = ("correct",)
    choices = {"metric": ("exact_match", "first_token")}
    same_as_info = ("metric",)

    def accuracy(self) -> Float[Tensor, "task shots"]:
        """Mean of ``correct`` (the chosen metric) per task and shot count."""
        return self.correct.mean(-1)

    def ci(self, confidence: float = 0.95) -> tuple[Tensor, Tensor]:
        """Clopper-Pearson interval of each cell's accuracy (the examples are distinct queries)."""
        from tlens_icl.results.stats import clopper_pearson

        return clopper_pearson(self.correct.sum(-1), self.correct.shape[-1], confidence)

    def to_dataframe(self) -> Any:
        import pandas as pd

        lo, hi = self.ci()
        extra = {"exact_match": self.exact_match, "first_token_accuracy": self.first_token_correct,
                 "mean_answer_logprob": self.answer_logprob, "mean_answer_tokens": self.n_answer_tokens}
        rows = []
        for i, t in enumerate(self.tasks):
            for j, s in enumerate(self.n_shots):
                row = {"task": t, "n_shots": s, "metric": self.metric, "accuracy": float(self.correct[i, j].mean()),
                       "ci_low": float(lo[i, j]), "ci_high": float(hi[i, j]),
                       "mean_prob": float(self.answer_prob[i, j].mean()), "n": self.correct.shape[-1]}
                row.update({k: float(v[i, j].mean()) for k, v in extra.items() if v is not None})
                rows.append(row)
        return pd.DataFrame(rows)

    def table(self, metric: str = "accuracy") -> Any:
        """A task x n_shots table of ``metric`` (a column of :meth:`to_dataframe`; default the chosen metric)."""
        return self.to_dataframe().pivot(index="task", columns="n_shots", values=metric)

    def summary(self) -> str:
        mean = ", ".join(f"{s}: {float(a):.2f}" for s, a in zip(self.n_shots, self.accuracy().mean(0)))
        return (f"{self.title} ({self.metric}) of {self.model_name} on {len(self.tasks)} task(s), "
                f"n={self.correct.shape[-1]} queries per cell; mean accuracy by shots {mean}")

    def plot(self, ax: Any = None) -> Any:
        """Accuracy vs shots with Clopper-Pearson 95% CIs: one axes with a legend for up to 6 tasks, small
        multiples (each with the mean over tasks as a dashed reference) for more."""
        from tlens_icl.viz.plots import curves

        if ax is not None and len(self.tasks) > 6:
            raise ValueError("ax= is supported for up to 6 tasks (more tasks are drawn as small multiples).")
        lo, hi = self.ci()
        acc = self.accuracy()
        n = self.correct.shape[-1]
        ylabel = {"exact_match": "exact match (whole answer)", "first_token": "first-token top-1 accuracy"}.get(
            self.metric, self.metric)
        fig = curves(self.n_shots, acc, lo, hi, self.tasks, xlabel="demonstrations (shots)", ylabel=ylabel,
                     title=f"ICL accuracy vs number of demonstrations ({len(self.tasks)} tasks)",
                     subtitle=self._subtitle(f"n={n} queries per task and shot count"),
                     reference=(acc.mean(0).tolist(), "mean over all tasks") if len(self.tasks) > 1 else None, ax=ax)
        return fig


@checked
def icl_accuracy(
    model: ModelLike, tasks: Task | str | Sequence[Task | str], *, shots: Sequence[int] = (0, 1, 5, 10),
    n: int = 64, seed: int = 0, template: PromptTemplate | str | None = None, batch_size: int = 32,
    demos_from: Task | str | None = None, metric: str = "exact_match", prepend_bos: bool | None = None,
    single_token: SingleToken = "ignore", progress: bool | None = None, checkpoint: str | Path | None = None,
) -> AccuracyResult:
    """ICL accuracy for each task and shot count: whole-answer exact match (default) or first-token top-1.

    Every metric is computed (one forward per prompt with its answer appended) and kept on the result;
    ``metric`` chooses which fills ``correct``. The same ``n`` distinct query items are used at every shot
    count (same seed), so the curve compares like with like; ``n`` may not exceed a task's usable items.

    Args:
        shots: the shot counts swept (a list; each prompt of one cell has one count of demonstrations).
        metric: ``"exact_match"`` (greedy decoding produces the whole answer or an accepted alternative)
            or ``"first_token"`` (argmax = the answer's first token; right only for one-token answers).
        prepend_bos: start prompts with BOS; None follows the model (``model.cfg.default_prepend_bos``).
        single_token: ``"filter"`` keeps only items whose answer is one token (see :func:`make_prompts`).
        progress: a progress bar (``None``: only when interactive; see :mod:`tlens_icl.engine.progress`).
        checkpoint: a folder that makes the call resumable, one unit per task and shot count holding
            every metric of that cell (:mod:`tlens_icl.results.checkpoint`).

    On the embedded model (loaded offline), two tasks at 0 and 4 shots:

    >>> import tlens_icl as ti
    >>> model = ti.load_model("icl-tiny")
    >>> acc = ti.icl_accuracy(model, ["bitwise_xor", "uppercase"], shots=[0, 4], n=16, seed=0)
    >>> acc.tasks, acc.n_shots, acc.metric, tuple(acc.correct.shape)   # [task, shots, example]
    (('bitwise_xor', 'uppercase'), (0, 4), 'exact_match', (2, 2, 16))
    >>> acc.accuracy()[:, 1].tolist()                                  # with 4 demonstrations, every answer
    [1.0, 1.0]
    >>> bool((acc.accuracy()[:, 0] < 1).all())                         # without, not
    True
    """
    if metric not in METRICS:
        raise TlensICLError(f"metric must be one of {METRICS}, got {metric!r}.")
    task_list = [tasks] if isinstance(tasks, (str, Task)) else list(tasks)
    shots = tuple(int(s) for s in shots)
    if not task_list or not shots:
        raise TlensICLError("icl_accuracy needs at least one task and one shot count.")
    # Validate every prompt set before the first forward pass.
    model = handle(model)  # resolved once, for the prompts and every forward
    batches = [[make_prompts(model, t, n=n, n_shots=s, seed=seed, template=template, demos_from=demos_from,
                             prepend_bos=prepend_bos, single_token=single_token)
                for s in shots] for t in task_list]
    ck = open_checkpoint(checkpoint, "icl_accuracy", dict(
        prompts=digest(*(t for row in batches for b in row for t in (b.tokens, b.query_pos, _accepted_tensor(b)))),
        tasks=[_task_name(t) for t in task_list], n_shots=list(shots), batch_size=batch_size, seed=seed, n=n,
        template=_template_name(template, model), demos_from=None if demos_from is None else _task_name(demos_from),
        prepend_bos=batches[0][0].prepend_bos, single_token=single_token), model)
    fields = {k: torch.zeros(len(task_list), len(shots), n) for k in CELL_FIELDS}
    cells = [(i, j) for i in range(len(batches)) for j in range(len(shots))]
    for i, j in progress_bar(cells, enabled=progress, desc="ICL accuracy"):
        cell = ck.unit(f"{i}/{shots[j]}", lambda batch=batches[i][j]: _score_cell(model, batch, batch_size))
        for k, v in fields.items():
            v[i, j] = cell[k]
    first = batches[0][0]
    names = tuple(_task_name(t) for t in task_list)
    info = run_info(model, seed=seed, n=n, metric=metric, prepend_bos=first.prepend_bos, single_token=single_token,
                    template=_template_name(template, model),
                    items={name: row[0].item_counts for name, row in zip(names, batches)})
    return AccuracyResult(
        correct=fields["exact_match" if metric == "exact_match" else "first_token_top1"].clone(),
        answer_prob=fields["first_token_prob"], tasks=names, n_shots=shots, info=info, metric=metric,
        exact_match=fields["exact_match"], first_token_correct=fields["first_token_top1"],
        answer_logprob=fields["answer_logprob"], n_answer_tokens=fields["n_answer_tokens"],
    )


def _template_name(template: PromptTemplate | str | None, model: ModelLike) -> str:
    from tlens_icl.prompts.pairs import default_template

    if template is None:
        return default_template(model).name
    return template if isinstance(template, str) else template.name


def _score_cell(model: ModelLike, batch: PromptBatch, batch_size: int) -> dict[str, Tensor]:
    """One (task, shot count) cell: every field of :func:`answer_scores` (a checkpoint unit)."""
    scores = answer_scores(model, batch, batch_size=batch_size)
    return {k: getattr(scores, k) for k in CELL_FIELDS}


def _accepted_tensor(batch: PromptBatch) -> Tensor:
    """Every row's accepted answer sequences as one flat tensor (-1 ends a sequence, -2 a row), for the run digest."""
    flat = [t for acc in batch.accepted for t in (*(x for seq in acc for x in (*seq, -1)), -2)]
    return torch.tensor(flat, dtype=torch.long)


def _task_name(task: Task | str) -> str:
    return task if isinstance(task, str) else task.name
