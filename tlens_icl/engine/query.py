"""Exact interventions at each row's query position, computed without re-running what they cannot change.

An intervention at layer ``L`` on the query token changes nothing before ``L`` and nothing at earlier
positions. :func:`query_interventions` evaluates many such interventions (*variants*) on one prompt
batch, each as if it had its own full forward, by one of three exact routes:

* ``"kv"`` (TransformerLens 3.9+ and 4 bridges around Hugging Face models, and TransformerLens 3
  ``HookedTransformer`` s through their own KV cache and ``start_at_layer``): one unpatched *base run* per
  row chunk records every layer's keys/values and attention masks (:mod:`tlens_icl.models.kv`); each
  variant then recomputes only a copy of the query token, from its first edited layer on, attending to
  the frozen prefix. Copies are grouped by first layer (a cost model picks the grouping; blocks before
  a group's layer are skipped and the query's recorded residual is injected there), several copies per
  forward (each sees the prefix and itself only, at the query's position).
* ``"copies"`` (models without reusable keys/values, e.g. ``boot_native``): the copies are appended to
  the prompt in one forward, with the query's ``position_ids`` and a 4-D additive mask letting each see
  the prefix before the query and itself.
* ``"naive"``: one full forward per variant (TransformerLens's and the papers' loop).

Every forward of ``kv`` and ``copies`` carries an unpatched *control* copy that must reproduce the base
run's logits (tolerance scaled to the model's dtype: :func:`control_tolerance`). If it does not, or
the route is unavailable, ``method="auto"`` falls back to the next route with one warning per model and
reason - never a silently wrong number; a forced ``method`` raises :class:`~tlens_icl.errors.ModelStateError`.

Variants are :class:`Interventions`: vectorised :class:`Edit` s (one per hook, covering all its variants:
no Python loop over heads or rows). Builders: :func:`set_heads` (head patching / mediation),
:func:`set_head_means` (mean ablation), :func:`blend_heads` (soft injection), :func:`resid_edits`
(function/task vectors). Results are ``reduce(logits at the query, rows)`` per variant and row - a
metric, never the logits of every variant - as float32 on the CPU.

Memory: row chunks are sorted by query position and cut after it; rows and copies per forward are capped
by :func:`tlens_icl.models.adapter.memory_budget` (bytes of activations one forward may use). A chunk that
still runs out of memory is re-run with half the rows (:func:`tlens_icl.engine.runs.in_plan`: finished
chunks kept, one warning), copies per forward staying at the size planned for the full chunk, so a retry
needs less memory; every route's result is the same as without the back-off.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from numbers import Integral
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tlens_icl._typing import Head, ModelLike
from tlens_icl.engine import hooks
from tlens_icl.engine.runs import (
    FastPathUnsupported,
    bytes_per_token,
    check_control,
    control_tolerance,
    in_plan,
    logit_rows,
    query_plan,
    rows_per_forward,
)
from tlens_icl.errors import HookNotFiredError, ModelStateError, TlensICLError
from tlens_icl.models import adapter, kv
from tlens_icl.models.adapter import ModelHandle, resolved

#: Per-layer cost of one forward in token units (weights read, hooks, Python), for grouping copies.
FORWARD_OVERHEAD_TOKENS = 64
METHODS = ("auto", "fast", "kv", "copies", "naive")

#: ``reduce(logits [n, d_vocab], rows [n]) -> [n, ...]``: e.g. a metric of each row's answer.
Reduce = Callable[[Tensor, Tensor], Tensor]
#: Older name of :data:`Reduce` (a scorer indexes its answers by ``rows``).
Scorer = Reduce




def progress_bar(total: int, enabled: bool | None, desc: str) -> Any:
    from tlens_icl.engine.progress import progress_bar as bar

    return bar(total=total, enabled=enabled, desc=desc)


def bind(fn: Callable[..., Any], **kw: Any) -> Callable[[Tensor, Any], Any]:
    def hook_fn(act: Tensor, hook: Any) -> Any:
        return fn(act, hook, **kw)

    return hook_fn


# ---- heads ----------------------------------------------------------------------------------------
def all_heads(model: ModelLike) -> list[Head]:
    return [Head(layer, head) for layer in range(model.cfg.n_layers) for head in range(model.cfg.n_heads)]


def resolve_heads(model: ModelLike, heads: Sequence[Head | tuple[int, int]] | None) -> list[Head]:
    """``heads`` as a duplicate-free list of :class:`Head` (None: every head), checked against the model."""
    if heads is None:
        return all_heads(model)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    out = []
    for h in heads:
        if not (isinstance(h, tuple) and len(h) == 2 and all(isinstance(i, Integral) and not isinstance(i, bool) for i in h)):
            raise TlensICLError(f"heads must be Head(layer, head) or (layer, head) int pairs, got {h!r}.")
        if not (0 <= h[0] < n_layers and 0 <= h[1] < n_heads):
            raise TlensICLError(f"Head {h!r} is out of range: the model has {n_layers} layers x {n_heads} heads.")
        out.append(Head(int(h[0]), int(h[1])))
    if not out:
        raise TlensICLError("heads is empty; pass None to patch every head.")
    return list(dict.fromkeys(out))


def head_grid(model: ModelLike, cells: Sequence[Head], values: Float[Tensor, "cell batch"]) -> Float[Tensor, "layer head batch"]:
    """Per-cell values placed on the ``[layer, head]`` grid; heads not in ``cells`` hold NaN (not measured)."""
    out = torch.full((model.cfg.n_layers, model.cfg.n_heads, values.shape[-1]), float("nan"))
    out[[c.layer for c in cells], [c.head for c in cells]] = values.float()
    return out


def max_sequence_length(model: ModelLike) -> int:
    """Longest input the model computes without truncation: ``n_ctx``, or a shorter sliding window."""
    window = adapter.sliding_window(model)
    return int(model.cfg.n_ctx) if window is None else min(int(model.cfg.n_ctx), window)


# ---- interventions --------------------------------------------------------------------------------
#: ``fn(act [rows, k, ...], rows [rows], which [k]) -> [rows, k, ...]``: the new query-position activation
#: of ``k`` copies, ``which`` indexing the edit's own variant list.
EditFn = Callable[[Tensor, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Edit:
    """Replace the query-position activation at ``hook`` (a block ``layer`` hook) for ``variants``."""

    hook: str
    layer: int
    variants: tuple[int, ...]
    fn: EditFn


@dataclass(frozen=True)
class Interventions:
    """``n`` variants, each the set of :class:`Edit` s listing it (a variant without edits is the base run)."""

    n: int
    edits: tuple[Edit, ...] = field(default=())

    def __post_init__(self) -> None:
        for e in self.edits:
            if any(not 0 <= v < self.n for v in e.variants):
                raise TlensICLError(f"Edit at {e.hook} names a variant outside 0..{self.n - 1}.")

    def start_layers(self, n_layers: int) -> list[int]:
        """First edited block of each variant (``n_layers``: no edit)."""
        first = [n_layers] * self.n
        for e in self.edits:
            for v in e.variants:
                first[v] = min(first[v], e.layer)
        return first

    def __add__(self, other: "Interventions") -> "Interventions":
        """The variants of ``self`` followed by those of ``other``."""
        shifted = tuple(Edit(e.hook, e.layer, tuple(v + self.n for v in e.variants), e.fn) for e in other.edits)
        return Interventions(self.n + other.n, self.edits + shifted)


def set_heads(cells: Sequence[Head], values: Float[Tensor, "batch layer head d_head"]) -> Interventions:
    """Variant ``i`` sets ``z[row, query, cells[i]] := values[row, layer, head]`` (head patching)."""
    by_layer: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for i, (layer, head) in enumerate(cells):
        by_layer[layer].append((i, head))
    edits = []
    for layer, items in sorted(by_layer.items()):
        heads = torch.tensor([h for _, h in items])

        def fn(act: Tensor, rows: Tensor, which: Tensor, layer: int = layer, heads: Tensor = heads) -> Tensor:
            hs = heads[which]
            new = act.clone()
            k = torch.arange(len(hs), device=act.device)
            new[:, k, hs.to(act.device)] = values[rows][:, layer, hs].to(act.device, act.dtype)
            return new

        edits.append(Edit(hooks.z(layer), layer, tuple(i for i, _ in items), fn))
    return Interventions(len(cells), tuple(edits))


def set_head_means(head_sets: Sequence[Sequence[Head]], means: Float[Tensor, "layer head d_head"]) -> Interventions:
    """Variant ``i`` sets every head of ``head_sets[i]`` to ``means[layer, head]`` (mean ablation at the query)."""
    per_layer: dict[int, list[tuple[int, Tensor]]] = defaultdict(list)
    n_heads = means.shape[1]
    for i, hs in enumerate(head_sets):
        layers: dict[int, list[int]] = defaultdict(list)
        for layer, head in hs:
            layers[layer].append(head)
        for layer, heads in layers.items():
            sel = torch.zeros(n_heads, dtype=torch.bool)
            sel[heads] = True
            per_layer[layer].append((i, sel))
    edits = []
    for layer, items in sorted(per_layer.items()):
        sel = torch.stack([s for _, s in items])  # [k, head]

        def fn(act: Tensor, rows: Tensor, which: Tensor, layer: int = layer, sel: Tensor = sel) -> Tensor:
            m = sel[which].to(act.device)[None, :, :, None]  # [1, k, head, 1]
            return torch.where(m, means[layer].to(act.device, act.dtype), act)

        edits.append(Edit(hooks.z(layer), layer, tuple(i for i, _ in items), fn))
    return Interventions(len(head_sets), tuple(edits))


def blend_heads(embeddings: Float[Tensor, "layer head d_head"], alpha: Float[Tensor, "layer head"]) -> Interventions:
    """One variant: ``z[l, h] := (1 - alpha[l, h]) z[l, h] + alpha[l, h] embeddings[l, h]`` at every layer."""
    edits = []
    for layer in range(embeddings.shape[0]):
        if not bool(alpha[layer].any()):
            continue  # alpha = 0: exactly the unedited head outputs

        def fn(act: Tensor, rows: Tensor, which: Tensor, layer: int = layer) -> Tensor:
            a = alpha[layer].to(act.device, act.dtype)[:, None]
            return (1 - a) * act + a * embeddings[layer].to(act.device, act.dtype)

        edits.append(Edit(hooks.z(layer), layer, (0,), fn))
    return Interventions(1, tuple(edits))


def resid_edits(
    layers: Sequence[int], vectors: Float[Tensor, "... d_model"], *, site: str = "resid_post", mode: str = "add",
    coeff: float = 1.0,
) -> Interventions:
    """Variant ``j`` edits the residual at ``site`` of block ``layers[j]`` at the query.

    ``mode="add"``: ``resid += coeff * v`` (function vectors; adding zero is no edit, so the variant equals
    the base run bit for bit); ``"set"``: ``resid := v`` (task vectors). ``vectors``: ``[d_model]`` for every
    variant, or ``[n_variants, d_model]``.
    """
    if mode not in ("add", "set"):
        raise TlensICLError(f"mode must be 'add' or 'set', got {mode!r}.")
    n = len(layers)
    vecs = vectors if vectors.dim() == 2 else vectors[None].expand(n, -1)
    if vecs.shape[0] != n:
        raise TlensICLError(f"{vecs.shape[0]} vectors for {n} layers.")
    by_layer: dict[int, list[int]] = defaultdict(list)
    for j, layer in enumerate(layers):
        if mode == "set" or (coeff != 0 and bool(vecs[j].any())):  # adding zero: exactly the base run
            by_layer[int(layer)].append(j)
    edits = []
    for layer, js in sorted(by_layer.items()):
        v_l = vecs[js]  # [k, d]

        def fn(act: Tensor, rows: Tensor, which: Tensor, v_l: Tensor = v_l) -> Tensor:
            v = v_l[which].to(act.device, act.dtype)[None]
            return act + coeff * v if mode == "add" else v.expand_as(act).clone()

        edits.append(Edit(hooks.site_name(site, layer), layer, tuple(js), fn))
    return Interventions(n, tuple(edits))


# ---- results and checks -----------------------------------------------------------------------------
@dataclass(frozen=True)
class QueryRun:
    """``values[v, i]``: ``reduce`` of variant ``v`` on row ``i``; ``baseline[i]``: of the unpatched run.

    ``captured[name]``: the base run's activation at each row's query; ``method``: the route used.
    """

    values: Tensor
    baseline: Tensor
    captured: dict[str, Tensor]
    method: str
    control_error: float


# ---- the engine ---------------------------------------------------------------------------------------
@resolved
def query_interventions(
    model: ModelLike | ModelHandle, tokens: Int[Tensor, "batch pos"], query_pos: Int[Tensor, " batch"], interventions: Interventions,
    reduce: Reduce, *, method: str = "auto", capture: Sequence[str] = (), batch_size: int = 16,
    memory_budget: int | None = None, progress: bool | None = None, operation: str = "query_interventions",
) -> QueryRun:
    """Evaluate every variant of ``interventions`` at the query of each row (module docstring).

    ``method``: ``"auto"`` (fastest exact route, falling back with a warning), ``"fast"`` (``kv`` or
    ``copies``, raising rather than looping), ``"kv"``, ``"copies"`` or ``"naive"``. ``capture``: hook
    names whose unpatched query-position activation to return (free: read in the base run).
    """
    if model.remote:
        from tlens_icl.models import remote

        raise remote.unsupported("", f"{operation} patches activations at the query with the engine's own forwards "
                                 "(key/value reuse, appended copies), which a remote driver cannot run")
    if method not in METHODS:
        raise TlensICLError(f"method must be one of {METHODS}, got {method!r}.")
    hooks.require_hooks(model, [e.hook for e in interventions.edits] + list(capture))
    if tokens.shape[0] != query_pos.shape[0]:
        raise TlensICLError(f"{tokens.shape[0]} rows of tokens but {query_pos.shape[0]} query positions.")
    if tokens.shape[0] and (int(query_pos.min()) < 0 or int(query_pos.max()) >= tokens.shape[1]):
        raise TlensICLError("query_pos outside the token batch.")
    route = _routes(model, method)
    budget = memory_budget or model.budget
    for i, name in enumerate(route):
        try:
            return _RUNNERS[name](model, tokens, query_pos.long().cpu(), interventions, reduce, list(capture),
                                  batch_size, budget, progress)
        except (FastPathUnsupported, kv.KVUnsupported) as e:
            if i == len(route) - 1:
                raise ModelStateError(f"The {name!r} query-intervention route is not exact for this model: {e}") from e
            nxt = route[i + 1]
            model.warn_once(f"query:{name}:{type(e).__name__}:{str(e)[:40]}",
                            f"tlens_icl: the {name!r} route for query interventions is not exact for this model "
                            f"({e}); falling back to {nxt!r} (exact, slower).", stacklevel=4)
    raise AssertionError("unreachable")  # pragma: no cover


def _routes(model: ModelHandle, method: str) -> list[str]:
    caps = model.caps
    fast = (["kv"] if kv.kv_reuse_possible(model) or caps.past_kv == "tl" else []) + ["copies"]
    return {"auto": fast + ["naive"], "fast": fast, "kv": ["kv"], "copies": ["copies"], "naive": ["naive"]}[method]


class _Out:
    """Per-variant results filled chunk by chunk (allocated from the first reduced tensor)."""

    def __init__(self, n_variants: int, n_rows: int) -> None:
        self.nv, self.n = n_variants, n_rows
        self.values: Tensor | None = None
        self.baseline: Tensor | None = None
        self.captured: dict[str, Tensor] = {}
        self.err = 0.0

    def base(self, rows: Tensor, value: Tensor, captured: dict[str, Tensor]) -> None:
        value = value.float().cpu()
        with torch.inference_mode(False):  # results are ordinary tensors, usable with autograd
            if self.baseline is None:
                self.baseline = torch.empty((self.n, *value.shape[1:]))
                self.values = torch.empty((self.nv, self.n, *value.shape[1:]))
            for name, act in captured.items():
                if name not in self.captured:
                    self.captured[name] = torch.empty((self.n, *act.shape[1:]))
        self.baseline[rows] = value
        for name, act in captured.items():
            self.captured[name][rows] = act.float().cpu()

    def put(self, variants: Sequence[int], rows: Tensor, value: Tensor) -> None:
        """``value [rows, k, ...]`` for ``variants`` (k of them)."""
        assert self.values is not None
        self.values[torch.tensor(list(variants))[:, None], rows[None, :]] = value.float().cpu().transpose(0, 1)

    def done(self, method: str) -> QueryRun:
        if self.values is None:  # no rows
            self.values, self.baseline = torch.empty(self.nv, 0), torch.empty(0)
        return QueryRun(self.values, self.baseline, self.captured, method, self.err)  # type: ignore[arg-type]


def _edit_hooks(interventions: Interventions, variants: Sequence[int], slot_of: Callable[[Tensor], Tensor],
                rows: Tensor) -> list[tuple[str, Any]]:
    """Hooks applying every edit to the copies of ``variants`` (copy ``j`` of ``variants[j]`` at ``slot_of``)."""
    index = {v: j for j, v in enumerate(variants)}
    out = []
    for e in interventions.edits:
        mine = [(w, index[v]) for w, v in enumerate(e.variants) if v in index]
        if not mine:
            continue
        which = torch.tensor([w for w, _ in mine])
        slots = slot_of(torch.tensor([j for _, j in mine]))

        def fn(act: Tensor, hook: Any, e: Edit = e, which: Tensor = which, slots: Tensor = slots) -> Tensor:
            s = slots.to(act.device)
            new = act.clone()
            new[:, s] = e.fn(act[:, s], rows, which)
            return new

        out.append((e.hook, fn))
    return out


def copy_position_ids(query_pos: Tensor, n_copies: int) -> Tensor:
    """``position_ids`` of ``n_copies`` copies of each row's query token: the query's own position."""
    return query_pos[:, None].expand(-1, n_copies)


def _reduce_copies(reduce: Reduce, logits: Tensor, rows: Tensor) -> Tensor:
    """``reduce`` over ``logits [b, k, V]`` -> ``[b, k, ...]``."""
    b, k = logits.shape[:2]
    flat = reduce(logits.reshape(b * k, -1), rows.repeat_interleave(k))
    return flat.reshape(b, k, *flat.shape[1:])


def _grab_at(pos: Tensor, store: dict[str, Tensor], name: str) -> Callable[..., None]:
    def fn(act: Tensor, hook: Any) -> None:
        store[name] = act[torch.arange(act.shape[0], device=act.device), pos.to(act.device)]
    return fn


# ---- route: one full forward per variant ---------------------------------------------------------------
def _run_naive(model: ModelHandle, tokens: Tensor, q: Tensor, iv: Interventions, reduce: Reduce, capture: list[str],
               batch_size: int, budget: int, progress: bool | None) -> QueryRun:
    out = _Out(iv.n, len(q))
    dev = model.device
    n_layers = model.cfg.n_layers
    active = [v for v, s in enumerate(iv.start_layers(n_layers)) if s < n_layers]
    plan = query_plan(model, q, batch_size, budget)
    bar = progress_bar(len(plan) * (1 + len(active)), progress, "query interventions (one forward each)")

    def work(rows: Tensor, width: int) -> None:
        toks, qd = tokens[rows, :width].to(dev), q[rows].to(dev)
        base, got = _plain_base(model, toks, qd, capture)
        out.base(rows, reduce(base, rows), got)
        for v in active:
            fwd = [(name, _at_query(fn, qd)) for name, fn in _edit_hooks(iv, [v], lambda j: j, rows)]
            at = logit_rows(model, qd, fwd)
            with hooks.checked_hooks(model, fwd + at.hooks):
                logits = at.read(model(toks))
            out.put([v], rows, reduce(logits, rows)[:, None])
        bar.update(1 + len(active))

    with torch.inference_mode():
        in_plan(plan, work, model=model, what="query_interventions")
    bar.close()
    _fill_unedited(out, iv, n_layers)
    return out.done("naive")


def _at_query(fn: Callable[..., Tensor], qd: Tensor) -> Callable[..., Tensor]:
    """Run a copy-slot hook (``act[:, slots]``) on the query position of a full-sequence activation."""
    def hook_fn(act: Tensor, hook: Any) -> Tensor:
        ar = torch.arange(act.shape[0], device=act.device)
        new = act.clone()
        new[ar, qd] = fn(act[ar, qd][:, None], hook)[:, 0]
        return new
    return hook_fn


# ---- route: query copies appended to the prompt (4-D mask + position_ids) ---------------------------
def _run_copies(model: ModelHandle, tokens: Tensor, q: Tensor, iv: Interventions, reduce: Reduce, capture: list[str],
                batch_size: int, budget: int, progress: bool | None) -> QueryRun:
    caps = model.caps
    if not caps.position_ids or not caps.mask_4d:
        raise FastPathUnsupported(f"a {caps.family} model takes no position_ids or no 4-D attention mask")
    n_layers = model.cfg.n_layers
    active = [v for v, s in enumerate(iv.start_layers(n_layers)) if s < n_layers]
    out = _Out(iv.n, len(q))
    dev, dtype = model.device, model.dtype
    limit = max_sequence_length(model)
    plan = query_plan(model, q, batch_size, budget)
    bar = progress_bar(len(plan), progress, "query interventions (copies)")

    def work(rows: Tensor, width: int) -> None:
        toks, qd = tokens[rows, :width].to(dev), q[rows].to(dev)
        base, got = _plain_base(model, toks, qd, capture)
        out.base(rows, reduce(base, rows), got)
        room = limit - width - 1
        if active and room < 1:
            raise FastPathUnsupported(f"a {width}-token prompt leaves no room for query copies within {limit} positions"
                                      + _window_note(model, limit))
        per = max(1, min(room, len(active) or 1))
        b = rows_per_forward(model, width + per + 1, len(rows), budget, logit_positions=per + 1)
        for r0 in range(0, len(rows), b):
            sub = slice(r0, r0 + b)
            for g0 in range(0, len(active), per):
                group = active[g0:g0 + per]
                logits = _copies_forward(model, toks[sub], qd[sub], rows[sub], iv, group, dtype)
                out.err = max(out.err, check_control(logits[:, -1], base[sub], dtype))
                out.put(group, rows[sub], _reduce_copies(reduce, logits[:, :-1], rows[sub]))
        bar.update()

    with torch.inference_mode():
        in_plan(plan, work, model=model, what="query_interventions")
    bar.close()
    _fill_unedited(out, iv, n_layers)
    return out.done("copies")


def _window_note(model: ModelHandle, limit: int) -> str:
    window = adapter.sliding_window(model)
    if window is None or window != limit:
        return ""
    return (" (the model's sliding window: copies appended under an explicit attention mask would attend beyond it; "
            "key/value reuse keeps the model's own window masks, on TransformerLens 4 bridges)")


def _plain_base(model: ModelHandle, toks: Tensor, qd: Tensor, capture: list[str]) -> tuple[Tensor, dict[str, Tensor]]:
    """The unpatched forward: logits and ``capture`` activations at each row's query."""
    got: dict[str, Tensor] = {}
    fwd = [(n, _grab_at(qd, got, n)) for n in capture]
    at = logit_rows(model, qd, fwd)
    with hooks.checked_hooks(model, fwd + at.hooks):
        return at.read(model(toks)), got


