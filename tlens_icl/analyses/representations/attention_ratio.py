"""Attention ratio analysis: does the answer position attend to relevant rather than distracting tokens?
(Yousefi et al., arXiv 2310.00313).

For each prompt and head, the attention mass that the query position (the token whose logits predict the
answer) puts on a *relevant* region and on an *irrelevant* (distractor) region is read from
``hook_pattern`` (post-softmax; each query row sums to 1):

    mass_R = sum_{j in R} A[query, j]            share = mass_rel / (mass_rel + mass_irr)

The share is in [0, 1]; higher = more attention to the relevant region than to the distractors (0.5 =
equal mass). ``per_token=True`` divides each mass by its region's token count first, so regions of
different lengths compare fairly (0.5 = equal attention per token). Prompts whose two masses are both 0
are left out of the mean. Compare conditions (e.g. 0-shot vs k-shot prompts) for the before/after-ICL
contrast.

Regions: a token role (``"demo_output"``, see :data:`~tlens_icl.prompts.ROLES`), ``"meta:<key>"`` (the
query item's ``meta[key]``: one or several exact substrings of the query input, e.g.
``reading_comprehension``'s ``meta:relevant`` and ``meta:distractors``, mapped to tokens through the
tokenizer's offset mapping), or a callable ``PromptBatch -> Bool[batch, pos]``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from tlens_icl._ties import argbest
from tlens_icl._typing import ModelLike
from tlens_icl._validate import checked
from tlens_icl.engine import hooks
from tlens_icl.engine.capture import Custom, capture
from tlens_icl.errors import PromptError, TlensICLError
from tlens_icl.prompts.batch import ROLE_ID, PromptBatch, query_char_span, span_mask
from tlens_icl.results.base import Result, run_info

Region = Union[str, Callable[[PromptBatch], Tensor]]


def region_mask(model: ModelLike, batch: PromptBatch, region: Region) -> Bool[Tensor, "batch pos"]:
    """Boolean ``[batch, pos]`` mask of a region (a role, ``"meta:<key>"`` or a callable); see the module docstring."""
    if callable(region):
        mask = region(batch)
        if not isinstance(mask, Tensor) or mask.shape != batch.tokens.shape:
            raise TlensICLError(f"A region callable must return a [batch, pos] = {tuple(batch.tokens.shape)} mask.")
        return mask.bool()
    if region in ROLE_ID:
        return batch.mask(region)
    if isinstance(region, str) and region.startswith("meta:"):
        return span_mask(model, batch, [_meta_spans(batch, row, region[5:]) for row in range(len(batch))])
    raise TlensICLError(f"Unknown region {region!r}: use a role {tuple(ROLE_ID)}, 'meta:<key>' or a callable.")


def _meta_spans(batch: PromptBatch, row: int, key: str) -> list[tuple[int, int]]:
    item = batch.queries[row]
    if key not in item.meta:
        raise PromptError(f"Row {row}: the query item has no meta[{key!r}] (meta keys: {sorted(item.meta)}).")
    texts = item.meta[key]
    texts = [texts] if isinstance(texts, str) else list(texts)
    q_start, _ = query_char_span(batch, row)
    spans = []
    for t in texts:
        at = item.input.find(t)
        if at < 0:
            raise PromptError(f"Row {row}: meta[{key!r}] text {t!r} is not a substring of the query input.")
        spans.append((q_start + at, q_start + at + len(t)))
    return spans


def attention_mass(
    pattern: Float[Tensor, "batch head query key"], query_pos: Int[Tensor, " batch"], mask: Bool[Tensor, "batch key"],
) -> Float[Tensor, "batch head"]:
    """Attention mass from each row's query position to the tokens in ``mask``."""
    rows = torch.arange(pattern.shape[0], device=pattern.device)
    at_query = pattern[rows, :, query_pos.to(pattern.device), :]  # [batch, head, key]
    return torch.einsum("bhk,bk->bh", at_query.float(), mask.to(at_query.device).float())


def share(relevant: Tensor, irrelevant: Tensor) -> Tensor:
    """``relevant / (relevant + irrelevant)``; NaN where both are 0."""
    total = relevant + irrelevant
    return torch.where(total > 0, relevant / total.clamp_min(1e-30), torch.full_like(total, float("nan")))


