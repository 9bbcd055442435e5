"""Views shared by every per-head effect result: means, bootstrap CIs, top heads, tables, heatmaps."""

from __future__ import annotations

from typing import Any

import hashlib

import torch
from jaxtyping import Float
from torch import Tensor

from tlens_icl._ties import ranked
from tlens_icl._typing import Head
from tlens_icl.errors import TlensICLError


def derive_generator(seed: int, *labels: object) -> torch.Generator:
    """A CPU generator keyed on ``seed`` and ``labels`` (SHA-256, stable across processes and TL majors).

    The same derivation as TransformerLens 4's ``utilities.statistics.derive_generator`` (absent in
    TransformerLens 3), so bootstrap intervals are identical under both.

    >>> import torch
    >>> from tlens_icl.results.heads import derive_generator
    >>> derive_generator(0, "tlens_icl.bootstrap").initial_seed()   # the first 8 bytes of sha256(b"0:tlens_icl.bootstrap")
    5270662816247769745
    >>> draw = lambda *key: torch.rand(3, generator=derive_generator(*key)).tolist()
    >>> draw(0, "a") == draw(0, "a"), draw(0, "a") == draw(0, "b"), draw(0, "a") == draw(1, "a")
    (True, False, False)
    """
    key = ":".join([str(seed), *(str(label) for label in labels)]).encode()
    derived = int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & 0x7FFFFFFFFFFFFFFF
    return torch.Generator(device="cpu").manual_seed(derived)


