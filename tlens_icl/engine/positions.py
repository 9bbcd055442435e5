"""Patching at positions other than the query: suffix replay by (layer, position), and a per-cell loop.

:func:`patch_layer_positions` (activation patching, e.g. ``resid_pre`` at every layer x position):
setting ``site[L][:, p]`` changes nothing before block ``L`` and nothing at positions ``< p``. On a
model whose keys/values can be reused (:mod:`tlens_icl.models.kv`) each cell therefore replays only
positions ``p .. query`` through blocks ``L ..``, attending to the unpatched run's keys/values of the
positions before ``p`` and to Hugging Face's own attention masks of the unpatched run (causal,
padding, sliding windows). Two shortcuts are exact by construction: a row whose patched value equals
its unpatched one bit for bit, or whose query comes before ``p``, is the unpatched run (effect exactly
0) and is not run. One unpatched control replay per row chunk and layer must reproduce the base run
(else the call falls back to the loop with one warning). Elsewhere, one full forward per cell
(TransformerLens's loop) with the same shortcuts.

:func:`patch_positions`: one forward per cell and row chunk, for head outputs at token roles.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from tlens_icl._typing import ModelLike
from tlens_icl.engine import hooks
from tlens_icl.engine.query import Reduce, progress_bar
from tlens_icl.engine.runs import FastPathUnsupported, bytes_per_token, check_control, chunks, in_plan, logit_rows, query_plan
from tlens_icl.errors import HookNotFiredError, ModelStateError, TlensICLError
from tlens_icl.models import kv
from tlens_icl.models.adapter import ModelHandle, resolved
from tlens_icl.prompts.batch import PromptBatch

#: Most tokens one suffix-replay forward runs (larger groups of cells gain nothing on a CPU).
GROUP_TOKENS = 2048


@dataclass(frozen=True)
class LayerPositionRun:
    """``effects[layer, pos, row]`` = ``reduce(patched) - reduce(base)``; the unpatched scores; the route used.

    ``forwards``: patched forwards actually run (cells skipped by the exact shortcuts are not counted).
    """

    effects: Float[Tensor, "layer pos batch"]
    base_score: Float[Tensor, " batch"]
    source_score: Float[Tensor, " batch"]
    method: str
    forwards: int


@resolved
def patch_layer_positions(
    model: ModelLike | ModelHandle, base: Int[Tensor, "batch pos"], source: Int[Tensor, "batch pos"], query_pos: Int[Tensor, " batch"],
    site: str, reduce: Reduce, *, method: str = "auto", batch_size: int = 16, progress: bool | None = None,
) -> LayerPositionRun:
    """Patch ``site`` (``resid_pre``, ``resid_post``, ``attn_out``, ``mlp_out``) of ``source`` into ``base``
    at every layer x position; ``reduce(logits at the query, rows)`` scores each run.

    ``method``: ``"auto"`` (suffix replay where keys/values can be reused, else the loop; a failed control
    falls back with a warning), ``"kv"`` (raise instead) or ``"naive"`` (the loop).
    """
    if method not in ("auto", "kv", "naive"):
        raise TlensICLError(f"method must be 'auto', 'kv' or 'naive', got {method!r}.")
    if base.shape != source.shape:
        raise TlensICLError(f"base {tuple(base.shape)} and source {tuple(source.shape)} token batches differ in shape.")
    n_layers = model.cfg.n_layers
    names = [hooks.site_name(site, layer) for layer in range(n_layers)]
    hooks.require_hooks(model, names)
    q = query_pos.long().cpu()
    if method != "naive":
        if kv.kv_reuse_possible(model):
            try:
                return _suffix_replay(model, base, source, q, site, reduce, batch_size, progress)
            except (FastPathUnsupported, kv.KVUnsupported) as e:
                if method == "kv":
                    raise ModelStateError(f"Suffix replay is not exact for this model: {e}") from e
                model.warn_once(f"suffix:{type(e).__name__}", f"tlens_icl: suffix replay is not exact for "
                                f"this model ({e}); falling back to one forward per cell (exact, slower).", stacklevel=3)
        elif method == "kv":
            raise ModelStateError(f"This model ({model.family}, its attention) exposes no reusable keys/values.")
    return _loop(model, base, source, q, site, reduce, batch_size, progress)


def _site_acts(model: ModelHandle, toks: Tensor, qd: Tensor, names: Sequence[str], *,
               record: bool = False) -> tuple[Tensor, dict[str, Tensor], Any]:
    """Logits at each row's query ``qd``, full-sequence activations at ``names`` and (``record``) the recorded
    prefix of one forward."""
    got: dict[str, Tensor] = {}

    def grab(name: str) -> Callable[..., None]:
        def fn(act: Tensor, hook: Any) -> None:
            got[name] = act.clone()
        return fn

    fwd = [(n, grab(n)) for n in dict.fromkeys(names)]
    at = logit_rows(model, qd, fwd)
    if record:
        with kv.recording(model) as prefix, hooks.checked_hooks(model, fwd + at.hooks):
            logits = at.read(model(toks))
        return logits, got, prefix
    with hooks.checked_hooks(model, fwd + at.hooks):
        logits = at.read(model(toks))
    return logits, got, None


def _todo(base_act: Tensor, source_act: Tensor, q: Tensor, p: int) -> Tensor:
    """Rows whose cell at position ``p`` can differ from the unpatched run (indices into the chunk)."""
    differs = (base_act[:, p] != source_act[:, p]).flatten(1).any(1).cpu()
    return torch.nonzero(differs & (q >= p)).flatten()


def _suffix_replay(model: ModelHandle, base: Tensor, source: Tensor, q: Tensor, site: str, reduce: Reduce,
                   batch_size: int, progress: bool | None) -> LayerPositionRun:
    n, width_all = base.shape
    n_layers = model.cfg.n_layers
    names = [hooks.site_name(site, layer) for layer in range(n_layers)]
    entries = [hooks.resid_pre(layer) for layer in range(n_layers)]
    effects = torch.zeros(n_layers, width_all, n)
    base_score, source_score = torch.zeros(n), torch.zeros(n)
    dev, dtype = model.device, model.dtype
    forwards = 0
    plan = query_plan(model, q, batch_size)
    # a group of cells replayed in one forward: its activations plus its rows' copies of the prefix keys/values
    token_bytes = bytes_per_token(model, width_all)
    key_bytes = 4 * n_layers * model.cfg.n_heads * model.cfg.d_head * torch.finfo(dtype).bits // 8
    budget = model.budget

    def fits(n_rows: int, span: int, p0: int) -> bool:
        return n_rows * span <= GROUP_TOKENS and n_rows * (span * token_bytes + p0 * key_bytes) <= budget

    bar = progress_bar(len(plan) * n_layers, progress, "activation patching (suffix replay)")

    def work(rows: Tensor, width: int) -> None:
        nonlocal forwards
        toks, src = base[rows, :width].to(dev), source[rows, :width].to(dev)
        qd = q[rows].to(dev)
        base_logits, acts, prefix = _site_acts(model, toks, qd, names + entries, record=True)
        base_score[rows] = reduce(base_logits, rows).float().cpu()
        src_logits, src_acts, _ = _site_acts(model, src, qd, names)
        source_score[rows] = reduce(src_logits, rows).float().cpu()
        for layer in range(n_layers):
            name = names[layer]
            cells = [(p, _todo(acts[name], src_acts[name], q[rows], p)) for p in range(width)]
            cells = [(p, r) for p, r in cells if len(r)]
            if cells:  # one unpatched replay from the first patched position proves skip, masks and prefix
                p0, r0 = cells[0][0], torch.arange(len(rows))
                lg = _replay(model, prefix, toks, acts, [(p0, r0)], layer, q[rows], None)
                check_control(lg, base_logits, dtype)
            for group in replay_groups(cells, q[rows], fits):
                patch = (name, torch.cat([src_acts[name][r.to(dev), p] for p, r in group]))
                lg = _replay(model, prefix, toks, acts, group, layer, q[rows], patch)
                r_all = torch.cat([r for _, r in group])
                effects[layer, torch.cat([torch.full((len(r),), p) for p, r in group]), rows[r_all]] = (
                    reduce(lg, rows[r_all]).float().cpu() - base_score[rows[r_all]])
                forwards += len(group)
            bar.update()

    with torch.inference_mode():  # a chunk that runs out of memory is re-run with half the rows (finished ones kept)
        in_plan(plan, work, model=model, what="activation_patching")
    bar.close()
    return LayerPositionRun(effects, base_score, source_score, "kv", forwards)


def replay_groups(cells: Sequence[tuple[int, Tensor]], q: Tensor, fits: Callable[[int, int, int], bool]) -> list[list[tuple[int, Tensor]]]:
    """Cells ``(position, rows)`` of one layer, in position order, cut into groups replayed in one forward.

    A group replays from its first position ``p0``; a later cell ``p`` of it also recomputes the unpatched
    positions ``p0 .. p-1`` (exact: they see the same inputs). Stacking cells saves one forward's fixed cost
    per cell and runs larger matrix products; a cell joins the group while that recomputation stays within
    an eighth of the group's replay length (at least 2 positions) and ``fits(rows, replay length, p0)``.
    """
    groups: list[list[tuple[int, Tensor]]] = []
    p0 = n_rows = 0
    for p, r in cells:
        if groups:
            span = int(q[torch.cat([rr for _, rr in groups[-1]] + [r])].max()) + 1 - p0
            if p - p0 <= max(2, span // 8) and fits(n_rows + len(r), span, p0):
                groups[-1].append((p, r))
                n_rows += len(r)
                continue
        groups.append([(p, r)])
        p0, n_rows = p, len(r)
    return groups


def _replay(model: ModelHandle, prefix: kv.Prefix, toks: Tensor, acts: dict[str, Tensor],
            group: Sequence[tuple[int, Tensor]], layer: int, q: Tensor, patch: tuple[str, Tensor] | None) -> Tensor:
    """Logits at the query of every cell's rows (``group``: ``(position, chunk row indices)``, stacked in that
    order) replaying positions ``p0 .. query`` from block ``layer``, ``p0`` the group's first position;
    ``patch``: ``(hook name, one value per stacked row)`` set at each cell's own position."""
    dev = toks.device
    p = min(pos for pos, _ in group)
    rd = torch.cat([r for _, r in group]).to(dev)
    cols = torch.cat([torch.full((len(r),), pos - p) for pos, r in group]).to(dev)
    qr = q[rd.cpu()].to(dev)
    end = int(qr.max()) + 1
    keys = {i: k[rd, :, :p] for i, k in prefix.keys.items()}
    values = {i: v[rd, :, :p] for i, v in prefix.values.items()}
    masks, memo = {}, {}
    for block, mk in prefix.masks.items():
        if id(mk) not in memo:
            full = mk.to(dev).expand(len(toks), 1, mk.shape[-2], mk.shape[-1])
            memo[id(mk)] = full[rd, :, p:end, :end]
        masks[block] = memo[id(mk)]
    entry = acts[hooks.resid_pre(layer)][rd, p:end]

    def inject(act: Tensor, hook: Any) -> Tensor:
        return entry.to(act.device, act.dtype).clone()

    fwd = [(hooks.resid_pre(layer), inject)]
    if patch is not None:
        name, value = patch
        ar = torch.arange(len(rd), device=dev)

        def put(act: Tensor, hook: Any) -> Tensor:
            new = act.clone()
            new[ar, cols] = value.to(act.device, act.dtype)
            return new

        fwd.append((name, put))
    pos = torch.arange(p, end, device=dev).expand(len(rd), -1)
    at = logit_rows(model, qr - p, fwd)
    try:
        with kv.replaying(model, keys, values, masks, skip=layer, tuple_blocks=prefix.tuple_blocks), \
                hooks.checked_hooks(model, fwd + at.hooks):
            return at.read(model.forward(toks[rd, p:end], position_ids=pos))
    except HookNotFiredError as e:
        raise FastPathUnsupported(str(e)) from e


