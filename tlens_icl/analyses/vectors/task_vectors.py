"""Task vectors (Hendel, Geva & Globerson, Findings of EMNLP 2023): the residual stream of an ICL prompt.

``theta_l = mean over prompts of resid_post[l]`` at the last token of ``demonstrations + dummy query``
(the query of each prompt is another item of the task, not the test input). At inference the residual
after block ``l`` of a zero-shot prompt is *replaced* by ``theta_l`` at the query position
(``SteeringVector.from_task_vector(tv)``, applied with :func:`~tlens_icl.steer`); ``l`` is chosen by a sweep on
held-out items. Here ``theta`` is averaged over ``n`` demonstration sets (Hendel
et al. average over 2 dummy queries of one set); ``task_vector_from_prompts`` gives a single prompt's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from tlens_icl._typing import ModelLike
from tlens_icl._validate import checked
from tlens_icl.analyses.vectors.common import (
    InjectionLayer,
    LayerSweepResult,
    VectorOps,
    decode_vector,
    query_residuals,
    resolve_layers,
    sweep_layers,
)
from tlens_icl.analyses.vectors.steering import SteeringVector
from tlens_icl.engine.query import resid_edits
from tlens_icl.errors import TlensICLError
from tlens_icl.prompts.batch import PromptBatch
from tlens_icl.prompts.pairs import make_prompts
from tlens_icl.prompts.templates import PromptTemplate
from tlens_icl.results.base import Result, run_info
from tlens_icl.tasks import Task


@dataclass(frozen=True)
class TaskVector(VectorOps, InjectionLayer, Result):
    """Per-layer task vectors ``vectors[l]`` = mean ``resid_post[l]`` at the query of ICL prompts.

    ``layer`` is the chosen injection layer (``None`` until a sweep picked one).
    """

    vectors: Float[Tensor, "layer d_model"]
    task: str
    n_shots: int
    layer: int | None
    info: dict[str, Any]

    title = "Task vector"
    finite = ("vectors",)

    @property
    def vector(self) -> Float[Tensor, " d_model"]:
        """The vector at the chosen layer."""
        return self.vectors[self._layer(None)]

    def _layer(self, layer: int | None) -> int:
        if layer is None and self.layer is None:
            raise TlensICLError("This task vector has no chosen layer; pass layer=... or use .with_layer(layer).")
        return int(layer if layer is not None else self.layer)  # type: ignore[arg-type]

    def at(self, layer: int) -> Float[Tensor, " d_model"]:
        return self.vectors[layer]

    def to_steering_vector(self, **kwargs: Any) -> SteeringVector:
        """:meth:`SteeringVector.from_task_vector` of this vector (``mode="replace"`` at the chosen layer)."""
        return SteeringVector.from_task_vector(self, **kwargs)

    def decode(self, model: ModelLike, k: int = 10, *, layer: int | None = None) -> list[tuple[str, float]]:
        """Top-``k`` tokens of the vector at ``layer`` (default: the chosen layer) through the unembedding."""
        return decode_vector(model, self.vectors[self._layer(layer)], k)

    def to_dataframe(self) -> Any:
        import pandas as pd

        return pd.DataFrame([{"task": self.task, "layer": L, "norm": float(v.norm()), "chosen": L == self.layer}
                             for L, v in enumerate(self.vectors)])

    def summary(self) -> str:
        return (f"Task vector for {self.task} ({self.model_name}, {self.n_shots} shots), {self.vectors.shape[0]} layers, "
                f"chosen layer {self.layer}")

    def plot(self, ax: Any = None) -> Any:
        """The norm of the task vector at each layer (the chosen layer marked)."""
        from tlens_icl.viz.plots import line_plot

        marks = [] if self.layer is None else [(self.layer, f"chosen layer {self.layer}")]
        return line_plot(range(self.vectors.shape[0]), {"|task vector|": self.vectors.norm(dim=-1).tolist()},
                         xlabel="layer (residual after block)", ylabel="L2 norm", ax=ax, marks=marks,
                         title=f"Task vector norm per layer: {self.task}",
                         subtitle=self._subtitle(f"{self.n_shots}-shot prompts, n={self.info.get('n', '?')}"))


@checked
def task_vector_from_prompts(
    model: ModelLike, batch: PromptBatch, *, task: str = "custom", batch_size: int = 32,
) -> TaskVector:
    """The mean ``resid_post`` at the query position of ``batch``'s prompts, at every layer."""
    res = query_residuals(model, batch, site="resid_post", batch_size=batch_size)
    n_shots = int(batch.demo_index.max()) + 1  # demo_index is -1 outside demonstrations
    return TaskVector(res.mean(0), task, n_shots, None, run_info(model, method="task_vector", n=len(batch)))


@checked
def task_vector(
    model: ModelLike, task: Task | str, *, n: int = 32, n_shots: int = 5, seed: int = 0,
    template: PromptTemplate | str | None = None, demos_from: Task | str | None = None, batch_size: int = 32,
) -> TaskVector:
    """Hendel et al.'s task vector of ``task`` from ``n`` prompts of ``n_shots`` demos + a dummy query."""
    batch = make_prompts(model, task, n=n, n_shots=n_shots, seed=seed, template=template, demos_from=demos_from)
    name = task if isinstance(task, str) else task.name
    res = query_residuals(model, batch, site="resid_post", batch_size=batch_size)
    return TaskVector(res.mean(0), name, n_shots, None,
                      run_info(model, method="task_vector", n=n, n_shots=n_shots, seed=seed))


@checked
def task_vector_sweep(
    model: ModelLike, tv: TaskVector, task: Task | str, *, layers: Sequence[int] | None = None, n: int = 64,
    seed: int = 0, template: PromptTemplate | str | None = None, batch_size: int = 32, progress: bool | None = None,
) -> LayerSweepResult:
    """Zero-shot accuracy of ``task`` with the task vector patched in at each layer (Hendel's layer sweep).

    Use items held out from the ones ``tv`` was computed from (e.g. ``Task.split``) to choose the layer.
    """
    layer_list = resolve_layers(model, layers)
    batches = {"zero_shot": make_prompts(model, task, n=n, n_shots=0, seed=seed, template=template)}

    steering = {layer: SteeringVector.from_task_vector(tv, layer=layer).check_model(model)  # before any forward
                for layer in layer_list}

    def make_hooks(layer: int, sub: PromptBatch) -> list[Any]:
        return steering[layer].as_hooks(query_pos=sub.query_pos)

    vectors = torch.stack([steering[layer].vector for layer in layer_list])
    name = task if isinstance(task, str) else task.name
    return sweep_layers(model, batches, make_hooks, layer_list, method="task_vector", task=name,
                        info=run_info(model, method="task_vector", n=n, seed=seed), batch_size=batch_size,
                        progress=progress, query_edits=resid_edits(layer_list, vectors, mode="set"))
