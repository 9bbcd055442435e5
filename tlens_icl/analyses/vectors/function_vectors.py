"""Function vectors (Todd et al., ICLR 2024): the summed output of the heads that carry the task.

``FV = sum over heads (l, j) in A of  mean_z[l, j] @ W_O[l, j]`` where ``mean_z`` is the mean
``hook_z`` at the query position over clean ICL prompts and ``A`` the top-k heads by average indirect
effect (:func:`tlens_icl.analyses.causal.mediation.indirect_effect`). The output bias ``b_O`` is not part of a
head's output; with ``include_bias=True`` it is added once per layer that contributes a head (the
reference code adds it once per *head* on GPT-2/NeoX, which double-counts). Where a block normalizes its
attention output before the residual stream (Gemma 2/3), a layer's heads contribute
``norm(sum of every head's mean output) - norm(the same without them)`` instead: the raw sum would be on the
wrong scale (on Gemma-3-270M ~100x smaller than what the block writes).

Injection: ``resid_post[layer] += coeff * FV`` at the query position
(``SteeringVector.from_function_vector(fv)``, applied with :func:`~tlens_icl.steer`). Positive coefficient =
push toward the task.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from tlens_icl._typing import Head, ModelLike
from tlens_icl._validate import checked
from tlens_icl.analyses.vectors.common import (
    InjectionLayer,
    LayerSweepResult,
    Position,
    VectorOps,
    decode_vector,
    mean_head_activations,
    resolve_layers,
    sweep_layers,
)
from tlens_icl.analyses.vectors.steering import SteeringVector
from tlens_icl.engine.query import resid_edits
from tlens_icl.errors import TlensICLError
from tlens_icl.models.adapter import attn_output_bias, attn_post_norm, head_output_weights
from tlens_icl.prompts.batch import PromptBatch
from tlens_icl.prompts.pairs import make_prompt_pairs, make_prompts
from tlens_icl.prompts.templates import PromptTemplate
from tlens_icl.results.base import Result, require_same_model, run_info
from tlens_icl.tasks import Task

#: Prompt settings a function vector is evaluated in.
FV_SETTINGS = ("zero_shot", "shuffled_labels", "icl")


@dataclass(frozen=True)
class FunctionVector(VectorOps, InjectionLayer, Result):
    """A function vector ``[d_model]`` with the heads it was summed from.

    Supports arithmetic: ``fv_a + fv_b``, ``fv_a - fv_b``, ``2.0 * fv`` give new vectors whose
    ``task`` records the composition. ``layer`` is the suggested injection layer (``None`` until a
    sweep picked one; see :meth:`with_layer`).
    """

    vector: Float[Tensor, " d_model"]
    heads: tuple[tuple[int, int], ...]
    task: str
    layer: int | None
    info: dict[str, Any]

    title = "Function vector"
    finite = ("vector",)

    def decode(self, model: ModelLike, k: int = 10) -> list[tuple[str, float]]:
        """Top-``k`` tokens of the vector through the final norm and unembedding."""
        return decode_vector(model, self.vector, k)

    def to_steering_vector(self, **kwargs: Any) -> SteeringVector:
        """:meth:`SteeringVector.from_function_vector` of this vector (``mode="add"`` at ``resid_post``)."""
        return SteeringVector.from_function_vector(self, **kwargs)

    def _combine(self, other: "FunctionVector", sign: float, op: str) -> "FunctionVector":
        heads = tuple(dict.fromkeys(self.heads + other.heads))
        info = {**self.info, "composition": f"({self.task}) {op} ({other.task})"}
        return FunctionVector(self.vector + sign * other.vector.to(self.vector.device), heads,
                              f"{self.task}{op}{other.task}", self.layer, info)

    def __add__(self, other: "FunctionVector") -> "FunctionVector":
        return self._combine(other, 1.0, "+")

    def __sub__(self, other: "FunctionVector") -> "FunctionVector":
        return self._combine(other, -1.0, "-")

    def __mul__(self, c: float | int) -> "FunctionVector":
        return replace(self, vector=self.vector * float(c), task=f"{float(c):g}*{self.task}")

    __rmul__ = __mul__

    def __neg__(self) -> "FunctionVector":
        return self * -1.0

    def to_dataframe(self) -> Any:
        import pandas as pd

        return pd.DataFrame([{"task": self.task, "layer": self.layer, "norm": float(self.vector.norm()),
                              "heads": " ".join(str(Head(*h)) for h in self.heads)}])

    def summary(self) -> str:
        return (f"Function vector for {self.task} ({self.model_name}): {len(self.heads)} heads, "
                f"|v| = {float(self.vector.norm()):.3g}, layer {self.layer}")

    def plot(self, ax: Any = None) -> Any:
        """The heads summed into the vector, on the layer x head grid (numbered in the order given)."""
        from tlens_icl.viz.plots import head_heatmap

        L, H = int(self.info.get("n_layers", 1)), int(self.info.get("n_heads", 1))
        grid = torch.zeros(L, H)
        grid[[h[0] for h in self.heads], [h[1] for h in self.heads]] = 1.0
        where = "no injection layer chosen yet" if self.layer is None else f"injected after block {self.layer}"
        return head_heatmap(grid, title=f"Function vector heads: {self.task}", marked=self.heads, ax=ax,
                            cmap="Greys", vmin=0.0, vmax=2.5, annotate=False, colorbar=False,
                            subtitle=self._subtitle(f"{len(self.heads)} heads; {where}; |v| = {float(self.vector.norm()):.3g}"),
                            marked_label="heads in the vector (numbered by rank)")


def _head_list(model: ModelLike, heads: Sequence[Any]) -> tuple[tuple[int, int], ...]:
    out = []
    for h in heads:
        layer, head = (int(h[0]), int(h[1]))
        if not (0 <= layer < model.cfg.n_layers and 0 <= head < model.cfg.n_heads):
            raise TlensICLError(
                f"Head {h} is outside the model ({model.cfg.n_layers} layers x {model.cfg.n_heads} heads).")
        out.append((layer, head))
    if not out:
        raise TlensICLError("A function vector needs at least one head.")
    if len(set(out)) != len(out):
        raise TlensICLError(f"Duplicate heads in {out}.")
    return tuple(out)


@checked(eval_mode=False)
def function_vector_from_heads(
    model: ModelLike, mean_z: Float[Tensor, "layer head d_head"], heads: Sequence[Head | tuple[int, int]], *,
    task: str = "custom", include_bias: bool = False, layer: int | None = None, **info: Any,
) -> FunctionVector:
    """``sum_{(l, j) in heads} mean_z[l, j] @ W_O[l, j]`` (plus ``b_O`` once per layer if ``include_bias``).

    On a model whose blocks normalize the attention output before adding it to the residual stream (Gemma 2/3's
    post-attention norm, :func:`~tlens_icl.models.adapter.attn_post_norm`), each layer contributes what its heads
    write there: ``norm(all heads at their means) - norm(the other heads at their means)``, which is the sum above
    wherever there is no such norm.
    """
    hs = _head_list(model, heads)
    if tuple(mean_z.shape) != (model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_head):
        raise TlensICLError(f"mean_z must be [n_layers, n_heads, d_head] = "
                            f"{(model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_head)}, got {tuple(mean_z.shape)}.")
    layers = sorted({l for l, _ in hs})
    vec = torch.zeros(model.cfg.d_model, dtype=torch.float32)
    b_O = attn_output_bias(model, layers)  # None: bias-free attention (Llama, Gemma)
    with torch.no_grad():
        for i, at in enumerate(layers):  # one layer's W_O at a time (offloaded weights load per layer), in float32
            W_O = head_output_weights(model, at).float().cpu()
            z = mean_z[at].float().cpu()
            ours = {j for l, j in hs if l == at}
            mine = sum(z[j] @ W_O[j] for j in sorted(ours))
            bias = b_O[i].float().cpu() if b_O is not None else None
            if include_bias and bias is not None:
                mine = mine + bias
            norm = attn_post_norm(model, at)
            if norm is None:  # the attention output is added to the residual stream as it is
                vec += mine
                continue
            # a post-attention norm (Gemma 2/3): the heads' write is the norm of every head at its mean output,
            # less the norm of the other heads alone (with no such norm this difference is ``mine`` exactly).
            # The others are summed on their own, not as every - mine: an RMS norm rescales any rounding residue.
            rest = sum((z[j] @ W_O[j] for j in range(W_O.shape[0]) if j not in ours), torch.zeros_like(vec))
            if bias is not None and not include_bias:
                rest = rest + bias
            vec += norm(rest + mine) - norm(rest)
    return FunctionVector(vec, hs, task, layer,
                          run_info(model, method="function_vector", include_bias=include_bias, **info))


@checked
def function_vector(
    model: ModelLike, mediation: Any, *, task: str | None = None, k: int = 10, include_bias: bool = False,
    heads_by: str = "task",
) -> FunctionVector:
    """The function vector of ``task`` from a causal-mediation result (top-``k`` heads by mean AIE).

    ``mediation`` is an ``IndirectEffectResult``: its ``mean_z[task]`` (mean ``hook_z`` at the query over
    clean prompts) is projected through the top-``k`` heads' ``W_O`` slices. ``heads_by="task"`` ranks the heads
    by ``task``'s own AIE; ``heads_by="mean"`` by the AIE averaged over all of the mediation's tasks (Todd et
    al.'s universal head set A: steadier when each task has few corrupted prompts). ``task=None`` uses the
    first task's means and the averaged ranking.
    """
    if not (hasattr(mediation, "top_heads") and isinstance(getattr(mediation, "mean_z", None), Tensor)):
        raise TlensICLError(f"function_vector(): mediation must be an IndirectEffectResult (tlens_icl.indirect_effect), "
                            f"got {type(mediation).__name__}.")
    require_same_model(model, mediation, "the mediation result", where="function_vector(): ")
    if heads_by not in ("task", "mean"):
        raise TlensICLError(f"function_vector(): heads_by must be 'task' or 'mean', got {heads_by!r}.")
    names = list(mediation.tasks)
    if task is not None and task not in names:
        raise TlensICLError(f"The mediation result has no task {task!r}; it has {names}.")
    t = names.index(task) if task is not None else 0
    heads = mediation.top_heads(k, task=task if heads_by == "task" else None)
    if len(heads) < k:
        raise TlensICLError(f"function_vector(): k={k} heads requested, but the mediation result measured only "
                            f"{len(heads)} (it was run with heads=...); pass k <= {len(heads)}.")
    return function_vector_from_heads(model, mediation.mean_z[t], heads, task=task or names[0],
                                      include_bias=include_bias, k=k, heads_from="indirect_effect",
                                      heads_by=heads_by if task is not None else "mean",
                                      corruption=getattr(mediation, "corruption", None),
                                      mediation_info=getattr(mediation, "info", None))


@checked
def function_vector_from_task(
    model: ModelLike, task: Task | str, heads: Sequence[Head | tuple[int, int]], *, n: int = 32, n_shots: int = 10,
    seed: int = 0, template: PromptTemplate | str | None = None, demos_from: Task | str | None = None,
    include_bias: bool = False, batch_size: int = 32,
) -> FunctionVector:
    """Function vector from ``n`` clean ``n_shots`` prompts of ``task`` and an explicit head list."""
    batch = make_prompts(model, task, n=n, n_shots=n_shots, seed=seed, template=template, demos_from=demos_from)
    mean_z = mean_head_activations(model, batch, batch_size=batch_size)
    name = task if isinstance(task, str) else task.name
    return function_vector_from_heads(model, mean_z, heads, task=name, include_bias=include_bias,
                                      n=n, n_shots=n_shots, seed=seed)


def fv_settings_batches(
    model: ModelLike, task: Task | str, settings: Sequence[str], *, n: int, n_shots: int, seed: int,
    template: PromptTemplate | str | None = None, demos_from: Task | str | None = None,
) -> dict[str, PromptBatch]:
    """Prompt batches for each setting, all with the same queries (same seed)."""
    bad = [s for s in settings if s not in FV_SETTINGS]
    if bad:
        raise TlensICLError(f"Unknown setting(s) {bad}; choose from {FV_SETTINGS}.")
    out = {}
    for s in settings:
        if s == "zero_shot":
            out[s] = make_prompts(model, task, n=n, n_shots=0, seed=seed, template=template)
        elif s == "icl":
            out[s] = make_prompts(model, task, n=n, n_shots=n_shots, seed=seed, template=template,
                                  demos_from=demos_from)
        else:
            out[s] = make_prompt_pairs(model, task, n=n, n_shots=n_shots, corruption="shuffled_labels", seed=seed,
                                       template=template, demos_from=demos_from).corrupted
    return out


@checked
def function_vector_sweep(
    model: ModelLike, fv: FunctionVector | Tensor, task: Task | str, *, layers: Sequence[int] | None = None,
    settings: Sequence[str] = ("zero_shot", "shuffled_labels"), n: int = 64, n_shots: int = 10, seed: int = 0,
    coeff: float = 1.0, position: Position = "query", template: PromptTemplate | str | None = None,
    demos_from: Task | str | None = None, batch_size: int = 32, progress: bool | None = None,
) -> LayerSweepResult:
    """Accuracy with ``coeff * fv`` added after each block in ``layers``, per prompt setting.

    Settings: ``"zero_shot"`` (query only), ``"shuffled_labels"`` (``n_shots`` demonstrations with
    permuted labels), ``"icl"`` (clean demonstrations). Baselines (no vector) are stored alongside.
    """
    if isinstance(settings, str) or not isinstance(settings, Sequence) or not settings:
        raise TlensICLError(f"function_vector_sweep(): settings must be a non-empty list of {FV_SETTINGS}, got "
                            f"{settings!r}.")
    layer_list = resolve_layers(model, layers)
    batches = fv_settings_batches(model, task, settings, n=n, n_shots=n_shots, seed=seed, template=template,
                                  demos_from=demos_from)
    first_query = min(int(b.query_pos.min()) for b in batches.values())
    if not isinstance(position, str) and position > first_query:
        raise TlensICLError(f"position={position} lies after the query position ({first_query}) of some prompts, "
                            "where an added vector cannot change the answer; use position='query'.")

    def steering(layer: int) -> SteeringVector:
        return SteeringVector.from_function_vector(fv, layer=layer, coeff=coeff, position=position)

    def make_hooks(layer: int, sub: PromptBatch) -> list[Any]:
        return steering(layer).as_hooks(query_pos=sub.query_pos)

    steering(layer_list[0]).check_model(model)  # validates before any forward
    # At the query, every layer comes from one base run per batch (the engine's key/value reuse).
    vec = steering(layer_list[0]).vector
    edits = resid_edits(layer_list, vec, mode="add", coeff=coeff) if position == "query" else None
    name = task if isinstance(task, str) else task.name
    info = run_info(model, method="function_vector", coeff=coeff, n=n, n_shots=n_shots, seed=seed,
                    vector_task=getattr(fv, "task", "tensor"))
    return sweep_layers(model, batches, make_hooks, layer_list, method="function_vector", task=name, info=info,
                        batch_size=batch_size, progress=progress, query_edits=edits)
