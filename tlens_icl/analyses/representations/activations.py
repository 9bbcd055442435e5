"""Activation collection shared by the representational analyses (decodability, RSA, probing).

One pass over a prompt set (the engine's one capture path, :mod:`tlens_icl.engine.capture`) hooks only the
requested points (``sites`` x ``layers``), reduces each row to one vector per unit at the requested token
position inside the hook, and keeps nothing else, chunk by chunk, so memory is ``rows x units x d``
whatever the prompt length. The result is a frozen :class:`ActivationSet`
with ``save``/``load``; every row remembers its task, shot count, condition (e.g. ``clean`` /
``corrupted`` for a :class:`~tlens_icl.prompts.pairs.PromptPairBatch`), query input and query-item ``meta``, so
the causal analyses and the representational ones can run on the very same prompts.

Sites: ``resid_pre``, ``resid_post``, ``attn_out``, ``mlp_out`` give ``[example, layer, d_model]``;
``z`` (``hook_z``) gives ``[example, layer, head, d_head]``; ``head_out`` (``z @ W_O[layer, head]``,
without the bias ``b_O``) gives ``[example, layer, head, d_model]``.

Positions: ``"query"`` (each row's ``query_pos``: the token whose logits predict the answer) or a role
name from :data:`~tlens_icl.prompts.ROLES` (the mean over that row's tokens of the role).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tlens_icl._typing import ModelLike
from tlens_icl._validate import checked
from tlens_icl.engine import hooks
from tlens_icl.engine.caches import cache_activation, check_cache
from tlens_icl.engine.capture import AtPositions, Weighted, capture
from tlens_icl.errors import TlensICLError
from tlens_icl.models.adapter import head_output_weights
from tlens_icl.prompts.batch import ROLE_ID, PromptBatch
from tlens_icl.prompts.pairs import PromptPairBatch, make_prompts
from tlens_icl.prompts.templates import PromptTemplate
from tlens_icl.results.base import Result, run_info
from tlens_icl.tasks import Task

LAYER_SITES = ("resid_pre", "resid_post", "attn_out", "mlp_out")
HEAD_SITES = ("z", "head_out")
SITES = LAYER_SITES + HEAD_SITES


@dataclass(frozen=True)
class ActivationSet(Result):
    """Per-row activations at one token position, for each collected site.

    Layer sites are ``[example, layer, d_model]`` and head sites ``[example, layer, head, d]`` over the
    layers in ``layers`` (a site not collected is ``None``). Row ``i`` came from a prompt of task
    ``tasks[i]`` with ``n_shots[i]`` demonstrations under ``conditions[i]``; ``queries[i]`` is its query
    input and ``meta[i]`` the query item's ``meta``.
    """

    tasks: tuple[str, ...]
    n_shots: Int[Tensor, " example"]
    conditions: tuple[str, ...]
    queries: tuple[str, ...]
    meta: tuple[dict, ...]
    layers: tuple[int, ...]
    position: str
    info: dict[str, Any]
    resid_pre: Float[Tensor, "example layer d_model"] | None = None
    resid_post: Float[Tensor, "example layer d_model"] | None = None
    attn_out: Float[Tensor, "example layer d_model"] | None = None
    mlp_out: Float[Tensor, "example layer d_model"] | None = None
    z: Float[Tensor, "example layer head d_head"] | None = None
    head_out: Float[Tensor, "example layer head d_model"] | None = None

    title = "Activations"

    def __post_init__(self) -> None:
        n = self.n_shots.shape[0]
        if not (len(self.tasks) == len(self.conditions) == len(self.queries) == len(self.meta) == n):
            raise TlensICLError("ActivationSet row labels disagree on the number of rows.")
        for site in self.sites:
            act = getattr(self, site)
            if act.shape[0] != n or act.shape[1] != len(self.layers):
                raise TlensICLError(f"ActivationSet.{site} has shape {tuple(act.shape)}; expected "
                                    f"[{n}, {len(self.layers)}, ...].")

    def __len__(self) -> int:
        return int(self.n_shots.shape[0])

    @property
    def sites(self) -> tuple[str, ...]:
        return tuple(s for s in SITES if getattr(self, s) is not None)

    def get(self, site: str) -> Tensor:
        """The activations of ``site``; raises if it was not collected."""
        if site not in SITES:
            raise TlensICLError(f"Unknown site {site!r}; choose one of {SITES}.")
        act = getattr(self, site)
        if act is None:
            raise TlensICLError(f"Site {site!r} was not collected (collected: {self.sites}); pass sites=[{site!r}, ...].")
        return act

    def units(self, site: str) -> tuple[Float[Tensor, "example unit d"], tuple[tuple[int, ...], ...]]:
        """``site`` flattened to ``[example, unit, d]`` with unit labels ``(layer,)`` or ``(layer, head)``."""
        act = self.get(site)
        if site in LAYER_SITES:
            return act, tuple((layer,) for layer in self.layers)
        n_heads = act.shape[2]
        labels = tuple((layer, h) for layer in self.layers for h in range(n_heads))
        return act.reshape(act.shape[0], -1, act.shape[-1]), labels

    def labels(self, spec: str | Sequence[Any]) -> list[Any]:
        """Per-row labels: ``"task"``, ``"condition"``, ``"query"``, ``"n_shots"``, ``"meta.<key>"``, or a sequence."""
        if not isinstance(spec, str):
            values = list(spec)
            if len(values) != len(self):
                raise TlensICLError(f"{len(values)} labels given for {len(self)} rows.")
            return values
        if spec == "task":
            return list(self.tasks)
        if spec == "condition":
            return list(self.conditions)
        if spec == "query":
            return list(self.queries)
        if spec == "n_shots":
            return self.n_shots.tolist()
        if spec.startswith("meta."):
            key = spec[5:]
            missing = [i for i, m in enumerate(self.meta) if key not in m]
            if missing:
                raise TlensICLError(f"Row {missing[0]} (task {self.tasks[missing[0]]!r}) has no meta[{key!r}].")
            return [m[key] for m in self.meta]
        raise TlensICLError(f"Unknown label {spec!r}: use 'task', 'condition', 'query', 'n_shots', 'meta.<key>' "
                            "or a sequence with one label per row.")

    def shot_groups(self) -> dict[int, Int[Tensor, " rows"]]:
        """Row indices of each shot count, in increasing shot order."""
        return {int(s): torch.nonzero(self.n_shots == s).flatten() for s in torch.unique(self.n_shots).tolist()}

    def select(self, index: Any) -> "ActivationSet":
        """A subset of rows (slice, list, bool or index tensor)."""
        idx = torch.arange(len(self))[index].reshape(-1)
        pick = lambda seq: tuple(seq[int(i)] for i in idx)  # noqa: E731
        kw = {s: getattr(self, s)[idx] for s in self.sites}
        return replace(self, tasks=pick(self.tasks), n_shots=self.n_shots[idx], conditions=pick(self.conditions),
                       queries=pick(self.queries), meta=pick(self.meta), **kw)

    @classmethod
    def concat(cls, sets: Sequence["ActivationSet"]) -> "ActivationSet":
        """Stack the rows of several sets collected with the same sites, layers and position."""
        if not sets:
            raise TlensICLError("ActivationSet.concat needs at least one set.")
        first = sets[0]
        for s in sets[1:]:
            if (s.sites, s.layers, s.position) != (first.sites, first.layers, first.position):
                raise TlensICLError("Cannot concatenate activation sets with different sites, layers or positions.")
        join = lambda name: tuple(x for s in sets for x in getattr(s, name))  # noqa: E731
        return replace(first, tasks=join("tasks"), n_shots=torch.cat([s.n_shots for s in sets]),
                       conditions=join("conditions"), queries=join("queries"), meta=join("meta"),
                       **{site: torch.cat([getattr(s, site) for s in sets]) for site in first.sites})

    def to_dataframe(self) -> Any:
        import pandas as pd

        return pd.DataFrame({"task": self.tasks, "n_shots": self.n_shots.tolist(), "condition": self.conditions,
                             "query": self.queries})

    def summary(self) -> str:
        shapes = ", ".join(f"{s} {list(getattr(self, s).shape)}" for s in self.sites)
        return (f"{self.title} at position {self.position!r}: {len(self)} rows, tasks {sorted(set(self.tasks))}, "
                f"shots {sorted(set(self.n_shots.tolist()))}; {shapes}")

    def plot(self, site: str | None = None, ax: Any = None) -> Any:
        """Mean activation norm per layer (per shot count) - a quick sanity view."""
        from tlens_icl.viz.plots import line_plot

        site = site or self.sites[0]
        act = self.get(site)
        norms = act.norm(dim=-1).reshape(len(self), len(self.layers), -1).mean(-1)
        ys = {f"{s} shots": norms[idx].mean(0).tolist() for s, idx in self.shot_groups().items()}
        return line_plot(self.layers, ys, xlabel="layer", ylabel=f"mean L2 norm of {site}", ax=ax,
                         title=f"Activation norm per layer ({site} at {self.position!r})",
                         subtitle=self._subtitle(f"{len(self)} rows, {len(set(self.tasks))} tasks"))


# ---- collection ------------------------------------------------------------------------------------
def _check_options(model: ModelLike, sites: Sequence[str], position: str, layers: Sequence[int] | None) -> tuple[int, ...]:
    bad = [s for s in sites if s not in SITES]
    if bad or not sites:
        raise TlensICLError(f"Unknown or no site(s) {bad}; choose from {SITES}.")
    if position != "query" and position not in ROLE_ID:
        raise TlensICLError(f"position must be 'query' or a token role {tuple(ROLE_ID)}, got {position!r}.")
    n_layers = int(model.cfg.n_layers)
    layer_tuple = tuple(range(n_layers)) if layers is None else tuple(int(x) for x in layers)
    if not layer_tuple or any(not 0 <= x < n_layers for x in layer_tuple):
        raise TlensICLError(f"layers must be in [0, {n_layers}), got {layers!r}.")
    return layer_tuple


def _position_weights(batch: PromptBatch, position: str) -> Float[Tensor, "batch pos"]:
    """Row-normalised weights over positions: one-hot at the query, or uniform over a role's tokens."""
    if position == "query":
        w = torch.zeros(batch.tokens.shape)
        w[torch.arange(len(batch)), batch.query_pos] = 1.0
        return w
    mask = batch.mask(position).float()
    empty = torch.nonzero(mask.sum(1) == 0).flatten().tolist()
    if empty:
        raise TlensICLError(f"Row {empty[0]} has no token with role {position!r} (e.g. a 0-shot prompt has no demo "
                            "tokens); use position='query' or drop those rows.")
    return mask / mask.sum(1, keepdim=True)


