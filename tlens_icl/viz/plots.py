"""Figures (matplotlib) from plain tensors and labels. Nothing here computes an analysis or knows a result class.

Conventions every figure follows: ``layout="constrained"`` (a plain ``savefig`` never clips labels), a
title that says what is shown and a grey subtitle with the model, corruption and ``n``, integer ticks for
layers, heads and shot counts (every head labelled), a legend for every line and reference line, and
confidence intervals wherever the caller has them. In Jupyter a figure returned as a cell's value is shown
exactly once (not a second time by the inline backend).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Union

from torch import Tensor

#: A number in a signature (beartype does not treat int as float).
Num = Union[float, int]

#: Shown in every figure's legend for a shaded band or error bar.
CI_LABEL = "95% CI"


def in_jupyter() -> bool:
    """True inside a Jupyter kernel (not a plain terminal IPython)."""
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:
        return False
    return shell is not None and hasattr(shell, "kernel")


def _figure_class() -> Any:
    """A ``Figure`` that Jupyter shows exactly once: as a cell's value it displays itself and leaves pyplot, so
    the inline backend does not draw it a second time; assigned (``fig = res.plot()``) or silenced with ``;``
    it is drawn by the inline backend as usual."""
    from matplotlib.figure import Figure

    class ResultFigure(Figure):
        def _ipython_display_(self) -> None:
            import io

            import matplotlib.pyplot as plt
            from IPython.display import Image, display

            if not in_jupyter():
                display({"text/plain": repr(self)}, raw=True)
                return
            plt.close(self)
            buf = io.BytesIO()
            self.savefig(buf, format="png", dpi=100)
            display(Image(data=buf.getvalue(), format="png"))

    return ResultFigure


def new_figure(figsize: tuple[Num, Num] = (5.6, 3.6), nrows: int = 1, ncols: int = 1, **kwargs: Any
               ) -> tuple[Any, Any]:
    """``plt.subplots`` with ``layout="constrained"``; in Jupyter the figure is shown once (see
    :func:`_figure_class`)."""
    import matplotlib.pyplot as plt

    return plt.subplots(nrows, ncols, figsize=figsize, layout="constrained", FigureClass=_FIGURE(), **kwargs)


_FIGURE_CLASS: list[Any] = []


def _FIGURE() -> Any:  # noqa: N802 - one class per process (pickling and isinstance stay consistent)
    if not _FIGURE_CLASS:
        _FIGURE_CLASS.append(_figure_class())
    return _FIGURE_CLASS[0]


def _ax(ax: Any, figsize: tuple[Num, Num] = (5.6, 3.6)) -> tuple[Any, Any]:
    """``(figure, axes)``: the caller's axes, or a new constrained-layout figure."""
    if ax is None:
        return new_figure(figsize)
    return ax.figure, ax


def set_titles(target: Any, title: str, subtitle: str = "") -> None:
    """A bold title and a smaller grey subtitle (model, corruption, n) on an axes or a whole figure."""
    if not hasattr(target, "set_title"):  # a Figure
        import textwrap

        target.suptitle(title, fontsize=10.5, fontweight="bold")
        if subtitle:
            chars = max(60, int(target.get_figwidth() * 0.92 * 72 / (8 * 0.52)))
            target.supxlabel("\n".join(textwrap.fill(p, chars) for p in subtitle.split("\n")), fontsize=8,
                             color="0.35")
        return
    import textwrap

    width_in = target.figure.get_figwidth() * target.get_position().width
    title = textwrap.fill(title, max(30, int(width_in * 72 / (10 * 0.6))))  # bold 10 pt: ~0.6 em per character
    if subtitle:
        chars = max(40, int(width_in * 72 / (8 * 0.52)))  # 8 pt text is about 0.52 em wide per character
        subtitle = "\n".join(textwrap.fill(part, chars) for part in subtitle.split("\n"))
    lines = subtitle.count("\n") + 1 if subtitle else 0
    target.set_title(title + "\n" * lines, fontsize=10, fontweight="bold", loc="left")
    if subtitle:
        target.annotate(subtitle, xy=(0, 1), xycoords="axes fraction", xytext=(0, 6), textcoords="offset points",
                        fontsize=8, color="0.35", va="bottom", ha="left", annotation_clip=False, linespacing=1.25,
                        in_layout=False)  # the title's blank lines hold its place; it never squeezes the axes