def bootstrap_ci(
    values: Float[Tensor, "task *cell example"], *, confidence: float = 0.95, n_resamples: int = 1000, seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """Percentile bootstrap CI of the task-averaged mean over examples, resampling examples within each task.

    An example slot that is NaN in every cell (padding after ``filter_correct``) is not resampled.

    >>> import torch
    >>> from tlens_icl.results.heads import bootstrap_ci
    >>> effects = torch.tensor([[[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]]])   # [task, head, example]: mean 3.5
    >>> lo, hi = bootstrap_ci(effects, confidence=0.95, seed=0)
    >>> lo.shape, round(float(lo), 2), round(float(hi), 2)
    (torch.Size([1]), 2.17, 4.83)
    >>> padded = torch.tensor([[[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, float("nan")]]])   # one padding slot
    >>> torch.equal(bootstrap_ci(padded, seed=0)[0], lo)
    True
    """
    if not 0.0 < confidence < 1.0:
        raise TlensICLError(f"confidence must be in (0, 1), got {confidence}.")
    gen = derive_generator(seed, "tlens_icl.bootstrap")
    draws = torch.zeros(*values.shape[1:-1], n_resamples)
    for per_task in values:
        per_task = per_task[..., ~per_task.reshape(-1, per_task.shape[-1]).isnan().all(0)]
        n = per_task.shape[-1]
        idx = torch.randint(0, n, (n_resamples, n), generator=gen)
        draws += per_task[..., idx].mean(-1)
    draws /= values.shape[0]
    alpha = (1.0 - confidence) / 2
    return torch.quantile(draws, alpha, dim=-1), torch.quantile(draws, 1 - alpha, dim=-1)


class HeadEffectViews:
    """Mixin for results holding per-example effects per (task, layer, head).

    Subclasses provide ``_stacked() -> (effects [task, layer, head, example], task names)`` and the
    ``title``/``effect_label`` used in plots. NaN marks what was not measured: every example of a head
    outside the requested ``heads``, and a task's padding slots after ``filter_correct``. Means skip
    padding; unmeasured heads have a NaN mean and are left out of rankings and tables.
    """

    effect_label: str = "effect"

    def _stacked(self) -> tuple[Tensor, tuple[str, ...]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _select(self, task: str | None) -> Tensor:
        effects, names = self._stacked()
        if task is None:
            return effects
        if task not in names:
            raise TlensICLError(f"Task {task!r} is not in this result; it has {list(names)}.")
        return effects[names.index(task)][None]

    def mean(self, task: str | None = None) -> Float[Tensor, "layer head"]:
        """Mean effect per head (averaged over examples, then over tasks when ``task`` is None); NaN = not patched."""
        return self._select(task).nanmean(-1).mean(0)

    def ci(self, task: str | None = None, *, confidence: float = 0.95, n_resamples: int = 1000,
           seed: int = 0) -> tuple[Float[Tensor, "layer head"], Float[Tensor, "layer head"]]:
        """Percentile bootstrap interval of :meth:`mean` (examples resampled within each task)."""
        return bootstrap_ci(self._select(task), confidence=confidence, n_resamples=n_resamples, seed=seed)

    def top_heads(self, k: int = 10, task: str | None = None, *, largest: bool = True) -> list[Head]:
        """The ``k`` heads with the largest mean effect, largest first (``largest=False``: most negative first,
        e.g. the heads whose noising hurts most). Heads that were not patched are never returned."""
        mean = self.mean(task)
        n_heads = mean.shape[1]
        order = ranked(mean, descending=largest)[: max(0, k)]  # near-ties: lower layer, then lower head
        return [Head(int(i) // n_heads, int(i) % n_heads) for i in order]

    def to_dataframe(self, *, per_example: bool = False) -> Any:
        """One row per patched (task, layer, head) with mean, 95% CI and ``n`` examples; ``per_example=True``:
        one row per measured example."""
        import pandas as pd

        effects, names = self._stacked()
        _, n_layers, n_heads, _ = effects.shape
        if per_example:
            idx = torch.cartesian_prod(*(torch.arange(s) for s in effects.shape))
            keep = ~effects.flatten().isnan()
            idx = idx[keep]
            return pd.DataFrame({
                "task": [names[int(t)] for t in idx[:, 0]], "layer": idx[:, 1].numpy(), "head": idx[:, 2].numpy(),
                "example": idx[:, 3].numpy(), self.effect_label: effects.flatten()[keep].numpy(),
            })
        rows = []
        for t, name in enumerate(names):
            lo, hi = self.ci(name)
            mean = self.mean(name)
            n_kept = int((~effects[t].isnan()).flatten(0, 1).any(0).sum())
            rows += [{"task": name, "layer": layer, "head": head, "label": str(Head(layer, head)),
                      self.effect_label: float(mean[layer, head]), "ci_low": float(lo[layer, head]),
                      "ci_high": float(hi[layer, head]), "n": n_kept}
                     for layer in range(n_layers) for head in range(n_heads) if not mean[layer, head].isnan()]
        return pd.DataFrame(rows)

    def top_table(self, k: int = 10, task: str | None = None) -> Any:
        """The top-``k`` heads with mean effect and CI (over tasks when ``task`` is None)."""
        import pandas as pd

        mean, (lo, hi) = self.mean(task), self.ci(task)
        return pd.DataFrame([{"head": str(h), "layer": h.layer, "head_index": h.head,
                              self.effect_label: float(mean[h]), "ci_low": float(lo[h]), "ci_high": float(hi[h])}
                             for h in self.top_heads(k, task)])

    def _plot_context(self, task: str | None = None) -> str:
        """What the figure's subtitle says besides the model and scope (corruption, n, ...); ``task``: the figure
        shows that task only."""
        return ""

    def plot(self, task: str | None = None, *, k: int = 10, ax: Any = None) -> Any:
        """Layer x head heatmap of the mean effect (every head labelled) with the top-``k`` heads outlined."""
        from tlens_icl.viz.plots import head_heatmap

        effects, names = self._stacked()
        if task is not None:
            scope = f"task {task}"
        else:
            scope = f"task {names[0]}" if len(names) == 1 else f"mean over {len(names)} tasks"
        label = getattr(self, "effect_label", "effect")
        metric = getattr(self, "metric", "")
        bar = f"{label} (\u0394 {metric})" if metric else label
        title = f"{getattr(self, 'title', 'Effect')} per head ({scope})"
        context = self._plot_context(task)
        subtitle = self._subtitle(context) if hasattr(self, "_subtitle") else context
        return head_heatmap(self.mean(task), title=title, subtitle=subtitle,
                            marked=[tuple(h) for h in self.top_heads(k, task)], ax=ax, label=bar,
                            marked_label=f"top {k} heads by {label}")