def _hook_name(site: str, layer: int) -> str:
    return hooks.z(layer) if site in HEAD_SITES else hooks.site_name(site, layer)


def _collect_batch(model: ModelLike, batch: PromptBatch, sites: Sequence[str], layers: tuple[int, ...],
                   position: str, batch_size: int, progress: bool | None) -> dict[str, Tensor]:
    weights = _position_weights(batch, position)  # validated before the first forward
    reducer = AtPositions(batch.query_pos) if position == "query" else Weighted(weights)
    names = list(dict.fromkeys(_hook_name(s, layer) for s in sites for layer in layers))
    stacked = capture(model, batch.tokens, {n: reducer for n in names}, batch_size=batch_size, progress=progress,
                      operation="collect_activations")
    return _assemble(model, stacked, sites, layers)


def _assemble(model: Any, stacked: Mapping[str, Tensor], sites: Sequence[str], layers: tuple[int, ...]) -> dict[str, Tensor]:
    """Per-site ``[example, layer, ...]`` tensors from the reduced activations of each hook name."""
    result: dict[str, Tensor] = {}
    for site in sites:
        per_layer = [stacked[_hook_name(site, layer)] for layer in layers]
        if site == "head_out":
            per_layer = [torch.einsum("bhd,hdm->bhm", z, head_output_weights(model, layer).float().cpu())
                         for z, layer in zip(per_layer, layers)]
        result[site] = torch.stack(per_layer, 1)
    return result