def _loop(model: ModelHandle, base: Tensor, source: Tensor, q: Tensor, site: str, reduce: Reduce, batch_size: int,
          progress: bool | None) -> LayerPositionRun:
    """One full forward per (layer, position) and row chunk, skipping cells that are exactly the base run."""
    n, width_all = base.shape
    n_layers = model.cfg.n_layers
    names = [hooks.site_name(site, layer) for layer in range(n_layers)]
    effects = torch.zeros(n_layers, width_all, n)
    base_score, source_score = torch.zeros(n), torch.zeros(n)
    dev = model.device
    forwards = 0
    plan = query_plan(model, q, batch_size)
    bar = progress_bar(len(plan) * n_layers, progress, "activation patching (one forward per cell)")

    def work(rows: Tensor, width: int) -> None:
        nonlocal forwards
        toks, src = base[rows, :width].to(dev), source[rows, :width].to(dev)
        qd = q[rows].to(dev)
        logits, acts, _ = _site_acts(model, toks, qd, names)
        base_score[rows] = reduce(logits, rows).float().cpu()
        src_logits, src_acts, _ = _site_acts(model, src, qd, names)
        source_score[rows] = reduce(src_logits, rows).float().cpu()
        for layer, name in enumerate(names):
            for p in range(width):
                if not len(_todo(acts[name], src_acts[name], q[rows], p)):
                    continue
                value = src_acts[name][:, p]

                def put(act: Tensor, hook: Any, p: int = p, value: Tensor = value) -> Tensor:
                    new = act.clone()
                    new[:, p] = value.to(act.device, act.dtype)
                    return new

                at = logit_rows(model, qd, [(name, put)])
                with hooks.checked_hooks(model, [(name, put)] + at.hooks):
                    lg = at.read(model(toks))
                effects[layer, p, rows] = reduce(lg, rows).float().cpu() - base_score[rows]
                forwards += 1
            bar.update()

    with torch.inference_mode():  # a chunk that runs out of memory is re-run with half the rows (finished ones kept)
        in_plan(plan, work, model=model, what="activation_patching")
    bar.close()
    return LayerPositionRun(effects, base_score, source_score, "naive", forwards)


