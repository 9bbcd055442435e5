"""Patched forward passes shared by head patching, causal mediation and attribution patching.

Two exact ways to patch one head's ``hook_z`` at each row's query position:

* ``naive`` - one full forward per head (what ``transformer_lens.patching`` and the function-vectors
  code do).
* ``fast`` - a patch at the query position changes nothing at earlier positions, so the corrupted
  run's prefix is shared. We append C copies of the query token to the sequence (one per patched
  head, plus one unpatched *control* copy), give every copy the query's position (``position_ids``,
  which every bridge forwards to the model: learned and rotary positions alike), and zero the
  attention of each copy to the original query token and to the other copies at every layer,
  renormalising the remaining weights (a softmax restricted to ``{prefix, itself}``, i.e. exactly the
  query's own attention). Copy ``i`` then recomputes the query token with head ``i`` patched, and one
  forward of ``p + C`` tokens replaces C forwards of ``p`` tokens. The control copy must reproduce
  the query's logits; if it does not (an architecture that ignores ``position_ids``, a sliding window
  shorter than the sequence, ...) the fast path raises :class:`FastPathUnsupported` and callers fall
  back to ``naive`` with a warning (once per model and reason) - never a silently wrong number.

  The restricted softmax is applied by editing ``hook_pattern`` where that works, else (TransformerLens 3
  native bridges ignore pattern edits) by a 4-D additive attention mask with the same keep-set; a model
  without ``position_ids`` (a TransformerLens 3 ``HookedTransformer``) uses ``naive``. The model-family
  facts come from :mod:`tlens_icl.models.adapter`.

Effects are measured against the control copy; a patch adds ``value - z_query`` (``z_query`` from the
ordinary unpatched forward) to its copy, and a patch whose value equals ``z_query`` exactly is a no-op
with effect exactly 0 (as in the one-forward-per-head loop; identity corruption gives exact zeros).

Memory: only the hooks needed are captured, one row chunk at a time, and rows per patched forward are
capped by :data:`MEMORY_BUDGET`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from tlens_icl._typing import Head, ModelLike
from tlens_icl.engine import hooks
from tlens_icl.engine.runs import chunks
from tlens_icl.engine.scoring import at_query
from tlens_icl.errors import ModelStateError, TlensICLError
from tlens_icl.models import adapter
from tlens_icl.prompts.batch import PromptBatch

#: Bytes of activations one patched forward may use (logits, MLP and attention intermediates).
MEMORY_BUDGET = 1 << 30
Scorer = Callable[[Float[Tensor, "batch d_vocab"], slice], Float[Tensor, " batch"]]


class FastPathUnsupported(RuntimeError):
    """The query-copy fast path cannot reproduce this model's forward pass exactly."""


device_of = adapter.device_of


def progress_bar(total: int, enabled: bool | None, desc: str) -> Any:
    from tlens_icl.engine.progress import progress_bar as bar

    return bar(total=total, enabled=enabled, desc=desc)


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
    limit = int(model.cfg.n_ctx)
    hf_cfg = getattr(getattr(model, "original_model", None), "config", None)
    for window in (getattr(model.cfg, "window_size", None), getattr(hf_cfg, "sliding_window", None)):
        if isinstance(window, int) and window > 0:
            limit = min(limit, window)
    return limit


def _bytes_per_token(model: ModelLike, seq: int) -> int:
    cfg = model.cfg
    d_mlp = getattr(cfg, "d_mlp", None) or 4 * cfg.d_model
    return 4 * (2 * cfg.d_vocab + 2 * d_mlp + 12 * cfg.d_model + 3 * cfg.n_heads * seq)


