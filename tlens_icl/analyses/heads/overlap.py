"""Overlap and depth of head sets: FV heads, induction heads, representational (RSA) heads, ...

For two rankings of the same ``N`` heads, the overlap of their top-``k`` sets is compared with chance:
two independent random ``k``-subsets share ``X ~ Hypergeometric(N, k, k)`` heads, with mean
``k^2 / N`` (the chance level of :func:`~tlens_icl.analyses.representations.compare_heads.compare_heads`);
``p = P(X >= observed)`` (scipy). Depth is ``layer / (n_layers - 1)`` (0 = first layer, 1 = last). Yin &
Steinhardt find FV and induction heads barely overlap and induction heads sit earlier; Opiełka et al. find ~0
overlap of AIE and concept-RSA heads in large models.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from tlens_icl._validate import checked, int_sequence, integer
from tlens_icl.analyses.heads.ablation import score_map
from tlens_icl.analyses.heads.scores import top_heads_of
from tlens_icl.errors import TlensICLError
from tlens_icl.results.base import Result, require_same_model, run_info


@dataclass(frozen=True)
class HeadOverlapResult(Result):
    """Top-k overlaps of every pair of rankings and the depth of each ranking's top heads.

    ``overlap[p, j]``: heads shared by the top-``ks[j]`` sets of pair ``pairs[p]``; ``expected[j]`` the
    chance mean ``k^2 / N``; ``p_value[p, j] = P(X >= overlap)`` under the hypergeometric null.
    """

    scores: Float[Tensor, "set layer head"]
    names: tuple[str, ...]
    pairs: tuple[tuple[str, str], ...]
    ks: tuple[int, ...]
    overlap: Float[Tensor, "pair k"]
    expected: Float[Tensor, " k"]
    p_value: Float[Tensor, "pair k"]
    k_depth: int
    info: dict[str, Any]

    title = "Head-set overlap"

    def top(self, name: str, k: int) -> list:
        return top_heads_of(self.scores[self.names.index(name)], k)

    def depth(self, name: str, k: int | None = None) -> list[float]:
        """Depth fraction ``layer / (n_layers - 1)`` of each of the top-``k`` heads (default ``k_depth``)."""
        n_layers = self.scores.shape[1]
        return [h.layer / max(1, n_layers - 1) for h in self.top(name, k or self.k_depth)]

    def to_dataframe(self) -> Any:
        import pandas as pd

        rows = [{"pair": f"{a} & {b}", "k": k, "overlap": int(self.overlap[p, j]), "expected": float(self.expected[j]),
                 "p_value": float(self.p_value[p, j])}
                for p, (a, b) in enumerate(self.pairs) for j, k in enumerate(self.ks)]
        return pd.DataFrame(rows)

    def depth_table(self) -> Any:
        import pandas as pd

        return pd.DataFrame([{"set": n, "k": self.k_depth, "mean_depth": sum(d) / len(d), "min_depth": min(d),
                              "max_depth": max(d), "heads": " ".join(str(h) for h in self.top(n, self.k_depth))}
                             for n in self.names for d in [self.depth(n)]])

    def summary(self) -> str:
        j = self.ks.index(self.k_depth) if self.k_depth in self.ks else len(self.ks) - 1
        ov = "; ".join(f"{a}&{b} {int(self.overlap[p, j])} (chance {float(self.expected[j]):.2f}, "
                       f"p={float(self.p_value[p, j]):.2g})" for p, (a, b) in enumerate(self.pairs))
        dep = ", ".join(f"{n} {sum(d) / len(d):.2f}" for n in self.names for d in [self.depth(n)])
        return f"{self.title}, top-{self.ks[j]}: {ov}. Mean depth of the top-{self.k_depth}: {dep}"

    def plot(self, ax: Any = None) -> Any:
        from tlens_icl.viz.heads import overlap_depth

        return overlap_depth(list(self.ks), {f"{a} & {b}": self.overlap[p].int().tolist()
                                             for p, (a, b) in enumerate(self.pairs)},
                             self.expected.tolist(), {n: self.depth(n) for n in self.names}, k_depth=self.k_depth,
                             title=f"{self.info.get('model') or ''} {self.title}".strip(), axes=ax)


@checked
def head_overlap(rankings: Mapping[str, Any], *, ks: Sequence[int] = (1, 3, 5, 10), k_depth: int | None = None,
                 model: Any = None) -> HeadOverlapResult:
    """Top-k overlap of every pair of head rankings against chance, and where each set sits in depth.

    Args:
        rankings: name -> ``[layer, head]`` map (or a result: ``IndirectEffectResult`` -> AIE,
            ``HeadScoresResult`` -> induction score); e.g. ``{"FV": aie, "induction": scores,
            "RSA": rsa_result.head_scores()}``. Higher = more that kind of head. NaN heads are never top.
        ks: the top-k sizes; ``k_depth``: the set size for depth (default: the largest k).
        model: the model the rankings were computed on (optional): recorded, and each ranking must come from it.
    """
    from scipy.stats import hypergeom

    if not isinstance(rankings, Mapping) or len(rankings) < 2:
        raise TlensICLError("head_overlap(): rankings must be a dict of at least two name -> [layer, head] rankings.")
    if model is not None:
        for n, s in rankings.items():
            require_same_model(model, s, f"ranking {n!r}", where="head_overlap(): ")
    maps = {n: score_map(s, n) for n, s in rankings.items()}
    shapes = {tuple(m.shape) for m in maps.values()}
    if len(shapes) != 1:
        raise TlensICLError(f"The rankings have different shapes: {sorted(shapes)}.")
    if model is not None and shapes != {(int(model.cfg.n_layers), int(model.cfg.n_heads))}:
        raise TlensICLError(f"head_overlap(): the rankings are {shapes.pop()} but the model has "
                            f"{(model.cfg.n_layers, model.cfg.n_heads)} heads.")
    n_total = next(iter(maps.values())).numel()
    ks = int_sequence(ks, "ks", minimum=1, where="head_overlap(): ")
    if any(k > n_total for k in ks):
        raise TlensICLError(f"head_overlap(): every k must be in [1, {n_total}], got {list(ks)}.")
    k_depth = max(ks) if k_depth is None else integer(k_depth, "k_depth", minimum=1, maximum=n_total,
                                                       where="head_overlap(): ")
    need = max(max(ks), k_depth)
    for n, m in maps.items():
        measured = int((~m.isnan()).sum())
        if measured < need:
            raise TlensICLError(f"head_overlap(): ranking {n!r} scores {measured} of {n_total} heads (the others are NaN, "
                                f"not measured), fewer than the {need} its top-k sets need.")
    names = tuple(maps)
    pairs = tuple(combinations(names, 2))
    overlap = torch.tensor([[len(set(top_heads_of(maps[a], k)) & set(top_heads_of(maps[b], k))) for k in ks]
                            for a, b in pairs], dtype=torch.float32)
    p_value = torch.tensor([[float(hypergeom.sf(int(o) - 1, n_total, k, k)) for o, k in zip(row, ks)]
                            for row in overlap.tolist()], dtype=torch.float32)
    return HeadOverlapResult(scores=torch.stack([maps[n] for n in names]), names=names, pairs=pairs, ks=ks,
                             overlap=overlap, expected=torch.tensor([k * k / n_total for k in ks]), p_value=p_value,
                             k_depth=k_depth, info=run_info(model))


__all__ = ["HeadOverlapResult", "head_overlap"]