def _from_cache(model: ModelLike, cache: Any, batch: PromptBatch, sites: Sequence[str], layers: tuple[int, ...],
                position: str) -> dict[str, Tensor]:
    check_cache(cache, batch, model)
    w = _position_weights(batch, position)
    names = dict.fromkeys(_hook_name(s, layer) for s in sites for layer in layers)
    weighted, rows = Weighted(w), torch.arange(len(batch))  # the capture path's reducer, on the cached activations
    return _assemble(model, {n: weighted(cache_activation(cache, batch, n), rows).float().cpu() for n in names},
                     sites, layers)


def _row_labels(batch: PromptBatch, task: str, condition: str) -> dict[str, Any]:
    return dict(
        tasks=(task,) * len(batch),
        n_shots=(batch.demo_index.max(1).values + 1).clamp(min=0),
        conditions=(condition,) * len(batch),
        queries=tuple(q.input for q in batch.queries),
        meta=tuple(dict(q.meta) for q in batch.queries),
    )


@checked
def collect_activations(
    model: ModelLike, prompts: PromptBatch | PromptPairBatch, *, sites: Sequence[str] = ("resid_post",),
    position: str = "query", layers: Sequence[int] | None = None, task: str | None = None,
    condition: str | None = None, batch_size: int = 32, progress: bool | None = None, cache: Any = None,
) -> ActivationSet:
    """Activations of ``prompts`` at ``sites`` x ``layers``, one vector per row and unit, in one chunked pass.

    A :class:`~tlens_icl.prompts.pairs.PromptPairBatch` gives its clean rows (condition ``"clean"``) followed by its
    corrupted rows (``"corrupted"``), labelled with the pair's task. A :class:`PromptBatch` is labelled
    ``task`` (default: the batch's own task, else ``"prompts"``) and ``condition`` (default ``""``). The shot count of each row is read
    from its demonstration indices. Activations are float32 on the CPU.

    ``cache``: a TransformerLens ``ActivationCache`` you already have from
    ``model.run_with_cache(prompts.tokens)`` (``prompts`` a :class:`PromptBatch`); it is read instead of
    running the model again, and gives the same set as the library's own pass.
    """
    layer_tuple = _check_options(model, sites, position, layers)
    if cache is not None:
        if not isinstance(prompts, PromptBatch):
            raise TlensICLError("With cache=..., prompts must be the PromptBatch whose tokens produced the cache.")
        acts = _from_cache(model, cache, prompts, sites, layer_tuple, position)
        return ActivationSet(**_row_labels(prompts, task or prompts.task or "prompts", condition or ""), layers=layer_tuple,
                             position=position, info=run_info(model, sites=list(sites), source="ActivationCache"),
                             **acts)
    if isinstance(prompts, PromptPairBatch):
        parts = [(prompts.clean, task or prompts.task, "clean"), (prompts.corrupted, task or prompts.task, "corrupted")]
    elif isinstance(prompts, PromptBatch):
        parts = [(prompts, task or prompts.task or "prompts", condition or "")]
    else:
        raise TlensICLError(f"prompts must be a PromptBatch or PromptPairBatch, got {type(prompts).__name__}.")
    for batch, _, _ in parts:
        _position_weights(batch, position)  # every check before any forward pass
    sets = []
    for batch, name, cond in parts:
        acts = _collect_batch(model, batch, sites, layer_tuple, position, batch_size, progress)
        sets.append(ActivationSet(**_row_labels(batch, name, cond), layers=layer_tuple, position=position,
                                  info=run_info(model, sites=list(sites)), **acts))
    return ActivationSet.concat(sets)