@dataclass(frozen=True)
class AttentionRatioResult(Result):
    """Attention mass from the query position to the relevant and irrelevant regions, per prompt and head.

    ``relevant_mass[i, l, h]`` / ``irrelevant_mass[i, l, h]``: prompt ``i`` (condition ``conditions[i]``),
    layer ``layers[l]``, head ``h``. ``n_relevant[i]`` / ``n_irrelevant[i]``: the regions' token counts.
    ``ratio()`` is the share of relevant attention; higher = more attention to the relevant region.
    """

    relevant_mass: Float[Tensor, "example layer head"]
    irrelevant_mass: Float[Tensor, "example layer head"]
    n_relevant: Int[Tensor, " example"]
    n_irrelevant: Int[Tensor, " example"]
    conditions: tuple[str, ...]
    condition_names: tuple[str, ...]
    layers: tuple[int, ...]
    relevant: str
    irrelevant: str
    info: dict[str, Any]

    title = "Attention ratio"

    def _rows(self, condition: str | None) -> Tensor:
        c = condition if condition is not None else self.condition_names[-1]
        if c not in self.condition_names:
            raise TlensICLError(f"Unknown condition {c!r}; this result has {self.condition_names}.")
        return torch.tensor([x == c for x in self.conditions])

    def per_prompt(self, condition: str | None = None, *, per_token: bool = False) -> Float[Tensor, "example layer head"]:
        """The share of relevant attention of each prompt of ``condition`` (NaN where both masses are 0)."""
        sel = self._rows(condition)
        rel, irr = self.relevant_mass[sel], self.irrelevant_mass[sel]
        if per_token:
            rel = rel / self.n_relevant[sel].clamp_min(1)[:, None, None]
            irr = irr / self.n_irrelevant[sel].clamp_min(1)[:, None, None]
        return share(rel, irr)

    def ratio(self, condition: str | None = None, *, per_token: bool = False) -> Float[Tensor, "layer head"]:
        """Mean share of relevant attention over the prompts of ``condition`` (default: the last condition)."""
        return self.per_prompt(condition, per_token=per_token).nanmean(0)

    def change(self, before: str | None = None, after: str | None = None, *, per_token: bool = False) -> Float[Tensor, "layer head"]:
        """``ratio(after) - ratio(before)`` (default: last minus first condition); positive = ICL raised the share."""
        return (self.ratio(after or self.condition_names[-1], per_token=per_token)
                - self.ratio(before or self.condition_names[0], per_token=per_token))

    def to_dataframe(self, *, per_token: bool = False) -> Any:
        import pandas as pd

        rows = []
        for c in self.condition_names:
            sel = self._rows(c)
            r = self.ratio(c, per_token=per_token)
            rel, irr = self.relevant_mass[sel].mean(0), self.irrelevant_mass[sel].mean(0)
            for li, layer in enumerate(self.layers):
                for h in range(r.shape[1]):
                    rows.append({"condition": c, "layer": layer, "head": h, "share": float(r[li, h]),
                                 "relevant_mass": float(rel[li, h]), "irrelevant_mass": float(irr[li, h]),
                                 "n": int(sel.sum())})
        return pd.DataFrame(rows)

    def summary(self) -> str:
        parts = []
        for c in self.condition_names:
            r = self.ratio(c)
            if bool(r.isnan().all()):
                parts.append(f"{c}: n/a (no query attention to either region)")
                continue
            li, h = np.unravel_index(int(argbest(r.flatten())), tuple(r.shape))
            parts.append(f"{c}: mean share {float(r.nanmean()):.2f}, max {float(r[li, h]):.2f} at L{self.layers[li]}H{h}")
        return f"{self.title} of {self.model_name} ({self.relevant} vs {self.irrelevant}): " + "; ".join(parts)

    def plot(self, *, per_token: bool = False) -> Any:
        """One [layer, head] heatmap of the relevant share per condition (0.5 = no preference; blank = n/a)."""
        from tlens_icl.viz.plots import heatmap_panels

        counts = {c: int(self._rows(c).sum()) for c in self.condition_names}
        n = f"n={next(iter(counts.values()))}" if len(set(counts.values())) == 1 else "n=" + "/".join(map(str, counts.values()))
        return heatmap_panels({c: self.ratio(c, per_token=per_token) for c in self.condition_names},
                              cmap="RdBu_r", vmin=0.0, vmax=1.0, layer_labels=[str(x) for x in self.layers],
                              label=f"share on {self.relevant}{' (per token)' if per_token else ''}",
                              title=f"Query attention on {self.relevant} vs {self.irrelevant}",
                              subtitle=self._subtitle(f"share = rel / (rel + irr), 0.5 = no preference; {n} prompts per "
                                                      "condition"))