def integer_ticks(ax: Any, axis: str, values: Sequence[int], labels: Sequence[str] | None = None,
                  fontsize: Num | None = None) -> None:
    """One tick per value, labelled with the integer (or ``labels``)."""
    values = [int(v) for v in values]
    labels = [str(v) for v in values] if labels is None else list(labels)
    if axis == "x":
        ax.set_xticks(values, labels, fontsize=fontsize)
    else:
        ax.set_yticks(values, labels, fontsize=fontsize)


def _legend(ax: Any, n_entries: int, **kwargs: Any) -> None:
    if n_entries == 0:
        return
    kwargs.setdefault("fontsize", 7.5)
    kwargs.setdefault("frameon", False)
    if n_entries > 6:
        kwargs.setdefault("loc", "upper left")
        kwargs.setdefault("bbox_to_anchor", (1.01, 1.0))
    ax.legend(**kwargs)


def line_plot(
    x: Sequence[Any], ys: Mapping[str, Sequence[Num]], *, xlabel: str, ylabel: str, title: str = "",
    subtitle: str = "", ax: Any = None, ci: Mapping[str, tuple[Sequence[Num], Sequence[Num]]] | None = None,
    refs: Sequence[tuple[Num, str]] = (), hline: Num | None = None, hline_label: str = "",
    ylim: tuple[Num, Num] | None = None, integer_x: bool = True, styles: Mapping[str, Mapping[str, Any]] | None = None,
) -> Any:
    """Lines with markers, one per entry of ``ys``; shaded ``ci`` bands; labelled horizontal ``refs``
    ``(y, label)`` (dashed, one colour each unless styled). ``x`` values are integer ticks unless
    ``integer_x=False``."""
    fig, ax = _ax(ax)
    xs = list(x)
    n_entries = 0
    for i, (name, y) in enumerate(ys.items()):
        style = {"marker": "o", "ms": 4, "lw": 1.6, "color": f"C{i % 10}"}
        style.update((styles or {}).get(name, {}))
        (line,) = ax.plot(xs, list(y), label=name, **style)
        n_entries += 1
        if ci and name in ci:
            lo, hi = ci[name]
            ax.fill_between(xs, list(lo), list(hi), color=line.get_color(), alpha=0.15, lw=0)
    if ci:
        ax.fill_between([], [], [], color="0.5", alpha=0.25, lw=0, label=CI_LABEL)
        n_entries += 1
    ref_styles = ["--", ":", "-."]
    for j, (y, label) in enumerate(list(refs) + ([(hline, hline_label)] if hline is not None else [])):
        ax.axhline(y, ls=ref_styles[j % 3], color="0.45", lw=1, label=label or None)
        n_entries += bool(label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if integer_x and xs and all(float(v).is_integer() for v in xs):
        integer_ticks(ax, "x", xs)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.25, lw=0.5)
    set_titles(ax, title, subtitle)
    if n_entries > 1 or refs or hline_label:
        _legend(ax, n_entries)
    return fig