def _fill_unedited(out: _Out, iv: Interventions, n_layers: int) -> None:
    """Variants without any edit are the unpatched run itself."""
    for v, s in enumerate(iv.start_layers(n_layers)):
        if s >= n_layers:
            out.put([v], torch.arange(out.n), out.baseline[:, None])  # type: ignore[index]


def _copies_forward(model: ModelHandle, toks: Tensor, qd: Tensor, rows: Tensor, iv: Interventions, group: list[int],
                    dtype: torch.dtype) -> Tensor:
    """Logits ``[b, len(group) + 1, d_vocab]``: ``toks`` + a query copy per variant of ``group`` + a control copy."""
    dev = toks.device
    b, width = toks.shape
    n_copies = len(group) + 1  # + the control, last
    ar = torch.arange(b, device=dev)
    ext = torch.cat([toks, toks[ar, qd][:, None].expand(b, n_copies)], 1)
    pos = torch.cat([torch.arange(width, device=dev).expand(b, -1), copy_position_ids(qd, n_copies)], 1)
    total = width + n_copies
    col = torch.arange(total, device=dev)
    keep = (col[None, :] <= col[:, None]).expand(b, total, total).clone()  # causal over the prompt
    own = col[None, :] == col[width:, None]  # [copies, total]
    keep[:, width:] = (col[None, None, :] < qd[:, None, None]) | own[None]
    mask = adapter.additive_mask(keep, dtype)
    fwd = _edit_hooks(iv, group, lambda j: j + width, rows)
    at = logit_rows(model, torch.arange(width, total, device=dev).expand(b, -1), fwd)  # the copies only
    try:
        with hooks.checked_hooks(model, fwd + at.hooks):
            return at.read(model.forward(ext, position_ids=pos, attention_mask=mask))
    except (TypeError, ModelStateError, HookNotFiredError) as e:
        raise FastPathUnsupported(str(e)) from e


