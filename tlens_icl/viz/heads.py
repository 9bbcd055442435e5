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


def _running_mean(xs: Sequence[int | float], ys: Sequence[float], window: int) -> tuple[list[Any], list[float]]:
    """Mean of the last ``window`` logged values at each logged step (steps without a value are skipped)."""
    pts = [(x, y) for x, y in zip(xs, ys) if y == y]
    out = [sum(y for _, y in pts[max(0, j - window + 1): j + 1]) / len(pts[max(0, j - window + 1): j + 1])
           for j in range(len(pts))]
    return [x for x, _ in pts], out


def training_panels(
    panels: Sequence[tuple[str, Mapping[str, tuple[Sequence[int | float], Sequence[float]]], tuple[float, float] | None]],
    *, band: tuple[float, float] | None = None, band_label: str = "", smooth: int = 25, title: str = "",
    axes: Any = None,
) -> Any:
    """Panels stacked on one training-step axis, each ``(ylabel, {line: (steps, values)}, (ymin, ymax) or None)``.

    A line with more than 100 points (a per-step training log) is drawn as its running mean over ``smooth``
    steps, without markers; checkpoint lines get markers. A line ``"<head> <score> (<set>)"`` keeps one colour
    per head across panels; FV-head lines are dashed. ``band`` (steps) is shaded in every panel and named once.
    """
    import matplotlib.pyplot as plt

    if axes is None:
        fig, axes = plt.subplots(len(panels), 1, figsize=(8.5, 2.3 * len(panels) + 0.8), sharex=True, squeeze=False)
        axes = list(axes[:, 0])
    else:
        axes = list(axes) if isinstance(axes, (list, tuple)) else [axes]
        fig = axes[0].figure
    colours: dict[str, int] = {}
    for a, (ylabel, lines, yrange) in zip(axes, panels):
        for i, (name, (xs, ys)) in enumerate(lines.items()):
            head = name.split(" ")[0] if name[:1] == "L" and "H" in name.split(" ")[0] else None
            colour = f"C{colours.setdefault(head, len(colours)) % 10}" if head else f"C{i % 10}"
            if head is None and name in COLORS:
                colour = COLORS[name]
            ys = list(ys)
            if len(ys) > 100:  # a per-step log: running mean of the logged (non-NaN) values
                a.plot(*_running_mean(list(xs), ys, max(1, smooth)), lw=1.2, label=name, color=colour)
            else:
                a.plot(list(xs), ys, marker="o", ms=3, lw=1.4, label=name, color=colour,
                       ls="--" if "(FV head)" in name or "ablated" in name else "-")
        if band is not None:
            a.axvspan(band[0], band[1], color="tab:orange", alpha=0.18, lw=0,
                      label=band_label if a is axes[0] else None)
        if yrange is not None:
            cur = a.get_ylim()
            a.set_ylim(min(yrange[0], cur[0]), max(yrange[1], cur[1]))
        a.set_ylabel(ylabel, fontsize=9)
        a.grid(alpha=0.3)
        a.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    axes[-1].set_xlabel("training step")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


__all__ = ["COLORS", "ablation_curves", "training_panels", "overlap_depth"]
