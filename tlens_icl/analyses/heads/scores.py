"""Attention-pattern head scores on one ``[layer, head]`` grid: induction, previous-token, duplicate-token.

On sequences ``[BOS] r_1 .. r_T r_1 .. r_T`` of distinct random tokens (Olsson et al. 2022):

* **induction**: attention from a token to the token *after* its earlier occurrence;
* **duplicate-token**: attention from a token to its earlier occurrence;
* **previous-token**: attention to the immediately preceding position.

A head's score on one sequence is the attention mass on the target keys, averaged over the query
rows that *have* a target (``rows="targets"``, default): a perfect induction head scores 1.0.
``rows="all"`` averages over every row instead (rows without a target count as 0), which is exactly
``transformer_lens.head_detector.detect_head(..., error_measure="mul")`` - tested equal.

Why not call ``detect_head`` itself: it takes strings (random token ids do not survive a BPE
decode/encode round trip, so the "repeated" tokens stop repeating), runs one prompt per forward with a
full activation cache and loops over heads in Python, and its ``"mul"`` score divides by every row of
the pattern, so on a repeated sequence even a perfect induction head scores only about 0.5 (its
targets exist in the second half only). Here token ids go in directly, every head of every layer is
scored from one forward per chunk (``engine.attention``), right-padded rows of different lengths work,
and the score is normalised by the rows that have a target. BOS is never a target (its id does not
repeat) and is a query row only under ``rows="all"``. Grouped-query attention needs nothing special:
``hook_pattern`` is per query head.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from tlens_icl._ties import ranked
from tlens_icl._typing import Head, ModelLike
from tlens_icl._validate import checked
from tlens_icl.engine.attention import attention_to_targets
from tlens_icl.errors import TlensICLError
from tlens_icl.results.base import Result, run_info
from tlens_icl.results.heads import HeadEffectViews

KINDS = ("induction", "previous_token", "duplicate_token")
Rows = Literal["targets", "all"]


def repeated_random_tokens(
    model: ModelLike, *, n: int = 32, length: int = 25, seed: int = 0, prepend_bos: bool = True,
) -> Int[Tensor, "n pos"]:
    """``n`` sequences ``[BOS] r_1..r_T r_1..r_T`` (``T = length``), the ``r_i`` distinct random non-special tokens."""
    tok = getattr(model, "tokenizer", None)
    special = set(getattr(tok, "all_special_ids", []) or [])
    pool = torch.tensor([i for i in range(model.cfg.d_vocab) if i not in special])
    if length < 2 or length > len(pool):
        raise TlensICLError(f"length must be in [2, {len(pool)}], got {length}.")
    bos = getattr(tok, "bos_token_id", None) if prepend_bos else None
    width = 2 * length + (bos is not None)
    if width > model.cfg.n_ctx:
        raise TlensICLError(f"2 x length{' + BOS' if bos is not None else ''} = {width} exceeds n_ctx {model.cfg.n_ctx}.")
    gen = torch.Generator().manual_seed(seed)
    half = torch.stack([pool[torch.randperm(len(pool), generator=gen)[:length]] for _ in range(n)])
    parts = ([torch.full((n, 1), bos, dtype=torch.long)] if bos is not None else []) + [half, half]
    return torch.cat(parts, 1)


def detection_targets(
    tokens: Int[Tensor, "batch pos"], mask: Int[Tensor, "batch pos"] | None = None, *, rows: Rows = "targets",
) -> tuple[Bool[Tensor, "kind batch pos pos"], Bool[Tensor, "kind batch pos"]]:
    """Target keys and query rows of each score in :data:`KINDS`, from token identity alone.

    Duplicate: earlier keys with the same token. Induction: the key after each such earlier occurrence
    (as ``head_detector``'s patterns). Previous-token: the key ``q - 1``. Padding is never a row or key.
    """
    if rows not in ("targets", "all"):
        raise TlensICLError(f"rows must be 'targets' or 'all', got {rows!r}.")
    b, p = tokens.shape
    real = torch.ones(b, p, dtype=torch.bool) if mask is None else mask.bool()
    pair = real[:, :, None] & real[:, None, :]
    earlier = torch.ones(p, p, dtype=torch.bool).tril(-1)  # k < q
    dup = (tokens[:, :, None] == tokens[:, None, :]) & earlier & pair
    ind = torch.zeros_like(dup)
    ind[:, :, 1:] = dup[:, :, :-1]  # key j + 1 for each earlier occurrence j
    ind &= torch.ones(p, p, dtype=torch.bool).tril() & pair
    prev = torch.zeros_like(dup)
    prev[:, torch.arange(1, p), torch.arange(p - 1)] = True
    prev &= pair
    targets = torch.stack([ind, prev, dup])
    sel = targets.any(-1) if rows == "targets" else real[None].expand(3, -1, -1).clone()
    return targets, sel


def lag_targets(tokens: Int[Tensor, "batch pos"], lags: Sequence[int]
                ) -> tuple[Bool[Tensor, "kind batch pos pos"], Bool[Tensor, "kind batch pos"]]:
    """Targets of the lagged scores: for each lag ``l`` the key ``l`` after each earlier occurrence of the query's
    token (``l = 1``: the induction target), then for each ``l`` the key ``l`` back (``l = 1``: previous token)."""
    b, p = tokens.shape
    earlier = torch.ones(p, p, dtype=torch.bool).tril(-1)
    dup = (tokens[:, :, None] == tokens[:, None, :]) & earlier
    upto = torch.ones(p, p, dtype=torch.bool).tril()
    ind, back = [], []
    for lag in lags:
        t = torch.zeros_like(dup)
        t[:, :, lag:] = dup[:, :, :-lag]
        ind.append(t & upto)
        bk = torch.zeros_like(dup)
        bk[:, torch.arange(lag, p), torch.arange(p - lag)] = True
        back.append(bk)
    targets = torch.stack(ind + back)
    return targets, targets.any(-1)


@checked
def lag_scores(
    model: ModelLike, *, lags: Sequence[int] = tuple(range(1, 9)), n: int = 32, length: int = 20, seed: int = 0,
    batch_size: int = 16,
) -> tuple[Float[Tensor, "lag layer head"], Float[Tensor, "lag layer head"]]:
    """Induction and previous-token scores at other lags, every head, on repeated random tokens.

    ``induction[i]``: attention from a repeated token to the key ``lags[i]`` after its earlier occurrence
    (``lag 1`` is :func:`head_scores`'s induction score); ``previous[i]``: attention to the key ``lags[i]`` back
    (``lag 1``: the previous-token score). An induction circuit can match a token against the token ``l`` back
    and read the key after it at lag ``l``; the lag-1 score sees only ``l = 1``. Higher = more (0..1).
    """
    lags = [int(x) for x in lags]
    if not lags or min(lags) < 1 or len(set(lags)) != len(lags):
        raise TlensICLError(f"lag_scores(): lags must be distinct integers >= 1, got {lags}.")
    if length <= 2 * max(lags):
        raise TlensICLError(f"lag_scores(): length {length} must exceed twice the largest lag ({max(lags)}), so that "
                            "the induction keys and the keys back never coincide.")
    tokens = repeated_random_tokens(model, n=n, length=length, seed=seed)
    targets, rows = lag_targets(tokens, lags)
    scores = attention_to_targets(model, tokens, targets, rows, batch_size=batch_size).nanmean(-1)
    return scores[: len(lags)], scores[len(lags):]


@dataclass(frozen=True)
class HeadScoresResult(HeadEffectViews, Result):
    """Per-sequence attention scores of every head.

    ``scores[c, l, h, i]``: score :data:`KINDS`\\ ``[c]`` of head ``(l, h)`` on sequence ``i`` (fraction of
    the head's attention on the target keys, 0..1; higher = more that kind of head). The views of
    :class:`~tlens_icl.results.heads.HeadEffectViews` take the kind where they take a task
    (``mean("induction")``, ``top_heads(5, "previous_token")``); the default kind is ``induction``.
    """

    scores: Float[Tensor, "kind layer head seq"]
    tokens: Int[Tensor, "seq pos"]
    kinds: tuple[str, ...]
    rows: str
    info: dict[str, Any]

    title = "Head scores"
    measured = ("scores",)
    choices = {"kinds": KINDS, "rows": ("targets", "all")}
    effect_label = "score"

    def _stacked(self) -> tuple[Tensor, tuple[str, ...]]:
        return self.scores, self.kinds

    def _select(self, task: str | None) -> Tensor:
        return super()._select("induction" if task is None else task)

    def induction(self) -> Float[Tensor, "layer head"]:
        return self.mean("induction")

    def previous_token(self) -> Float[Tensor, "layer head"]:
        return self.mean("previous_token")

    def duplicate_token(self) -> Float[Tensor, "layer head"]:
        return self.mean("duplicate_token")

    def summary(self) -> str:
        parts = [f"{kind}: " + ", ".join(f"{h}={float(self.mean(kind)[h]):.2f}" for h in self.top_heads(3, kind))
                 for kind in self.kinds]
        return f"{self.title} on {self.scores.shape[-1]} sequences (rows={self.rows}); top " + "; ".join(parts)

    def _plot_context(self, task: str | None = None) -> str:
        return (f"n={self.scores.shape[-1]} repeated-random-token sequences of {self.tokens.shape[-1]} tokens; "
                f"score = attention on the target keys (0..1), rows={self.rows}")

    def plot(self, task: str | None = None, *, k: int = 5, ax: Any = None) -> Any:
        """One heatmap per kind (``task=`` one kind only) on a 0..max scale that one dominant head cannot flatten
        (its colour bar names any head beyond it), every head labelled, top-``k`` outlined; side by side when
        they fit in 12 inches, else stacked."""
        from tlens_icl.viz.plots import head_heatmap, heatmap_size, layers_across, new_figure, set_titles

        kinds = self.kinds if task is None else (task,)
        if ax is not None and len(kinds) > 1:
            raise TlensICLError("ax= needs one kind: plot(task='induction', ax=ax).")
        n_layers, n_heads = self.scores.shape[1:3]
        if ax is None:
            w, h = heatmap_size(n_layers, n_heads)
            if layers_across(n_layers, n_heads) or len(kinds) * w > 12:  # stacked rather than a very wide strip
                fig, axes = new_figure((w, 0.9 + (h - 0.6) * len(kinds)), nrows=len(kinds), squeeze=False)
                axes = list(axes[:, 0])
            else:
                fig, axes = new_figure((0.4 + len(kinds) * (w - 0.4), h + 0.5), ncols=len(kinds), squeeze=False)
                axes = list(axes[0])
        else:
            fig, axes = ax.figure, [ax]
        for kind, a in zip(kinds, axes):
            mean = self.mean(kind)
            head_heatmap(mean, ax=a, cmap="Blues", vmin=0.0, title=kind.replace("_", "-"),
                         marked=[tuple(h) for h in self.top_heads(k, kind)], label=f"{kind.replace('_', '-')} score",
                         marked_label=f"top {k}")
        if ax is None:
            set_titles(fig, "Attention-pattern head scores", self._subtitle(self._plot_context()))
        return fig


@checked
def head_scores(
    model: ModelLike, tokens: Int[Tensor, "seq pos"] | None = None, *, mask: Int[Tensor, "seq pos"] | None = None,
    n: int = 32, length: int = 25, seed: int = 0, rows: Rows = "targets", batch_size: int = 16,
) -> HeadScoresResult:
    """Induction, previous-token and duplicate-token scores of every head (one forward per chunk).

    Args:
        tokens: sequences to score (right-padded, with ``mask``); default :func:`repeated_random_tokens`
            with ``n``, ``length`` and ``seed``.
        rows: ``"targets"`` averages over query rows that have a target (a perfect head scores 1);
            ``"all"`` over every row (``head_detector``'s ``"mul"`` convention).

    Returns:
        :class:`HeadScoresResult`; ``.induction()`` is the ``[layer, head]`` induction score map.
    """
    if tokens is None:
        if mask is not None:
            raise TlensICLError("head_scores(): mask= belongs to tokens=; the default sequences need none.")
        tokens = repeated_random_tokens(model, n=n, length=length, seed=seed)
    if not isinstance(tokens, Tensor) or tokens.is_floating_point() or tokens.dim() != 2 or tokens.shape[1] < 2:
        raise TlensICLError(f"head_scores(): tokens must be an integer [seq, pos] tensor with pos >= 2, got "
                            f"{tuple(getattr(tokens, 'shape', ())) or type(tokens).__name__}.")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= model.cfg.d_vocab):
        raise TlensICLError(f"head_scores(): tokens holds ids outside the vocabulary [0, {model.cfg.d_vocab}): "
                            f"min {int(tokens.min())}, max {int(tokens.max())}.")
    if mask is not None and (not isinstance(mask, Tensor) or tuple(mask.shape) != tuple(tokens.shape)):
        raise TlensICLError(f"head_scores(): mask must have the shape of tokens {tuple(tokens.shape)}, got "
                            f"{tuple(getattr(mask, 'shape', ())) or type(mask).__name__}.")
    if tokens.shape[1] > model.cfg.n_ctx:
        raise TlensICLError(f"Sequences of {tokens.shape[1]} tokens exceed n_ctx {model.cfg.n_ctx}.")
    targets, sel = detection_targets(tokens, mask, rows=rows)
    if not bool(sel.any()):
        raise TlensICLError("No query row has a target (no token repeats); nothing to score.")
    if rows == "targets":
        empty = [kind for kind, s in zip(KINDS, sel) if not bool(s.any())]
        if empty:
            raise TlensICLError(f"head_scores(): no token of these sequences repeats an earlier one, so the {empty} "
                                "score(s) have nothing to measure (they would be NaN); score sequences with repeats "
                                "(the default repeated random tokens) or rows='all'.")
    scores = attention_to_targets(model, tokens, targets, sel, batch_size=batch_size)
    return HeadScoresResult(scores=scores, tokens=tokens.clone(), kinds=KINDS, rows=rows,
                            info=run_info(model, n=int(tokens.shape[0]), width=int(tokens.shape[1]), seed=seed,
                                          length=length, rows=rows))


def top_heads_of(scores: Float[Tensor, "layer head"], k: int) -> list[Head]:
    """The ``k`` highest-scoring heads (NaN never; ties within float tolerance: lower layer, then lower head first)."""
    order = ranked(scores)[: max(0, k)]
    n_heads = scores.shape[1]
    return [Head(int(i) // n_heads, int(i) % n_heads) for i in order]


__all__ = ["KINDS", "HeadScoresResult", "detection_targets", "head_scores", "lag_scores", "lag_targets",
           "repeated_random_tokens", "top_heads_of"]