def head_heatmap(
    values: Tensor, *, title: str = "", subtitle: str = "", marked: Sequence[tuple[int, int]] = (), ax: Any = None,
    cmap: str = "RdBu_r", label: str = "", vmin: Num | None = None, vmax: Num | None = None,
    annotate: bool | None = None, layer_labels: Sequence[str] | None = None, marked_label: str = "",
    colorbar: bool = True,
) -> Any:
    """A layer x head heatmap (centred at zero unless ``vmin``/``vmax``) with every head and layer labelled.

    ``marked`` heads are outlined and numbered by rank (1 = first). Cell values are written in the cells
    when the grid is small (``annotate=None``: at most 64 cells). NaN cells (not measured) are hatched.
    """
    import matplotlib.patches as patches
    import numpy as np

    n_layers, n_heads = values.shape
    fig, ax = _ax(ax, (max(4.2, 1.9 + 0.5 * n_heads), max(2.6, 1.5 + 0.36 * n_layers)))
    data = values.detach().float().cpu().numpy()
    finite = data[np.isfinite(data)]
    if vmin is None or vmax is None:
        lim = float(np.abs(finite).max()) if finite.size else 1.0
        lim = lim or 1.0
        vmin, vmax = (-lim, lim) if vmin is None and vmax is None else (vmin if vmin is not None else -lim,
                                                                         vmax if vmax is not None else lim)
    ax.set_facecolor("0.92")
    im = ax.imshow(data, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    nan = ~np.isfinite(data)
    for layer, head in zip(*np.nonzero(nan)):
        ax.add_patch(patches.Rectangle((head - 0.5, layer - 0.5), 1, 1, fill=False, hatch="///", lw=0, ec="0.7"))
    small = n_layers * n_heads <= 64 if annotate is None else annotate
    if small:
        cm, norm = im.get_cmap(), im.norm
        for layer in range(n_layers):
            for head in range(n_heads):
                v = data[layer, head]
                if np.isfinite(v):
                    r, g, b, _ = cm(norm(v))
                    dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
                    ax.text(head, layer, f"{v:.2f}".replace("-0.00", "0.00"), ha="center", va="center", fontsize=6.5,
                            color="white" if dark else "0.15")
    for rank, (layer, head) in enumerate(marked, 1):
        ax.add_patch(patches.Rectangle((head - 0.5, layer - 0.5), 1, 1, fill=False, lw=1.8, ec="black"))
        if not small:
            ax.text(head + 0.42, layer - 0.42, str(rank), ha="right", va="top", fontsize=6, fontweight="bold")
    if marked:
        ax.plot([], [], marker="s", ls="", mfc="none", mec="black", mew=1.5,
                label=marked_label or f"top {len(marked)}" + ("" if small else " (numbered by rank)"))
        # just below the x label, whatever the grid's height: an offset of ~0.45 inch in axes units
        ax_h = max(ax.get_position().height * fig.get_figheight(), 0.5)
        ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(0.0, -0.45 / ax_h))
    tick_fs = 7 if n_heads <= 16 else 5.5
    integer_ticks(ax, "x", range(n_heads), fontsize=tick_fs)
    integer_ticks(ax, "y", range(n_layers), layer_labels, fontsize=7 if n_layers <= 32 else 5)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.tick_params(length=0)
    set_titles(ax, title, subtitle)
    if colorbar:
        fig.colorbar(im, ax=ax, label=label, shrink=0.9)
    return fig