def rows_per_forward(model: ModelLike, seq: int, batch_size: int) -> int:
    """``batch_size`` capped so one forward of ``seq`` tokens per row fits :data:`MEMORY_BUDGET`."""
    return max(1, min(batch_size, MEMORY_BUDGET // (_bytes_per_token(model, seq) * seq)))


# ---- capturing ---------------------------------------------------------------------------------------
def query_z(
    model: ModelLike, batch: PromptBatch, *, batch_size: int
) -> tuple[Float[Tensor, "batch layer head d_head"], Float[Tensor, "batch d_vocab"]]:
    """``hook_z`` of every head at each row's query position, and the logits there."""
    n_layers = model.cfg.n_layers
    zs, logits = [], []
    dev = device_of(model)
    with torch.no_grad():
        for sl in chunks(len(batch), batch_size):
            sub = batch.select(sl)
            rows = torch.arange(len(sub), device=dev)
            q = sub.query_pos.to(dev)
            got: dict[int, Tensor] = {}

            def grab(z: Tensor, hook: Any, layer: int) -> None:
                got[layer] = z[rows, q].detach().float().cpu()

            fwd = [(hooks.z(layer), bind(grab, layer=layer)) for layer in range(n_layers)]
            with hooks.checked_hooks(model, fwd):
                out = model(sub.tokens.to(dev))
            zs.append(torch.stack([got[layer] for layer in range(n_layers)], 1))
            logits.append(at_query(out, q).float().cpu())
    return torch.cat(zs), torch.cat(logits)


def capture(
    model: ModelLike, batch: PromptBatch, names: Sequence[str]
) -> tuple[dict[str, Tensor], Float[Tensor, "batch d_vocab"]]:
    """Full activations at ``names`` for one (small) batch, and the logits at the query positions."""
    dev = device_of(model)
    got: dict[str, Tensor] = {}

    def grab(act: Tensor, hook: Any, name: str) -> None:
        got[name] = act.detach().clone()

    with torch.no_grad(), hooks.checked_hooks(model, [(n, bind(grab, name=n)) for n in dict.fromkeys(names)]):
        out = model(batch.tokens.to(dev))
    return got, at_query(out, batch.query_pos.to(dev)).float().cpu()


def bind(fn: Callable[..., Any], **kw: Any) -> Callable[[Tensor, Any], Any]:
    def hook_fn(act: Tensor, hook: Any) -> Any:
        return fn(act, hook, **kw)

    return hook_fn


# ---- query-position head patching ---------------------------------------------------------------------
def patch_query_heads(
    model: ModelLike, base: PromptBatch, values: Float[Tensor, "batch layer head d_head"], cells: Sequence[Head],
    score: Scorer, *, method: str, batch_size: int, progress: bool | None = None,
) -> tuple[Float[Tensor, "cell batch"], Float[Tensor, " batch"], str]:
    """Effect of setting ``z[row, query_pos, head] := values[row, layer, head]`` for each cell.

    Returns ``(effects [cell, row], unpatched score [row], method used)``; an effect is
    ``score(patched) - score(unpatched)``.
    """
    if method not in ("auto", "fast", "naive"):
        raise TlensICLError(f"method must be 'auto', 'fast' or 'naive', got {method!r}.")
    if method != "naive":
        try:
            return (*_patch_fast(model, base, values, cells, score, batch_size, progress), "fast")
        except FastPathUnsupported as e:
            if method == "fast":
                raise ModelStateError(f"The fast query-patching path is not exact for this model: {e}") from e
            adapter.warn_once(model, f"fast-fallback:{e}", f"tlens_icl: fast query patching is not exact for this "
                              f"model ({e}); falling back to one forward per head (exact, slower).", stacklevel=4)
    return (*_patch_naive(model, base, values, cells, score, batch_size, progress), "naive")


def _patch_naive(model: ModelLike, base: PromptBatch, values: Tensor, cells: Sequence[Head], score: Scorer,
                 batch_size: int, progress: bool | None) -> tuple[Tensor, Tensor]:
    n = len(base)
    effects, baseline = torch.zeros(len(cells), n), torch.zeros(n)
    dev = device_of(model)
    bar = progress_bar(len(cells) * -(-n // batch_size), progress, "patching heads (naive)")
    with torch.no_grad():
        for sl in chunks(n, batch_size):
            sub = base.select(sl)
            toks, q = sub.tokens.to(dev), sub.query_pos.to(dev)
            rows = torch.arange(len(sub), device=dev)
            vals = values[sl].to(dev)
            baseline[sl] = score(at_query(model(toks), q), sl)
            for i, (layer, head) in enumerate(cells):
                def put(z: Tensor, hook: Any, layer: int = layer, head: int = head) -> Tensor:
                    z = z.clone()
                    z[rows, q, head] = vals[:, layer, head].to(z.dtype)
                    return z

                with hooks.checked_hooks(model, [(hooks.z(layer), put)]):
                    effects[i, sl] = score(at_query(model(toks), q), sl) - baseline[sl]
                bar.update()
    bar.close()
    return effects, baseline


@dataclass(frozen=True)
class _CopyLayout:
    """Where the query copies sit in an extended sequence of ``width + n_copies`` tokens."""

    width: int
    n_copies: int  # patched copies + the control copy (last)
    query_pos: Int[Tensor, " batch"]

    def tokens(self, tokens: Int[Tensor, "batch pos"]) -> Int[Tensor, "batch pos_ext"]:
        rows = torch.arange(tokens.shape[0], device=tokens.device)
        copies = tokens[rows, self.query_pos][:, None].expand(-1, self.n_copies)
        return torch.cat([tokens, copies], 1)

    def position_ids(self) -> Int[Tensor, "batch pos_ext"]:
        b = self.query_pos.shape[0]
        prefix = torch.arange(self.width, device=self.query_pos.device).expand(b, -1)
        return torch.cat([prefix, self.query_pos[:, None].expand(-1, self.n_copies)], 1)

    def allowed(self) -> Bool[Tensor, "batch copy pos_ext"]:
        """Keys a copy may attend to: the prefix before the query, and itself."""
        dev = self.query_pos.device
        src = torch.arange(self.width + self.n_copies, device=dev)
        dest = self.width + torch.arange(self.n_copies, device=dev)
        return (src[None, None, :] < self.query_pos[:, None, None]) | (src[None, None, :] == dest[None, :, None])


def _patch_fast(model: ModelLike, base: PromptBatch, values: Tensor, cells: Sequence[Head], score: Scorer,
                batch_size: int, progress: bool | None) -> tuple[Tensor, Tensor]:
    n, width = len(base), base.tokens.shape[1]
    caps = adapter.capabilities(model)
    if not caps.position_ids:
        raise FastPathUnsupported(f"a {caps.family} model takes no position_ids")
    if not (caps.pattern_edit or caps.mask_4d):
        raise FastPathUnsupported(f"a {caps.family} model honours neither hook_pattern edits nor a 4-D mask")
    room = max_sequence_length(model) - width - 1  # copies per forward, besides the control
    if room < 1:
        raise FastPathUnsupported(f"a {width}-token prompt leaves no room for query copies within "
                                  f"{max_sequence_length(model)} positions")
    per_forward = min(room, len(cells))
    groups = [list(range(s, min(len(cells), s + per_forward))) for s in range(0, len(cells), per_forward)]
    rows_n = rows_per_forward(model, width + per_forward + 1, batch_size)
    # The unpatched run, chunked like the source run: a patch writing the query's own value has delta == 0.
    base_z, base_logits = query_z(model, base, batch_size=batch_size)
    delta = values.float() - base_z
    baseline = score(base_logits, slice(None))
    effects = torch.zeros(len(cells), n)
    bar = progress_bar(len(groups) * -(-n // rows_n), progress, "patching heads (fast)")
    with torch.no_grad():
        for sl in chunks(n, rows_n):
            sub = base.select(sl)
            for group in groups:
                copy_logits = _copies_forward(model, sub, delta[sl], [cells[i] for i in group])
                _check_control(copy_logits[:, -1], base_logits[sl])
                ref = score(copy_logits[:, -1], sl)
                for j, i in enumerate(group):
                    layer, head = cells[i]
                    noop = (delta[sl, layer, head] == 0).all(-1)  # writing the value it already has
                    effects[i, sl] = torch.where(noop, 0.0, score(copy_logits[:, j], sl) - ref)
                bar.update()
    bar.close()
    return effects, baseline


def _copies_forward(model: ModelLike, sub: PromptBatch, delta: Tensor, group: Sequence[Head]) -> Tensor:
    """Logits at a query copy per head in ``group`` (its ``z`` shifted by ``delta``) and at a control copy."""
    dev = device_of(model)
    q = sub.query_pos.to(dev)
    width = sub.tokens.shape[1]
    layout = _CopyLayout(width, len(group) + 1, q)
    allowed = layout.allowed()
    delta = delta.to(dev)

    def restrict(pattern: Tensor, hook: Any) -> Tensor:
        out = pattern.clone()
        kept = out[:, :, width:, :] * allowed[:, None].to(out.dtype)
        out[:, :, width:, :] = kept / kept.sum(-1, keepdim=True)
        return out

    by_layer: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for i, (layer, head) in enumerate(group):
        by_layer[layer].append((width + i, head))

    def put(z: Tensor, hook: Any, layer: int) -> Tensor:
        pos = torch.tensor([p for p, _ in by_layer[layer]], device=dev)
        heads = torch.tensor([h for _, h in by_layer[layer]], device=dev)
        z = z.clone()
        z[:, pos, heads] = z[:, pos, heads] + delta[:, layer, heads].to(z.dtype)
        return z

    fwd = [(hooks.z(layer), bind(put, layer=layer)) for layer in sorted(by_layer)]
    mask = None
    if adapter.capabilities(model).pattern_edit:
        fwd += [(hooks.pattern(layer), restrict) for layer in range(model.cfg.n_layers)]
    else:  # the same keep-set as an additive mask: causal over the prompt, ``allowed`` for the copies
        ext = width + layout.n_copies
        keep = torch.ones(ext, ext, dtype=torch.bool, device=dev).tril().expand(len(sub), -1, -1).clone()
        keep[:, width:] = allowed
        mask = adapter.additive_mask(keep, adapter.dtype_of(model))
    try:
        with hooks.checked_hooks(model, fwd):
            logits = adapter.forward(model, layout.tokens(sub.tokens.to(dev)), position_ids=layout.position_ids(),
                                     attention_mask=mask)
    except (TypeError, hooks.HookNotFiredError) as e:  # no position_ids / no pattern hook: cannot be exact
        raise FastPathUnsupported(str(e)) from e
    return logits[:, width:].float().cpu()


def _check_control(control: Tensor, query: Tensor) -> None:
    # Restricted-softmax rounding is ~1e-6 on logits; a wrong position or mask is orders of magnitude larger.
    tol = 1e-4 * (1.0 + float(query.abs().max()))
    err = float((control - query).abs().max())
    if not err <= tol:
        raise FastPathUnsupported(f"the unpatched control copy differs from the query by {err:.3g} (> {tol:.3g})")


# ---- patching at several positions (head outputs or whole activations) --------------------------------
@dataclass(frozen=True)
class Cell:
    """Patch ``hook`` (all of it, or one ``head``) at one position ``pos`` or at every masked position."""

    hook: str
    head: int | None = None
    pos: int | None = None


def patch_positions(
    model: ModelLike, base: PromptBatch, source: PromptBatch, cells: Sequence[Cell], score: Scorer, *,
    mask: Bool[Tensor, "batch pos"] | None, batch_size: int, progress: bool | None = None,
) -> tuple[Float[Tensor, "cell batch"], Float[Tensor, " batch"], Float[Tensor, " batch"]]:
    """Effects of patching ``source`` activations into the ``base`` run, one forward per cell and chunk.

    ``base`` and ``source`` must be aligned (same shape). Returns ``(effects, base score, source score)``.
    """
    n = len(base)
    effects, base_score, source_score = torch.zeros(len(cells), n), torch.zeros(n), torch.zeros(n)
    dev = device_of(model)
    bar = progress_bar(len(cells) * -(-n // batch_size), progress, "patching")
    with torch.no_grad():
        for sl in chunks(n, batch_size):
            sub, src = base.select(sl), source.select(sl)
            acts, src_logits = capture(model, src, [c.hook for c in cells])
            source_score[sl] = score(src_logits, sl)
            toks, q = sub.tokens.to(dev), sub.query_pos.to(dev)
            base_score[sl] = score(at_query(model(toks), q), sl)
            sel_all = (mask[sl, : toks.shape[1]] if mask is not None else torch.ones_like(toks, dtype=torch.bool)).to(dev)
            for i, cell in enumerate(cells):
                sel = sel_all
                if cell.pos is not None:
                    sel = torch.zeros_like(sel_all)
                    sel[:, cell.pos] = True
                with hooks.checked_hooks(model, [(cell.hook, _setter(acts[cell.hook], cell.head, sel))]):
                    effects[i, sl] = score(at_query(model(toks), q), sl) - base_score[sl]
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