# ---- route: key/value reuse --------------------------------------------------------------------------
def plan_groups(start: Sequence[int], n_layers: int, rows: int, width: int, d_model: int, d_vocab: int) -> list[tuple[int, list[int]]]:
    """Partition variants (by first edited layer) into forwards ``(start layer, variants)``.

    A forward starting at layer ``s`` with ``c`` copies (+1 control) costs about
    ``(n_layers - s + unembed) * (overhead + rows * (c + 1) * attn)`` token-layers; dynamic programming over the
    sorted start layers picks the cheapest contiguous grouping (staged per layer when copies are many,
    one forward when they are few).
    """
    layers = sorted({s for s in start if s < n_layers})
    if not layers:
        return []
    count = {s: sum(1 for x in start if x == s) for s in layers}
    attn = 1.0 + width / (6.0 * d_model)
    unembed = d_vocab / (12.0 * d_model)

    def cost(s: int, c: int) -> float:
        return (n_layers - s) * (FORWARD_OVERHEAD_TOKENS + rows * (c + 1) * attn) + unembed * rows * (c + 1)

    m = len(layers)
    best = [0.0] + [float("inf")] * m
    cut = [0] * (m + 1)
    for j in range(1, m + 1):
        c = 0
        for i in range(j, 0, -1):
            c += count[layers[i - 1]]
            val = best[i - 1] + cost(layers[i - 1], c)
            if val < best[j]:
                best[j], cut[j] = val, i - 1
    groups = []
    j = m
    while j > 0:
        i = cut[j]
        members = [v for v, s in enumerate(start) if s in set(layers[i:j])]
        groups.append((layers[i], members))
        j = i
    return groups[::-1]