def heatmap_panels(
    panels: Mapping[str, Tensor], *, title: str, subtitle: str = "", label: str = "", cmap: str = "RdBu_r",
    vmin: Num | None = None, vmax: Num | None = None, layer_labels: Sequence[str] | None = None,
) -> Any:
    """Several layer x head maps side by side on one colour scale (e.g. one per condition or shot count)."""
    import numpy as np

    maps = {k: v.detach().float().cpu() for k, v in panels.items()}
    first = next(iter(maps.values()))
    n_layers, n_heads = first.shape
    if vmin is None or vmax is None:
        lim = max(float(np.nanmax(np.abs(m.numpy()))) if np.isfinite(m.numpy()).any() else 0.0 for m in maps.values())
        vmin, vmax = -(lim or 1.0), (lim or 1.0)
    fig, axes = new_figure((1.2 + len(maps) * max(2.6, 0.8 + 0.3 * n_heads), max(2.6, 1.6 + 0.34 * n_layers)),
                           ncols=len(maps), squeeze=False, sharey=True)
    im = None
    for ax, (name, m) in zip(axes[0], maps.items()):
        ax.set_facecolor("0.92")
        im = ax.imshow(m.numpy(), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
        ax.set_title(name, fontsize=9)
        integer_ticks(ax, "x", range(n_heads), fontsize=7 if n_heads <= 16 else 5.5)
        ax.set_xlabel("head")
        ax.tick_params(length=0)
    integer_ticks(axes[0][0], "y", range(n_layers), layer_labels, fontsize=7 if n_layers <= 32 else 5)
    axes[0][0].set_ylabel("layer")
    fig.colorbar(im, ax=list(axes[0]), label=label, shrink=0.9)
    set_titles(fig, title, subtitle)
    return fig


def curves(
    x: Sequence[int], values: Tensor, lo: Tensor | None, hi: Tensor | None, names: Sequence[str], *, xlabel: str,
    ylabel: str, title: str, subtitle: str = "", ylim: tuple[Num, Num] = (-0.02, 1.02), max_lines: int = 6,
    reference: tuple[Sequence[Num], str] | None = None, ncols: int = 4, ax: Any = None,
) -> Any:
    """``values[i]`` against ``x`` for every name, with CI bands/bars.

    Up to ``max_lines`` names share one axes (error bars, legend); more become small multiples with a
    shaded CI and, in every panel, the ``reference`` curve (e.g. the mean over all names) for comparison.
    """
    import numpy as np

    vals = values.detach().float().cpu().numpy()
    lo_ = None if lo is None else lo.detach().float().cpu().numpy()
    hi_ = None if hi is None else hi.detach().float().cpu().numpy()
    xs = [int(v) for v in x]
    if len(names) <= max_lines:
        fig, ax = _ax(ax, (5.8, 3.7))
        span = (max(xs) - min(xs)) or 1
        for i, name in enumerate(names):
            err = None if lo_ is None else np.stack([np.clip(vals[i] - lo_[i], 0, None), np.clip(hi_[i] - vals[i], 0, None)])
            dodge = (i - (len(names) - 1) / 2) * 0.012 * span  # error bars side by side, not on top of each other
            ax.errorbar([v + dodge for v in xs], vals[i], yerr=err, marker="o", ms=4, lw=1.6, capsize=2.5, label=name,
                        color=f"C{i}", elinewidth=1)
        if reference is not None:
            ax.plot(xs, list(reference[0]), color="0.4", ls="--", lw=1.2, label=reference[1])
        integer_ticks(ax, "x", xs)
        ax.set_ylim(*ylim)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.25, lw=0.5)
        set_titles(ax, title, subtitle + (f"; error bars: {CI_LABEL}" if lo_ is not None else ""))
        _legend(ax, len(names) + (reference is not None), loc="lower right" if len(names) <= 6 else None)
        return fig
    ncols = min(ncols, len(names))
    nrows = -(-len(names) // ncols)
    fig, axes = new_figure((2.3 * ncols + 0.4, 1.75 * nrows + 0.9), nrows=nrows, ncols=ncols, squeeze=False,
                           sharex=True, sharey=True)
    for i, ax in enumerate(axes.flat):
        if i >= len(names):
            ax.set_visible(False)
            continue
        if reference is not None:
            ax.plot(xs, list(reference[0]), color="0.55", ls="--", lw=1, label=reference[1])
        if lo_ is not None:
            ax.fill_between(xs, lo_[i], hi_[i], color="C0", alpha=0.2, lw=0, label=CI_LABEL)
        ax.plot(xs, vals[i], marker="o", ms=3, lw=1.5, color="C0", label="this task")
        ax.set_title(names[i], fontsize=8.5)
        ax.set_ylim(*ylim)
        ax.grid(alpha=0.25, lw=0.5)
        integer_ticks(ax, "x", xs, fontsize=7)
        ax.tick_params(labelsize=7)
    for ax in axes[-1]:
        ax.set_xlabel(xlabel, fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel, fontsize=8)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize=8, frameon=False)
    set_titles(fig, title, subtitle)
    return fig


