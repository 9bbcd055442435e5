"""The same heads over training: induction score, FV score (AIE) and few-shot accuracy at each checkpoint.

Olsson et al. report that induction heads form in a sudden phase change at the same time as in-context
learning; Yin & Steinhardt that many of Pythia's final FV heads first behave as induction heads. This
follows the *final* model's top induction heads and top FV heads back through the training
checkpoints of an embedded model (``load_model(name, step=N)``) and measures, at every checkpoint,
the induction score of every head, the AIE of the tracked heads and few-shot accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from tlens_icl._validate import checked, optional_steps
from tlens_icl.analyses.accuracy import icl_accuracy
from tlens_icl.analyses.causal.mediation import indirect_effect
from tlens_icl.analyses.heads.scores import head_scores, top_heads_of
from tlens_icl.errors import TlensICLError
from tlens_icl.models.embedded import checkpoint_steps
from tlens_icl.models.loading import load_model, model_tasks
from tlens_icl.results.base import Result, run_info
from tlens_icl.tasks import Task


@dataclass(frozen=True)
class HeadDynamicsResult(Result):
    """Head scores and accuracy at each training step (the last step is the final model).

    ``induction[s]``/``previous_token[s]``: score maps at ``steps[s]``; ``aie[s]``: AIE of the tracked heads
    (the final top FV and top induction heads; NaN elsewhere); ``accuracy[s, j]``: mean top-1 accuracy
    over ``tasks`` at ``n_shots[j]`` shots. ``top_fv``/``top_induction``: the final model's top heads.
    """

    steps: tuple[int, ...]
    induction: Float[Tensor, "step layer head"]
    previous_token: Float[Tensor, "step layer head"]
    aie: Float[Tensor, "step layer head"]
    accuracy: Float[Tensor, "step shots"]
    n_shots: tuple[int, ...]
    tasks: tuple[str, ...]
    top_fv: tuple[str, ...]
    top_induction: tuple[str, ...]
    info: dict[str, Any]

    title = "Heads over training"

    def _track(self, values: Tensor, labels: Sequence[str]) -> dict[str, list[float]]:
        out = {}
        for lab in labels:
            layer, head = (int(x) for x in lab[1:].split("H"))
            out[lab] = values[:, layer, head].tolist()
        return out

    def to_dataframe(self) -> Any:
        import pandas as pd

        rows = []
        for s, step in enumerate(self.steps):
            row: dict[str, Any] = {"step": step}
            for j, k in enumerate(self.n_shots):
                row[f"acc_{k}shot"] = float(self.accuracy[s, j])
            for lab, v in self._track(self.induction, self.top_induction).items():
                row[f"induction({lab})"] = v[s]
            for lab, v in self._track(self.induction, self.top_fv).items():
                row[f"induction({lab}, FV)"] = v[s]
            for lab, v in self._track(self.aie, self.top_fv).items():
                row[f"AIE({lab})"] = v[s]
            row["max_induction"] = float(self.induction[s].max())
            rows.append(row)
        return pd.DataFrame(rows)

    def summary(self) -> str:
        acc = ", ".join(f"{st}:{float(a):.2f}" for st, a in zip(self.steps, self.accuracy[:, -1]))
        ind = ", ".join(f"{st}:{float(m):.2f}" for st, m in zip(self.steps, self.induction.flatten(1).max(1).values))
        return (f"{self.title} ({len(self.steps)} checkpoints): {self.n_shots[-1]}-shot accuracy {acc}; "
                f"max induction score {ind}; final FV heads {list(self.top_fv)}, induction heads {list(self.top_induction)}")

    def plot(self, ax: Any = None) -> Any:
        from tlens_icl.viz.heads import dynamics_curves

        ind = {f"{lab} (induction head)": v for lab, v in self._track(self.induction, self.top_induction).items()}
        ind.update({f"{lab} (FV head)": v for lab, v in self._track(self.induction, self.top_fv).items()})
        aie = {f"{lab} (FV head)": v for lab, v in self._track(self.aie, self.top_fv).items()}
        aie.update({f"{lab} (induction head)": v for lab, v in self._track(self.aie, self.top_induction).items()})
        acc = {f"{k}-shot": self.accuracy[:, j].tolist() for j, k in enumerate(self.n_shots)}
        model = str(self.info.get("model", ""))
        name = Path(model).name + " (a training run)" if ("/" in model or "\\" in model) else model
        # Fixed ranges: an induction score of 0.04 must not look like a head forming (a clear head scores > 0.5).
        return dynamics_curves(list(self.steps), [("induction score", ind, (0.0, 1.0)), ("AIE (FV score)", aie),
                                                  ("accuracy (mean over tasks)", acc, (0.0, 1.0))],
                               title=f"{name}: the final model's top heads over training", axes=ax)


@checked(model_name=True, rules={"steps": optional_steps})
def head_dynamics(
    model: str = "icl-tiny", tasks: Sequence[Task | str] | None = None, *, steps: Sequence[int] | None = None,
    k: int = 3, n_shots: int = 4, n: int = 32, n_mean: int = 32, n_corrupted: int = 16,
    corruption: str = "zero_shot", n_random: int = 16, length: int = 20, seed: int = 0, batch_size: int = 16,
    progress: bool | None = None,
) -> HeadDynamicsResult:
    """Track the final model's top-``k`` FV and induction heads over the training checkpoints of ``model``.

    Args:
        model: an embedded model name or a training-script folder with checkpoints.
        tasks: default the model's own tasks (its card).
        steps: which checkpoints (default all; the final model is always included last).
        n_shots, n: few-shot prompts for accuracy (also at 0 shots) and for the AIE.
        n_mean, n_corrupted, corruption: :func:`~tlens_icl.indirect_effect` settings.
        n_random, length: repeated random sequences for the induction score.
    """
    from tlens_icl.engine.progress import progress_bar

    available = checkpoint_steps(model)
    if not available:
        raise TlensICLError(f"{model!r} has no training checkpoints; rebuild it with "
                            "`python -m tlens_icl.models.embedded.train` (which keeps them).")
    final_step = available[-1]
    chosen = sorted(set(available if steps is None else [int(s) for s in steps]) | {final_step})
    missing = [s for s in chosen if s not in available]
    if missing:
        raise TlensICLError(f"No checkpoint at steps {missing}; available: {available}.")
    final = load_model(model, step=final_step)
    task_list = list(tasks) if tasks is not None else model_tasks(final)

    def measure(m: Any, heads: Sequence[Any] | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        hs = head_scores(m, n=n_random, length=length, seed=seed, batch_size=batch_size)
        ie = indirect_effect(m, task_list, n_mean=n_mean, n_corrupted=n_corrupted, n_shots=n_shots,
                             corruption=corruption, seed=seed, heads=heads, batch_size=batch_size)
        acc = icl_accuracy(m, task_list, n_shots=(0, n_shots), n=n, seed=seed, batch_size=batch_size)
        return hs.induction(), hs.previous_token(), ie.mean(), acc.accuracy().mean(0)

    ind_f, prev_f, aie_f, acc_f = measure(final, None)
    top_fv, top_ind = top_heads_of(aie_f, k), top_heads_of(ind_f, k)
    tracked = list(dict.fromkeys(top_fv + top_ind))
    rows = []
    for step in progress_bar(chosen[:-1], enabled=progress, desc="checkpoints"):
        rows.append(measure(load_model(model, step=step), tracked))
    aie_last = torch.full_like(aie_f, float("nan"))
    aie_last[[h.layer for h in tracked], [h.head for h in tracked]] = aie_f[[h.layer for h in tracked],
                                                                             [h.head for h in tracked]]
    rows.append((ind_f, prev_f, aie_last, acc_f))
    return HeadDynamicsResult(
        steps=tuple(chosen), induction=torch.stack([r[0] for r in rows]), previous_token=torch.stack([r[1] for r in rows]),
        aie=torch.stack([r[2] for r in rows]), accuracy=torch.stack([r[3] for r in rows]), n_shots=(0, n_shots),
        tasks=tuple(t if isinstance(t, str) else t.name for t in task_list), top_fv=tuple(map(str, top_fv)),
        top_induction=tuple(map(str, top_ind)),
        info=run_info(final, source=str(model), seed=seed, k=k, corruption=corruption, n=n, n_mean=n_mean,
                      n_corrupted=n_corrupted, n_random=n_random, length=length),
    )


__all__ = ["HeadDynamicsResult", "head_dynamics"]