# ---- one forward per cell (head outputs at token roles) ----------------------------------------------
@dataclass(frozen=True)
class Cell:
    """Patch ``hook`` (all of it, or one ``head``) at one position ``pos`` or at every masked position."""

    hook: str
    head: int | None = None
    pos: int | None = None


@resolved
def patch_positions(
    model: ModelLike | ModelHandle, base: PromptBatch, source: PromptBatch, cells: Sequence[Cell], score: Reduce, *,
    mask: Bool[Tensor, "batch pos"] | None, batch_size: int, progress: bool | None = None,
) -> tuple[Float[Tensor, "cell batch"], Float[Tensor, " batch"], Float[Tensor, " batch"]]:
    """Effects of patching ``source`` activations into the ``base`` run, one forward per cell and chunk.

    ``base`` and ``source`` must be aligned (same shape). Returns ``(effects, base score, source score)``.
    """
    n = len(base)
    effects, base_score, source_score = torch.zeros(len(cells), n), torch.zeros(n), torch.zeros(n)
    dev = model.device
    bar = progress_bar(len(cells) * -(-n // batch_size), progress, "patching")
    with torch.inference_mode():
        for sl in chunks(n, batch_size):
            rows = torch.arange(n)[sl]
            sub, src = base.select(sl), source.select(sl)
            src_logits, acts, _ = _site_acts(model, src.tokens.to(dev), src.query_pos, [c.hook for c in cells])
            source_score[sl] = score(src_logits, rows).float().cpu()
            toks, q = sub.tokens.to(dev), sub.query_pos.to(dev)
            at = logit_rows(model, q)
            with hooks.checked_hooks(model, at.hooks):
                base_score[sl] = score(at.read(model(toks)), rows).float().cpu()
            sel_all = (mask[sl, : toks.shape[1]] if mask is not None else torch.ones_like(toks, dtype=torch.bool)).to(dev)
            for i, cell in enumerate(cells):
                sel = sel_all
                if cell.pos is not None:
                    sel = torch.zeros_like(sel_all)
                    sel[:, cell.pos] = True
                fwd = [(cell.hook, _setter(acts[cell.hook], cell.head, sel))]
                at = logit_rows(model, q, fwd)
                with hooks.checked_hooks(model, fwd + at.hooks):
                    effects[i, sl] = score(at.read(model(toks)), rows).float().cpu() - base_score[sl]
                bar.update()
    bar.close()
    return effects, base_score, source_score


def _setter(source: Tensor, head: int | None, sel: Tensor) -> Callable[[Tensor, Any], Tensor]:
    def hook_fn(act: Tensor, hook: Any) -> Tensor:
        act = act.clone()
        if head is None:
            act[sel] = source[sel].to(act.dtype)
        else:
            act[:, :, head][sel] = source[:, :, head][sel].to(act.dtype)
        return act

    return hook_fn


__all__ = ["Cell", "LayerPositionRun", "patch_layer_positions", "patch_positions"]