def sweep_panels(
    x: Sequence[int], panels: Mapping[str, Mapping[str, Any]], *, xlabel: str, ylabel: str, title: str,
    subtitle: str = "", ylim: tuple[Num, Num] = (-0.02, 1.02), best_label: str = "best layer of the group",
    dashed_label: str = "",
) -> Any:
    """One panel per group: a thin line per member, the group mean (bold, with ``mean_lo``/``mean_hi`` band),
    and labelled horizontal references.

    ``panels[name]`` holds ``lines`` ({member: values}), ``mean`` (values), optional ``mean_lo``/``mean_hi``,
    ``refs`` ([(y, label), ...]) and ``dashed`` (a second mean, e.g. on validation items, labelled
    ``dashed_label``); ``best`` (an x value, labelled ``best_label``) is marked.
    """
    xs = [int(v) for v in x]
    fig, axes = new_figure((1.9 + 3.4 * len(panels), 3.6), ncols=len(panels), squeeze=False, sharey=True)
    ref_styles = [("--", "0.35"), (":", "C3"), ("-.", "C2")]
    handles: dict[str, Any] = {}
    for ax, (name, p) in zip(axes[0], panels.items()):
        for ys in p.get("lines", {}).values():
            (h,) = ax.plot(xs, list(ys), color="C0", alpha=0.3, lw=0.9)
            handles["each task"] = h
        if "mean_lo" in p:
            handles[CI_LABEL + " of the mean"] = ax.fill_between(xs, list(p["mean_lo"]), list(p["mean_hi"]), color="C0",
                                                                  alpha=0.18, lw=0)
        (handles["mean over tasks"],) = ax.plot(xs, list(p["mean"]), color="C0", marker="o", ms=4.5, lw=2.2)
        if p.get("dashed") is not None:
            (handles[dashed_label or "second mean"],) = ax.plot(xs, list(p["dashed"]), color="C0", ls="--", lw=1.3,
                                                                marker="s", ms=3, mfc="white")
        for j, (y, label) in enumerate(p.get("refs", ())):
            ls, c = ref_styles[j % len(ref_styles)]
            handles[label] = ax.axhline(y, ls=ls, color=c, lw=1.2)
        if p.get("best") is not None:
            b = xs.index(int(p["best"]))
            (handles[best_label],) = ax.plot([xs[b]], [list(p["mean"])[b]], marker="*", ms=13, color="C1",
                                                            ls="", zorder=5)
        ax.set_title(name, fontsize=9)
        integer_ticks(ax, "x", xs)
        ax.set_ylim(*ylim)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.25, lw=0.5)
    axes[0][0].set_ylabel(ylabel)
    fig.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize=8, frameon=False)
    set_titles(fig, title, subtitle)
    return fig