def _run_kv(model: ModelHandle, tokens: Tensor, q: Tensor, iv: Interventions, reduce: Reduce, capture: list[str],
            batch_size: int, budget: int, progress: bool | None) -> QueryRun:
    if model.caps.past_kv == "tl":
        return _run_kv_hooked(model, tokens, q, iv, reduce, capture, batch_size, budget, progress)
    cfg = model.cfg
    n_layers = cfg.n_layers
    start = iv.start_layers(n_layers)
    out = _Out(iv.n, len(q))
    dev, dtype = model.device, model.dtype
    plan = query_plan(model, q, batch_size, budget)
    planned = max((len(r) for r, _ in plan), default=1)  # copies per forward are sized for the planned chunk
    bar = progress_bar(len(plan), progress, "query interventions (kv)")

    def work(rows: Tensor, width: int) -> None:
        toks, qd = tokens[rows, :width].to(dev), q[rows].to(dev)
        b = len(rows)
        ar = torch.arange(b, device=dev)
        groups = plan_groups(start, n_layers, b, width, cfg.d_model, cfg.d_vocab)
        entry = sorted({s for s, _ in groups if s > 0})
        got: dict[str, Tensor] = {}
        fwd = [(n, _grab_at(qd, got, n)) for n in capture]
        fwd += [(hooks.resid_pre(s), _grab_at(qd, got, hooks.resid_pre(s) + "#entry")) for s in entry]
        at = logit_rows(model, qd, fwd)
        with kv.recording(model) as prefix, hooks.checked_hooks(model, fwd + at.hooks):
            base = at.read(model(toks))
        out.base(rows, reduce(base, rows), {n: got[n] for n in capture})
        rowmask = _query_rows(prefix.masks, qd, b, width)
        # copies per forward: memory of logits, attention over width + copies, MLP activations
        per = max(1, budget // (max(b, planned) * bytes_per_token(model, width + len(start) + 1)) - 1)
        for s, members in groups:
            for g0 in range(0, len(members), per):
                group = members[g0:g0 + per]
                entry_resid = got.get(hooks.resid_pre(s) + "#entry")
                lg = _kv_copies(model, prefix, rowmask, toks[ar, qd], qd, rows, iv, group, s, entry_resid)
                out.err = max(out.err, check_control(lg[:, -1], base, dtype))
                out.put(group, rows, _reduce_copies(reduce, lg[:, :-1], rows))
        bar.update()

    with torch.inference_mode():
        in_plan(plan, work, model=model, what="query_interventions")
    bar.close()
    _fill_unedited(out, iv, n_layers)
    return out.done("kv")


def _query_rows(masks: dict[int, Tensor], qd: Tensor, b: int, width: int) -> dict[int, Tensor]:
    """Per block, the keys each row's query may attend to (HF's own mask row), minus the query's own key."""
    ar = torch.arange(b, device=qd.device)
    memo: dict[int, Tensor] = {}
    out = {}
    for block, mk in masks.items():
        if id(mk) not in memo:
            row = mk.to(qd.device).expand(b, 1, width, width)[ar, 0, qd].clone()  # [b, width]
            row[ar, qd] = False
            memo[id(mk)] = row
        out[block] = memo[id(mk)]
    return out


def _kv_copies(model: ModelHandle, prefix: kv.Prefix, rowmask: dict[int, Tensor], qtok: Tensor, qd: Tensor, rows: Tensor,
               iv: Interventions, group: list[int], start: int, entry: Tensor | None) -> Tensor:
    """Logits ``[b, len(group) + 1, d_vocab]`` of one copy per variant of ``group`` and a control copy (last)."""
    b = qtok.shape[0]
    n_copies = len(group) + 1
    dev = qtok.device
    own = torch.eye(n_copies, dtype=torch.bool, device=dev)
    masks, memo = {}, {}
    for block, row in rowmask.items():
        if id(row) not in memo:
            pre = row[:, None, None, :].expand(b, 1, n_copies, row.shape[1])
            memo[id(row)] = torch.cat([pre, own[None, None].expand(b, 1, n_copies, n_copies)], -1)
        masks[block] = memo[id(row)]
    fwd = _edit_hooks(iv, group, lambda j: j, rows)
    if start > 0:
        assert entry is not None

        def inject(act: Tensor, hook: Any) -> Tensor:
            return entry[:, None].to(act.device, act.dtype).expand_as(act).clone()

        fwd.insert(0, (hooks.resid_pre(start), inject))
    toks = qtok[:, None].expand(b, n_copies)
    pos = copy_position_ids(qd, n_copies)
    try:
        with kv.replaying(model, prefix.keys, prefix.values, masks, skip=start, tuple_blocks=prefix.tuple_blocks), \
                hooks.checked_hooks(model, fwd):
            return model.forward(toks, position_ids=pos)
    except HookNotFiredError as e:
        raise FastPathUnsupported(str(e)) from e


def _run_kv_hooked(model: ModelHandle, tokens: Tensor, q: Tensor, iv: Interventions, reduce: Reduce, capture: list[str],
                   batch_size: int, budget: int, progress: bool | None) -> QueryRun:
    """The ``kv`` route on a TransformerLens 3 ``HookedTransformer``: its own frozen KV cache and ``start_at_layer``.

    Per row: the prefix before the query runs once (:func:`~tlens_icl.models.adapter.prefix_cache`); every group
    of copies is a batch of one-token steps on that cache expanded without copying, entering at its first
    edited layer with the query's recorded ``resid_pre`` (a HookedTransformer really skips the earlier layers).
    """
    cfg = model.cfg
    n_layers = cfg.n_layers
    start = iv.start_layers(n_layers)
    out = _Out(iv.n, len(q))
    dev, dtype = model.device, model.dtype
    if len(q) and int(q.min()) < 1:
        raise FastPathUnsupported("a query at position 0 has no prefix to reuse")
    plan = query_plan(model, q, batch_size, budget)
    bar = progress_bar(len(plan), progress, "query interventions (kv)")

    def work(rows: Tensor, width: int) -> None:
        toks, qd = tokens[rows, :width].to(dev), q[rows].to(dev)
        groups = plan_groups(start, n_layers, 1, width, cfg.d_model, cfg.d_vocab)
        entry = sorted({s for s, _ in groups if s > 0})
        got: dict[str, Tensor] = {}
        fwd = [(n, _grab_at(qd, got, n)) for n in capture]
        fwd += [(hooks.resid_pre(s), _grab_at(qd, got, hooks.resid_pre(s) + "#entry")) for s in entry]
        at = logit_rows(model, qd, fwd)
        with hooks.checked_hooks(model, fwd + at.hooks):
            base = at.read(model(toks))
        out.base(rows, reduce(base, rows), {n: got[n] for n in capture})
        for i in range(len(rows)):  # one row at a time: its cache expands to the copies without a copy
            row = rows[i:i + 1]
            cache = adapter.prefix_cache(model, toks[i:i + 1], qd[i:i + 1])
            per = max(1, budget // bytes_per_token(model, width + 2) - 1)
            for s, members in groups:
                for g0 in range(0, len(members), per):
                    group = members[g0:g0 + per]
                    n_copies = len(group) + 1
                    query = (toks[i, qd[i]].expand(n_copies) if s == 0
                             else got[hooks.resid_pre(s) + "#entry"][i:i + 1].expand(n_copies, -1))
                    fwd = [(name, _as_copies(fn, n_copies)) for name, fn in _edit_hooks(iv, group, lambda j: j, row)]
                    with hooks.checked_hooks(model, fwd):
                        lg = adapter.query_forward(model, adapter.expand_cache(cache, n_copies), query,
                                                   start_at_layer=s if s > 0 else None)
                    out.err = max(out.err, check_control(lg[-1:], base[i:i + 1], dtype))
                    out.put(group, row, _reduce_copies(reduce, lg[None, :-1], row))
        bar.update()

    with torch.inference_mode():
        in_plan(plan, work, model=model, what="query_interventions")
    bar.close()
    _fill_unedited(out, iv, n_layers)
    return out.done("kv")


def _as_copies(fn: Callable[..., Tensor], n_copies: int) -> Callable[..., Tensor]:
    """A copy-slot hook (``act[:, slots]`` of ``[1, copies, ...]``) on a batch of one-token steps ``[copies, 1, ...]``."""
    def hook_fn(act: Tensor, hook: Any) -> Tensor:
        return fn(act.reshape(1, n_copies, *act.shape[2:]), hook).reshape(act.shape)
    return hook_fn


_RUNNERS: dict[str, Callable[..., QueryRun]] = {"kv": _run_kv, "copies": _run_copies, "naive": _run_naive}


# ---- head patching at the query (mediation, head_patching) ---------------------------------------------
@resolved
def patch_query_heads(
    model: ModelLike | ModelHandle, tokens: Int[Tensor, "batch pos"], query_pos: Int[Tensor, " batch"],
    values: Float[Tensor, "batch layer head d_head"], cells: Sequence[Head], score: Reduce, *, method: str = "auto",
    batch_size: int = 16, progress: bool | None = None,
) -> tuple[Float[Tensor, "cell batch"], Float[Tensor, " batch"], str]:
    """Effect of ``z[row, query_pos, head] := values[row, layer, head]`` for each cell.

    Returns ``(effects [cell, row], unpatched score [row], route)``; an effect is
    ``score(patched) - score(unpatched)``, exactly 0 where the value equals the unpatched ``z``.
    """
    layers = sorted({c.layer for c in cells})
    run = query_interventions(model, tokens, query_pos, set_heads(cells, values), score, method=method,
                              capture=[hooks.z(layer) for layer in layers], batch_size=batch_size, progress=progress,
                              operation="patch_query_heads")
    effects = run.values - run.baseline[None]
    zq = torch.stack([run.captured[hooks.z(layer)] for layer in layers], 1)  # [row, patched layer, head, d_head]
    li = torch.tensor([layers.index(c.layer) for c in cells])
    hi = torch.tensor([c.head for c in cells])
    noop = (values[:, [c.layer for c in cells], hi].float() == zq[:, li, hi]).all(-1)  # [row, cell]
    effects[noop.T] = 0.0
    return effects, run.baseline, run.method


__all__ = ["Edit", "FastPathUnsupported", "Interventions", "QueryRun", "Reduce", "Scorer", "all_heads",
           "blend_heads", "check_control", "control_tolerance", "head_grid", "patch_query_heads", "plan_groups",
           "query_interventions", "resid_edits", "resolve_heads", "set_head_means", "set_heads"]
