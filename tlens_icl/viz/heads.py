"""Figures of the heads family (ablation curves, overlap and depth, training dynamics) from plain tensors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

#: One colour per method, the same in every figure of this family.
COLORS = {"FV": "tab:red", "induction": "tab:blue", "random": "tab:gray", "RSA": "tab:green",
          "previous_token": "tab:purple", "accuracy": "black"}


def _color(name: str, i: int) -> str:
    return COLORS.get(name, f"C{i}")


def ablation_curves(
    ks: Sequence[int], accuracy: Mapping[str, tuple[Tensor, Tensor, Tensor, Tensor]],
    loss: Mapping[str, tuple[Tensor, Tensor, Tensor, Tensor]] | None, *, n_total: int = 0,
    random_name: str = "random", title: str = "", axes: Any = None,
) -> Any:
    """Accuracy (and loss score) vs k: a line with a 95 % CI band per method; each random seed as a dot.

    Each series is ``(mean [k], ci_low [k], ci_high [k], per_seed [k, seed])``.
    """
    from tlens_icl.viz.plots import ci_legend_handle, legend_handlers, new_figure

    panels = [("few-shot accuracy", accuracy)] + ([("token-loss score\nloss[late] - loss[early]", loss)] if loss else [])
    own = axes is None
    if axes is None:
        fig, axes = new_figure((5.2 * len(panels) + 1.6, 4.0), ncols=len(panels), squeeze=False)
        axes = axes[0]
    else:
        axes = list(axes) if isinstance(axes, (list, tuple)) else [axes]
        fig = axes[0].figure
    x = list(ks)
    handles: dict[str, Any] = {}
    for a, (ylabel, series) in zip(axes, panels):
        colors = []
        for i, (name, (mean, lo, hi, seeds)) in enumerate(series.items()):
            c = _color(name, i)
            colors.append(c)
            (handles[name],) = a.plot(x, mean.tolist(), marker="o", color=c, lw=2 if name != random_name else 1.5,
                                      ls="-" if name != random_name else "--")
            a.fill_between(x, lo.tolist(), hi.tolist(), color=c, alpha=0.15, lw=0)
            if name == random_name and seeds.shape[1] > 1:
                for s in range(seeds.shape[1]):
                    handles[f"{random_name}: each seed"] = a.scatter(x, seeds[:, s].tolist(), color=c, s=10, alpha=0.6,
                                                                     zorder=3)
        handles["95% CI"] = ci_legend_handle(colors, 0.3)
        a.set_xlabel("heads ablated (k)" + (f" of {n_total}" if n_total else ""))
        a.set_ylabel(ylabel)
        a.grid(alpha=0.3)
        if n_total:
            sec = a.secondary_xaxis("top", functions=(lambda v: 100 * v / n_total, lambda v: v * n_total / 100))
            sec.set_xlabel("% of heads", fontsize=8)
            sec.tick_params(labelsize=8)
    if own:
        fig.legend(list(handles.values()), list(handles), loc="outside right center", fontsize=8, frameon=False,
                   handler_map=legend_handlers())
    else:
        axes[0].legend(list(handles.values()), list(handles), fontsize=8, handler_map=legend_handlers())
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def overlap_depth(
    ks: Sequence[int], overlap: Mapping[str, Sequence[int]], expected: Sequence[float],
    depth: Mapping[str, Sequence[float]], *, k_depth: int, title: str = "", axes: Any = None,
) -> Any:
    """Left: top-k overlap of each pair of head sets vs k, with the chance level (hypergeometric mean).
    Right: depth (layer / (n_layers - 1)) of each set's top-``k_depth`` heads, one row per set."""
    from matplotlib.ticker import MaxNLocator

    from tlens_icl.viz.plots import new_figure

    if axes is None:
        fig, axes = new_figure((10, 3.8), ncols=2)
    else:
        fig = axes[0].figure
    a = axes[0]
    for i, (pair, vals) in enumerate(overlap.items()):
        a.plot(list(ks), list(vals), marker="o", label=pair, color=f"C{i}")
    a.plot(list(ks), list(expected), ls="--", c="gray", label="chance (k²/N)")
    a.set_xticks(list(ks))
    a.yaxis.set_major_locator(MaxNLocator(integer=True))
    a.set_xlabel("k (top heads of each ranking)")
    a.set_ylabel("heads in both top-k sets")
    a.grid(alpha=0.3)
    a.legend(fontsize=8)
    b = axes[1]
    names = list(depth)
    for i, name in enumerate(names):
        d = list(depth[name])
        seen: dict[float, int] = {}
        ys = []
        for v in d:  # heads at the same depth are stacked, not hidden behind each other
            ys.append(i + 0.12 * seen.get(v, 0) - 0.25)
            seen[v] = seen.get(v, 0) + 1
        b.scatter(d, ys, color=_color(name, i), s=30, alpha=0.8)
        if d:
            b.scatter([sum(d) / len(d)], [i], marker="|", s=400, color="black")
    b.set_yticks(range(len(names)), names)
    b.set_xlim(-0.05, 1.05)
    b.set_ylim(-0.7, len(names) - 0.3)
    b.set_xlabel("depth (layer / (n_layers - 1)); | = mean")
    b.set_ylabel("head set")
    b.set_title(f"where the top-{k_depth} heads sit", fontsize=9)
    b.grid(alpha=0.3, axis="x")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def dynamics_curves(
    steps: Sequence[int], panels: Sequence[tuple[str, Mapping[str, Sequence[float]]] | tuple[str, Mapping[str, Sequence[float]], tuple[float, float]]],
    *, title: str = "", axes: Any = None,
) -> Any:
    """Panels over training steps, each ``(ylabel, {line name: values}[, (ymin, ymax)])``; x is log-scaled when
    steps span >10x. A line ``"<head> (<set>)"`` keeps one colour per head across panels; FV-head lines are
    dashed, the others solid. A panel's y-range is widened to ``(ymin, ymax)`` when given (never cut)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    if axes is None:
        fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
        axes = axes[0]
    else:
        fig = axes[0].figure
    positive = [s for s in steps if s > 0]
    keys: dict[str, int] = {}
    for panel in panels:
        for name in panel[1]:
            keys.setdefault(name.split(" (")[0], len(keys))
    for a, panel in zip(axes, panels):
        ylabel, lines = panel[0], panel[1]
        for name, vals in lines.items():
            a.plot(list(steps), list(vals), marker="o", ms=3, label=name, color=f"C{keys[name.split(' (')[0]] % 10}",
                   ls="--" if "(FV head)" in name else "-")
        a.set_xlabel("training step")
        a.set_ylabel(ylabel)
        if len(panel) > 2:
            lo, hi = panel[2]  # type: ignore[misc]
            cur = a.get_ylim()
            a.set_ylim(min(lo, cur[0]), max(hi, cur[1]))
        if positive and max(positive) / min(positive) > 10:
            if len(positive) == len(steps):
                a.set_xscale("log")
            else:  # step 0 (the initialisation) needs a linear piece
                a.set_xscale("symlog", linthresh=min(positive))
            a.xaxis.set_minor_locator(NullLocator())
            a.set_xticks(list(steps), [str(s) for s in steps], fontsize=7, rotation=45 if len(steps) > 6 else 0)
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


__all__ = ["COLORS", "ablation_curves", "dynamics_curves", "overlap_depth"]