@checked
def task_activations(
    model: ModelLike, tasks: Task | str | Sequence[Task | str], *, shots: Sequence[int] = (0, 1, 2, 4, 8),
    n: int = 50, seed: int = 0, template: PromptTemplate | str | None = None, sites: Sequence[str] = ("resid_post",),
    position: str = "query", layers: Sequence[int] | None = None, batch_size: int = 32, progress: bool | None = None,
) -> ActivationSet:
    """:func:`collect_activations` over ``n`` clean prompts of every task x shot count in ``shots`` (``make_prompts``,
    same seed).

    The same query items are used at every shot count of a task, so shot counts compare like with like.
    """
    layer_tuple = _check_options(model, sites, position, layers)
    task_list = [tasks] if isinstance(tasks, (str, Task)) else list(tasks)
    if not task_list:
        raise TlensICLError("task_activations needs at least one task.")
    batches = [(t if isinstance(t, str) else t.name, make_prompts(model, t, n=n, n_shots=s, seed=seed, template=template))
               for t in task_list for s in shots]
    for _, b in batches:
        _position_weights(b, position)
    sets = [collect_activations(model, b, sites=sites, position=position, layers=layer_tuple, task=name,
                                condition="clean", batch_size=batch_size, progress=progress) for name, b in batches]
    out = ActivationSet.concat(sets)
    return replace(out, info=run_info(model, sites=list(sites), n=n, seed=seed, n_shots=list(shots)))


def from_arrays(
    values: Float[Tensor, "example layer d"], tasks: Sequence[str], *, n_shots: Sequence[int] | None = None,
    site: str = "resid_post", queries: Sequence[str] | None = None, meta: Sequence[Mapping[str, Any]] | None = None,
) -> ActivationSet:
    """An :class:`ActivationSet` from your own vectors (e.g. another library's cache, or synthetic data).

    ``values`` is ``[example, layer, d]`` for a layer site or ``[example, layer, head, d]`` for a head site.
    """
    n = values.shape[0]
    if site not in SITES:
        raise TlensICLError(f"Unknown site {site!r}; choose one of {SITES}.")
    expected = 4 if site in HEAD_SITES else 3
    if values.dim() != expected:
        raise TlensICLError(f"site {site!r} needs a {expected}-D tensor, got shape {tuple(values.shape)}.")
    return ActivationSet(
        tasks=tuple(tasks), n_shots=torch.tensor(list(n_shots) if n_shots is not None else [0] * n, dtype=torch.long),
        conditions=("",) * n, queries=tuple(queries) if queries is not None else tuple(str(i) for i in range(n)),
        meta=tuple(dict(m) for m in meta) if meta is not None else ({},) * n,
        layers=tuple(range(values.shape[1])), position="query", info=run_info(None, source="from_arrays"),
        **{site: values.float()},
    )


__all__ = ["ActivationSet", "HEAD_SITES", "LAYER_SITES", "SITES", "collect_activations", "from_arrays", "task_activations"]