def grouped_bars(
    groups: Sequence[str], series: Sequence[str], means: Tensor, lo: Tensor | None = None, hi: Tensor | None = None, *,
    ylabel: str, title: str, subtitle: str = "", ylim: tuple[Num, Num] = (0.0, 1.05), ax: Any = None,
) -> Any:
    """Bars ``means[s, g]`` for each series ``s`` within each group ``g``, with error bars ``[lo, hi]``."""
    import numpy as np

    fig, ax = _ax(ax, (min(14.0, max(6.0, 2.4 + 0.3 * len(series) * len(groups))), 3.9))
    m = means.detach().float().cpu().numpy()
    width = 0.8 / len(series)
    for i, name in enumerate(series):
        xs = np.arange(len(groups)) + (i - (len(series) - 1) / 2) * width
        err = None
        if lo is not None:
            err = np.stack([np.clip(m[i] - lo[i].numpy(), 0, None), np.clip(hi[i].numpy() - m[i], 0, None)])
        ax.bar(xs, m[i], width, yerr=err, label=name, capsize=2, color=f"C{i}", error_kw={"lw": 0.8})
        if len(series) * len(groups) <= 40:  # value labels above the CI (a bar of height 0 is otherwise invisible)
            tops = m[i] if hi is None else np.fmax(m[i], hi[i].numpy())
            for x, v, top in zip(xs, m[i], tops):
                ax.text(x, (top if top == top else 0.0) + 0.015, f"{v:.2f}" if v == v else "n/a", fontsize=6,
                        ha="center", va="bottom", color="0.25", rotation=90 if len(series) > 4 else 0)
    ax.set_xticks(range(len(groups)), list(groups), rotation=30 if len(groups) > 3 else 0,
                  ha="right" if len(groups) > 3 else "center", fontsize=8)
    ax.set_ylabel(ylabel)
    labelled = len(series) * len(groups) <= 40
    ax.set_ylim(ylim[0], ylim[1] + (0.14 * (ylim[1] - ylim[0]) if labelled else 0.0))
    if labelled and ylim == (0.0, 1.05):
        ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.grid(axis="y", alpha=0.25, lw=0.5)
    set_titles(ax, title, subtitle + (f"; error bars: {CI_LABEL} (bootstrap)" if lo is not None else ""))
    ax.legend(fontsize=7.5, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def position_heatmap(values: Tensor, tokens: Sequence[str], *, title: str, subtitle: str = "", label: str = "",
                     ax: Any = None, row_label: str = "layer") -> Any:
    """A layer x position heatmap centred at zero with every token labelled (newlines shown as \\n)."""
    import numpy as np

    n_rows, n_pos = values.shape
    fig, ax = _ax(ax, (max(5.0, 1.8 + 0.2 * n_pos), max(2.4, 1.5 + 0.32 * n_rows)))
    data = values.detach().float().cpu().numpy()
    lim = float(np.nanmax(np.abs(data))) if np.isfinite(data).any() else 1.0
    im = ax.imshow(data, cmap="RdBu_r", vmin=-(lim or 1.0), vmax=lim or 1.0, aspect="auto", interpolation="nearest")
    labels = [repr(t)[1:-1] if t else "" for t in list(tokens)[:n_pos]] + [""] * max(0, n_pos - len(tokens))
    ax.set_xticks(range(n_pos), [f"{s} ({i})" for i, s in enumerate(labels)], rotation=90,
                  fontsize=6.5 if n_pos <= 48 else 5)
    integer_ticks(ax, "y", range(n_rows), fontsize=7)
    ax.set_xlabel("position (token of prompt 0)")
    ax.set_ylabel(row_label)
    ax.tick_params(length=0)
    set_titles(ax, title, subtitle)
    fig.colorbar(im, ax=ax, label=label, shrink=0.9)
    return fig


def scatter_labelled(x: Tensor, y: Tensor, labels: Sequence[str], highlight: Sequence[int], *, xlabel: str,
                     ylabel: str, title: str, subtitle: str = "", ax: Any = None, highlight_label: str = "") -> Any:
    """One point per item; ``highlight`` indices are drawn in colour and labelled."""
    fig, ax = _ax(ax, (5.2, 4.2))
    xs, ys = x.detach().float().cpu().numpy(), y.detach().float().cpu().numpy()
    ax.scatter(xs, ys, s=16, color="0.55", alpha=0.7, label="all heads")
    hl = list(highlight)
    if hl:
        ax.scatter(xs[hl], ys[hl], s=26, color="C3", label=highlight_label or "labelled heads")
        for i in hl:
            ax.annotate(labels[i], (float(xs[i]), float(ys[i])), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axhline(0, color="0.8", lw=0.8, zorder=0)
    ax.axvline(0, color="0.8", lw=0.8, zorder=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.25, lw=0.5)
    set_titles(ax, title, subtitle)
    ax.legend(fontsize=7.5, frameon=False)
    return fig


def figure_png(fig: Any, *, dpi: int = 110, close: bool = True) -> bytes:
    """The figure as PNG bytes (closed afterwards unless ``close=False``)."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    if close:
        plt.close(fig)
    return buf.getvalue()


__all__ = ["CI_LABEL", "curves", "figure_png", "grouped_bars", "head_heatmap", "heatmap_panels", "in_jupyter",
           "integer_ticks", "line_plot", "new_figure", "position_heatmap", "scatter_labelled", "set_titles",
           "sweep_panels"]