def _region_name(region: Region) -> str:
    return region if isinstance(region, str) else getattr(region, "__name__", "custom")


@checked
def attention_ratio(
    model: ModelLike, prompts: PromptBatch | Mapping[str, PromptBatch], *, relevant: Region = "meta:relevant",
    irrelevant: Region = "meta:distractors", layers: Sequence[int] | None = None, batch_size: int = 16,
    progress: bool | None = None,
) -> AttentionRatioResult:
    """Attention mass from the query position to ``relevant`` vs ``irrelevant`` tokens, per head and prompt.

    Args:
        prompts: one batch, or condition name -> batch (e.g. ``{"0-shot": ..., "4-shot": ...}``).
        relevant, irrelevant: regions (a role, ``"meta:<key>"``, or ``PromptBatch -> Bool[batch, pos]``).
        layers: layers to read (default: all).

    Returns:
        :class:`AttentionRatioResult`; ``.ratio(condition)`` ``[layer, head]`` (higher = more relevant
        attention), ``.change(before, after)``.
    """
    if not isinstance(prompts, (PromptBatch, Mapping)):
        raise TlensICLError(f"attention_ratio(): prompts must be a PromptBatch or a dict condition -> PromptBatch, got "
                            f"{type(prompts).__name__}.")
    named = {"prompts": prompts} if isinstance(prompts, PromptBatch) else dict(prompts)
    bad = [k for k, v in named.items() if not isinstance(v, PromptBatch)]
    if bad:
        raise TlensICLError(f"attention_ratio(): prompts[{bad[0]!r}] is not a PromptBatch (tlens_icl.make_prompts).")
    if not named:
        raise TlensICLError("attention_ratio needs at least one prompt batch.")
    n_layers = int(model.cfg.n_layers)
    layer_tuple = tuple(range(n_layers)) if layers is None else tuple(int(x) for x in layers)
    if not layer_tuple or any(not 0 <= x < n_layers for x in layer_tuple):
        raise TlensICLError(f"layers must be in [0, {n_layers}), got {layers!r}.")
    masks = {}
    for name, batch in named.items():  # every region is resolved before the first forward pass
        rel, irr = region_mask(model, batch, relevant), region_mask(model, batch, irrelevant)
        if bool((rel & irr).any()):
            raise TlensICLError(f"Condition {name!r}: the relevant and irrelevant regions overlap.")
        masks[name] = (rel, irr)
    rel_out, irr_out, conds = [], [], []
    for name, batch in named.items():
        rel_mask, irr_mask = masks[name]
        q = batch.query_pos

        def masses(pattern: Tensor, rows: Tensor, rel: Tensor = rel_mask, irr: Tensor = irr_mask,
                   q: Tensor = q) -> Tensor:
            w = pattern.shape[-1]
            return torch.stack([attention_mass(pattern, q[rows], rel[rows, :w]),
                                attention_mass(pattern, q[rows], irr[rows, :w])], 1)  # [b, 2, head]

        stat = Custom(masses, reach=q)
        got = capture(model, batch.tokens, {hooks.pattern(layer): stat for layer in layer_tuple},
                      batch_size=batch_size, progress=progress, operation="attention_ratio")
        per = torch.stack([got[hooks.pattern(layer)] for layer in layer_tuple], 1)  # [b, layer, 2, head]
        rel_out.append(per[:, :, 0])
        irr_out.append(per[:, :, 1])
        conds += [name] * len(batch)
    return AttentionRatioResult(
        relevant_mass=torch.cat(rel_out), irrelevant_mass=torch.cat(irr_out),
        n_relevant=torch.cat([m[0].sum(1) for m in masks.values()]),
        n_irrelevant=torch.cat([m[1].sum(1) for m in masks.values()]),
        conditions=tuple(conds), condition_names=tuple(named), layers=layer_tuple,
        relevant=_region_name(relevant), irrelevant=_region_name(irrelevant),
        info=run_info(model, n={k: len(v) for k, v in named.items()}),
    )


__all__ = ["AttentionRatioResult", "attention_mass", "attention_ratio", "region_mask", "share"]
