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


def figure_axes(ax: Any, figsize: tuple[Num, Num] = (5.6, 3.6)) -> tuple[Any, Any]:
    """``(figure, axes)``: the caller's axes, or a new constrained-layout figure."""
    if ax is None:
        return new_figure(figsize)
    return ax.figure, ax


def set_titles(target: Any, title: str, subtitle: str = "") -> None:
    """A bold title and a smaller grey subtitle (model, corruption, n) on an axes or a whole figure.

    On an axes, the title is padded by the subtitle's height and the subtitle drawn in that space, so the layout
    engine keeps both inside the figure. An axes of a figure without a layout engine (a user's ``plt.subplots()``)
    gets constrained layout, else a two-line title would run off the top of the figure.
    """
    import textwrap

    if not hasattr(target, "set_title"):  # a Figure
        target.suptitle(title, fontsize=10.5, fontweight="bold")
        if subtitle:
            chars = max(60, int(target.get_figwidth() * 0.92 * 72 / (8 * 0.52)))
            target.supxlabel("\n".join(textwrap.fill(p, chars) for p in subtitle.split("\n")), fontsize=8,
                             color="0.35")
        return
    fig = target.figure
    if fig.get_layout_engine() is None:
        fig.set_layout_engine("constrained")
    width_in = fig.get_figwidth() * target.get_position().width
    title = textwrap.fill(title, max(24, int(width_in * 72 / (10 * 0.62))))  # bold 10 pt: ~0.62 em per character
    lines = 0
    if subtitle:
        chars = max(30, int(width_in * 72 / (8 * 0.55)))  # 8 pt text is about 0.55 em wide per character
        subtitle = "\n".join(textwrap.fill(part, chars) for part in subtitle.split("\n"))
        lines = subtitle.count("\n") + 1
    gap = 5.0
    target.set_title(title, fontsize=10, fontweight="bold", loc="left", pad=gap + (lines * 8 * 1.25 + 4 if lines else 0))
    if subtitle:
        target.annotate(subtitle, xy=(0, 1), xycoords="axes fraction", xytext=(0, gap), textcoords="offset points",
                        fontsize=8, color="0.35", va="bottom", ha="left", annotation_clip=False, linespacing=1.25,
                        in_layout=False)  # the title's pad holds its place


def integer_ticks(ax: Any, axis: str, values: Sequence[int], labels: Sequence[str] | None = None,
                  fontsize: Num | None = None, *, every: bool = False) -> None:
    """Ticks at ``values`` labelled with the integer (or ``labels``). Unless ``every=True``, only every 2nd, 5th,
    10th, ... value is labelled when the labels would not fit side by side along the axis (e.g. 30 layers)."""
    values = [int(v) for v in values]
    labels = [str(v) for v in values] if labels is None else list(labels)
    if not every and len(values) > 1:
        step = _label_step(ax, axis, values, labels, fontsize)
        keep = [i for i, v in enumerate(values) if (v - values[0]) % step == 0] if step > 1 else range(len(values))
        values, labels = [values[i] for i in keep], [labels[i] for i in keep]
    if axis == "x":
        ax.set_xticks(values, labels, fontsize=fontsize)
    else:
        ax.set_yticks(values, labels, fontsize=fontsize)


def _label_step(ax: Any, axis: str, values: Sequence[int], labels: Sequence[str], fontsize: Num | None) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... at which labels of ``values`` fit along ``axis`` of ``ax``."""
    import matplotlib as mpl
    from matplotlib.font_manager import FontProperties

    size = FontProperties(size=fontsize if fontsize is not None else mpl.rcParams[f"{axis}tick.labelsize"]
                          ).get_size_in_points()
    fig_w, fig_h = ax.figure.get_size_inches()
    pos = ax.get_position()
    length_pt = (pos.width * fig_w if axis == "x" else pos.height * fig_h) * 72 * 0.92  # margins move a little
    span = max(values) - min(values) or 1
    per_unit = length_pt / span
    need = max(len(t) for t in labels) * 0.62 * size + 4 if axis == "x" else 1.5 * size  # one label + a gap
    step = 1
    for step in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000):
        if step * per_unit >= need:
            break
    return step


def place_legend(ax: Any, n_entries: int, **kwargs: Any) -> None:
    """The axes' legend: inside for up to 3 entries, else beside the axes (it never hides the data)."""
    if n_entries == 0:
        return
    kwargs.setdefault("fontsize", 7.5)
    kwargs.setdefault("frameon", False)
    if n_entries > 3 and kwargs.get("loc") is None:
        kwargs.update(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.legend(**kwargs)


#: Horizontal reference lines, in order: a wide light line, a dark dashed one on top of it, a mid-grey dotted one
#: (two references at the same height, e.g. chance and a shuffled-label control, both stay visible).
REF_STYLES: tuple[dict[str, Any], ...] = (
    {"ls": "-", "color": "0.72", "lw": 3.0, "zorder": 1.1},
    {"ls": (0, (4, 2.5)), "color": "0.15", "lw": 1.2, "zorder": 1.3},
    {"ls": (0, (1, 2)), "color": "0.4", "lw": 1.6, "zorder": 1.2},
)


def ci_legend_handle(colors: Sequence[str], alpha: float = 0.25) -> Any:
    """A legend swatch for shaded CI bands: one patch per band colour, side by side (use with
    :func:`legend_handlers`)."""
    import matplotlib.patches as mpatches

    return tuple(mpatches.Patch(color=c, alpha=alpha, lw=0) for c in dict.fromkeys(colors))


def legend_handlers() -> dict[Any, Any]:
    from matplotlib.legend_handler import HandlerTuple

    return {tuple: HandlerTuple(ndivide=None, pad=0.0)}


def line_plot(
    x: Sequence[Any], ys: Mapping[str, Sequence[Num]], *, xlabel: str, ylabel: str, title: str = "",
    subtitle: str = "", ax: Any = None, ci: Mapping[str, tuple[Sequence[Num], Sequence[Num]]] | None = None,
    refs: Sequence[tuple[Any, ...]] = (), hline: Num | None = None, hline_label: str = "",
    ylim: tuple[Num, Num] | None = None, integer_x: bool = True, styles: Mapping[str, Mapping[str, Any]] | None = None,
    marks: Sequence[tuple[Num, str]] = (),
) -> Any:
    """Lines with markers, one per entry of ``ys``; shaded ``ci`` bands (the legend swatch shows each band's
    colour); labelled horizontal ``refs`` ``(y, label)`` in :data:`REF_STYLES` (drawn so that references at the
    same height all stay visible) or ``(y, label, style)``; labelled vertical ``marks`` ``(x, label)`` (e.g. a chosen layer). ``x`` values
    are integer ticks (thinned when they would collide) unless ``integer_x=False``."""
    fig, ax = figure_axes(ax)
    xs = list(x)
    handles: list[tuple[Any, str]] = []
    bands: list[str] = []
    for i, (name, y) in enumerate(ys.items()):
        style = {"marker": "o", "ms": 4 if len(xs) <= 40 else 0, "lw": 1.6, "color": f"C{i % 10}", "zorder": 2.5}
        style.update((styles or {}).get(name, {}))
        (line,) = ax.plot(xs, list(y), label=name, **style)
        handles.append((line, name))
        if ci and name in ci:
            lo, hi = ci[name]
            ax.fill_between(xs, list(lo), list(hi), color=line.get_color(), alpha=0.15, lw=0, zorder=2)
            bands.append(line.get_color())
    if bands:
        handles.append((ci_legend_handle(bands, 0.3), CI_LABEL))
    for j, (y, label, *style) in enumerate(list(refs) + ([(hline, hline_label)] if hline is not None else [])):
        h = ax.axhline(y, label=label or None, **(style[0] if style else REF_STYLES[j % len(REF_STYLES)]))
        if label:
            handles.append((h, label))
    for xv, label in marks:
        h = ax.axvline(xv, color="C1", ls=(0, (2, 2)), lw=1.3, zorder=1.5, label=label)
        handles.append((h, label))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if integer_x and xs and all(float(v).is_integer() for v in xs):
        integer_ticks(ax, "x", xs)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.25, lw=0.5)
    set_titles(ax, title, subtitle)
    if len(handles) > 1 or refs or hline_label or marks:
        place_legend(ax, len(handles), handles=[h for h, _ in handles], labels=[t for _, t in handles],
                     handler_map=legend_handlers())
    return fig


def layers_across(n_layers: int, n_heads: int) -> bool:
    """Whether a layer x head map is drawn with layers along x (and heads down y): for models much deeper than
    they are wide (SmolLM2: 30 layers x 9 heads), so the map is a wide strip rather than a page-tall column."""
    return n_layers > max(12, 1.5 * n_heads)


def heatmap_size(n_layers: int, n_heads: int, *, colorbar: bool = True) -> tuple[float, float]:
    """Figure size (inches) of one layer x head map with its title, labels, colour bar and legend."""
    cols, rows = (n_layers, n_heads) if layers_across(n_layers, n_heads) else (n_heads, n_layers)
    cell_w = 0.42 if cols <= 12 else 0.26
    cell_h = 0.36 if rows <= 12 else 0.26
    return max(5.0, 1.5 + cell_w * cols + (1.1 if colorbar else 0.0)), max(2.8, 1.9 + cell_h * rows)


def colour_scale(values: Any, *, vmin: Num | None = None, vmax: Num | None = None, max_clipped: int | None = None
                 ) -> tuple[float, float, list[int]]:
    """``(vmin, vmax, clipped)``: a colour range that one or a few extreme cells cannot flatten.

    Unless given, the range is symmetric around 0 (``vmin`` fixed: from it to the largest value). When the largest
    magnitude is more than twice the next (up to ``max_clipped`` cells, default 2% of them: an AIE map with one
    dominant head), the range ends at the largest remaining magnitude and the flat indices of the cells beyond it
    are returned in ``clipped`` (the figure names them; their colour is the end of the scale).
    """
    import numpy as np

    data = np.asarray(values, dtype=float).ravel()
    finite = np.isfinite(data)
    if vmin is not None and vmax is not None:
        return float(vmin), float(vmax), []
    mags = np.abs(data) if vmin is None else data - float(vmin)
    order = [int(i) for i in np.argsort(-np.where(finite, mags, -np.inf), kind="stable") if finite[i]]
    limit = float(mags[order[0]]) if order else 1.0
    clipped: list[int] = []
    at_most = max(1, round(0.02 * len(order))) if max_clipped is None else max_clipped
    for j in range(1, min(at_most, len(order) - 1) + 1):
        if mags[order[j - 1]] > 2.0 * mags[order[j]] > 0:
            clipped, limit = order[:j], float(mags[order[j]])
            break
    limit = limit or 1.0
    if vmin is None:
        return -limit, limit, clipped
    return float(vmin), float(vmin) + limit, clipped


def _rank_text(ax: Any, x: Num, y: Num, text: str, rgba: Any, fontsize: Num) -> None:
    """A label inside a heatmap cell, dark on light cells and light on dark ones, with a contrasting rim."""
    import matplotlib.patheffects as pe

    r, g, b = rgba[:3]
    dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
    fg, rim = ("white", "black") if dark else ("black", "white")
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, fontweight="bold", color=fg,
            path_effects=[pe.withStroke(linewidth=1.6, foreground=rim)])


def _draw_map(ax: Any, data: Any, *, cmap: str, vmin: Num, vmax: Num, across: bool,
              layer_labels: Sequence[str] | None, tick_fs: Num) -> Any:
    """A layer x head map on ``ax`` (layers down y, or along x when ``across``); NaN cells hatched."""
    import matplotlib.patches as patches
    import numpy as np

    n_layers, n_heads = data.shape
    shown = data.T if across else data
    ax.set_facecolor("0.92")
    im = ax.imshow(shown, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    for r, c in zip(*np.nonzero(~np.isfinite(shown))):
        ax.add_patch(patches.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, hatch="///", lw=0, ec="0.7"))
    layers = list(range(n_layers))
    labels = list(layer_labels) if layer_labels is not None else None
    integer_ticks(ax, "x" if across else "y", layers, labels, fontsize=tick_fs)  # thinned only in a narrow axes
    integer_ticks(ax, "y" if across else "x", range(n_heads), fontsize=tick_fs, every=True)
    ax.set_xlabel("layer" if across else "head")
    ax.set_ylabel("head" if across else "layer")
    ax.tick_params(length=0)
    return im


def _clip_note(clipped: Sequence[int], data: Any, n_heads: int, layer_labels: Sequence[str] | None,
               lo: Num, hi: Num, symmetric: bool) -> str:
    """The colour-bar note naming the cells beyond the colour range."""
    if not clipped:
        return ""
    name = lambda i: f"L{layer_labels[i // n_heads] if layer_labels else i // n_heads}H{i % n_heads}"  # noqa: E731
    cells = ", ".join(f"{name(i)} = {data.flat[i]:.3g}" for i in clipped[:3]) + (" ..." if len(clipped) > 3 else "")
    scale = f"\u00b1{hi:.2g}" if symmetric else f"{hi:.2g}"
    return f"scale ends at {scale}; beyond: {cells}"


def head_heatmap(
    values: Tensor, *, title: str = "", subtitle: str = "", marked: Sequence[tuple[int, int]] = (), ax: Any = None,
    cmap: str = "RdBu_r", label: str = "", vmin: Num | None = None, vmax: Num | None = None,
    annotate: bool | None = None, layer_labels: Sequence[str] | None = None, marked_label: str = "",
    colorbar: bool = True, across: bool | None = None,
) -> Any:
    """A layer x head heatmap (centred at zero unless ``vmin``/``vmax``) with every head and layer labelled.

    Deep models (:func:`layers_across`) are drawn with layers along x. The colour range is :func:`colour_scale`'s:
    one dominant head does not wash the others out; the colour bar names any cell beyond the range. ``marked``
    heads are outlined (visible on light and dark cells) and numbered by rank (1 = first) in a colour that reads
    on the cell. Cell values are written in the cells when the grid is small (``annotate=None``: at most 64
    cells). NaN cells (not measured) are hatched.
    """
    import matplotlib.patches as patches
    import numpy as np
    from matplotlib.transforms import ScaledTranslation

    n_layers, n_heads = values.shape
    across = layers_across(n_layers, n_heads) if across is None else across
    fig, ax = figure_axes(ax, heatmap_size(n_layers, n_heads, colorbar=colorbar))
    data = values.detach().float().cpu().numpy()
    symmetric = vmin is None and vmax is None
    lo, hi, clipped = colour_scale(data, vmin=vmin, vmax=vmax)
    small = n_layers * n_heads <= 64 if annotate is None else annotate
    tick_fs = 7 if max(n_layers, n_heads) <= 40 else 6
    im = _draw_map(ax, data, cmap=cmap, vmin=lo, vmax=hi, across=across, layer_labels=layer_labels, tick_fs=tick_fs)
    xy = (lambda layer, head: (layer, head)) if across else (lambda layer, head: (head, layer))
    cm, norm = im.get_cmap(), im.norm
    if small:
        for layer in range(n_layers):
            for head in range(n_heads):
                v = data[layer, head]
                if np.isfinite(v):
                    r, g, b, _ = cm(norm(v))
                    dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
                    ax.text(*xy(layer, head), f"{v:.2f}".replace("-0.00", "0.00"), ha="center", va="center",
                            fontsize=6.5, color="white" if dark else "0.15")
    for rank, (layer, head) in enumerate(marked, 1):
        x, y = xy(layer, head)
        for colour, width in (("white", 2.8), ("black", 1.3)):  # a two-tone outline shows on any cell
            ax.add_patch(patches.Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, lw=width, ec=colour, zorder=3))
        if not small:
            v = data[layer, head]
            _rank_text(ax, x, y, str(rank), cm(norm(v)) if np.isfinite(v) else (1, 1, 1), 6.5 if rank < 10 else 6)
    if marked:
        ax.plot([], [], marker="s", ls="", mfc="none", mec="black", mew=1.5,
                label=marked_label or f"top {len(marked)}" + ("" if small else " (numbered by rank)"))
        below = ax.transAxes + ScaledTranslation(0, -0.42, fig.dpi_scale_trans)  # under the x label, any height
        ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(0.0, 0.0), bbox_transform=below,
                  borderaxespad=0)
    set_titles(ax, title, subtitle)
    if colorbar:
        note = _clip_note(clipped, data, n_heads, layer_labels, lo, hi, symmetric)
        extend = ("both" if symmetric else "max") if clipped else "neither"
        cbar = fig.colorbar(im, ax=ax, shrink=0.9, extend=extend)
        _label_colorbar(cbar, label or "value", note)
    return fig


def _label_colorbar(cbar: Any, label: str, note: str = "") -> None:
    """The colour bar's label (and a smaller note under it), wrapped to the bar's length."""
    import textwrap

    fig = cbar.ax.figure
    length_in = max(1.2, cbar.ax.get_position().height * fig.get_figheight())
    chars = max(18, int(length_in * 72 / (8.5 * 0.55)))
    text = textwrap.fill(label, chars)
    if note:
        text += "\n" + textwrap.fill(note, chars)
    cbar.set_label(text, fontsize=8.5 if not note else 8)
    cbar.ax.tick_params(labelsize=8)


def heatmap_panels(
    panels: Mapping[str, Tensor], *, title: str, subtitle: str = "", label: str = "", cmap: str = "RdBu_r",
    vmin: Num | None = None, vmax: Num | None = None, layer_labels: Sequence[str] | None = None,
) -> Any:
    """Several layer x head maps on one colour scale (e.g. one per condition or shot count): side by side, or
    stacked when the maps are drawn with layers along x (deep models)."""
    import numpy as np

    maps = {k: v.detach().float().cpu().numpy() for k, v in panels.items()}
    first = next(iter(maps.values()))
    n_layers, n_heads = first.shape
    across = layers_across(n_layers, n_heads)
    symmetric = vmin is None and vmax is None
    lo, hi, clipped_flat = colour_scale(np.stack(list(maps.values())), vmin=vmin, vmax=vmax)
    w, h = heatmap_size(n_layers, n_heads, colorbar=False)
    if across:
        fig, axes = new_figure((w + 1.1, 1.3 + (0.45 + 0.26 * n_heads) * len(maps)), nrows=len(maps), squeeze=False,
                               sharex=True)
        axes = axes[:, 0]
    else:
        fig, axes = new_figure((1.2 + len(maps) * (w - 0.9), h), ncols=len(maps), squeeze=False, sharey=True)
        axes = axes[0]
    im = None
    for i, (ax, (name, m)) in enumerate(zip(axes, maps.items())):
        im = _draw_map(ax, m, cmap=cmap, vmin=lo, vmax=hi, across=across, layer_labels=layer_labels,
                       tick_fs=7 if max(n_layers, n_heads) <= 40 else 6)
        ax.set_title(name, fontsize=9, loc="left")
        if across and i < len(maps) - 1:
            ax.set_xlabel("")
            ax.tick_params(labelbottom=False)
        if not across and i > 0:
            ax.set_ylabel("")
            ax.tick_params(labelleft=False)
    size = n_layers * n_heads
    clipped = [(i // size, i % size) for i in clipped_flat]
    note = ""
    if clipped:
        names = list(maps)
        cells = ", ".join(f"{names[p]} L{(layer_labels or list(range(n_layers)))[c // n_heads]}H{c % n_heads}"
                          for p, c in clipped[:3])
        note = f"scale ends at {'±' if symmetric else ''}{hi:.2g}; beyond: {cells}"
    cbar = fig.colorbar(im, ax=list(axes), shrink=0.9, extend=("both" if symmetric else "max") if clipped else "neither")
    _label_colorbar(cbar, label or "value", note)
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
        fig, ax = figure_axes(ax, (5.8, 3.7))
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
        place_legend(ax, len(names) + (reference is not None))
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
    fig.legend(handles, labels, loc="outside right center", fontsize=8, frameon=False)
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
    fig.legend(list(handles.values()), list(handles), loc="outside right center", fontsize=8, frameon=False)
    set_titles(fig, title, subtitle)
    return fig


def grouped_bars(
    groups: Sequence[str], series: Sequence[str], means: Tensor, lo: Tensor | None = None, hi: Tensor | None = None, *,
    ylabel: str, title: str, subtitle: str = "", ylim: tuple[Num, Num] = (0.0, 1.05), ax: Any = None,
    xlabel: str = "task",
) -> Any:
    """Bars ``means[s, g]`` for each series ``s`` within each group ``g``, with error bars ``[lo, hi]``. Every bar
    has an outline of its own colour, so a bar of height 0 still shows as a line at 0."""
    import numpy as np

    fig, ax = figure_axes(ax, (min(14.0, max(6.0, 2.4 + 0.3 * len(series) * len(groups))), 3.9))
    m = means.detach().float().cpu().numpy()
    width = 0.8 / len(series)
    for i, name in enumerate(series):
        xs = np.arange(len(groups)) + (i - (len(series) - 1) / 2) * width
        err = None
        if lo is not None:
            err = np.stack([np.clip(m[i] - lo[i].numpy(), 0, None), np.clip(hi[i].numpy() - m[i], 0, None)])
        ax.bar(xs, m[i], width, yerr=err, label=name, capsize=2, color=f"C{i}", edgecolor=f"C{i}", lw=1.2,
               error_kw={"lw": 0.8})
        if len(series) * len(groups) <= 40:  # value labels above the CI (a bar of height 0 is otherwise invisible)
            tops = m[i] if hi is None else np.fmax(m[i], hi[i].numpy())
            for x, v, top in zip(xs, m[i], tops):
                ax.text(x, (top if top == top else 0.0) + 0.015, f"{v:.2f}" if v == v else "n/a", fontsize=6,
                        ha="center", va="bottom", color="0.25", rotation=90 if len(series) > 4 else 0)
    ax.set_xticks(range(len(groups)), list(groups), rotation=30 if len(groups) > 3 else 0,
                  ha="right" if len(groups) > 3 else "center", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_xlabel(xlabel)
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
    """A layer x position heatmap centred at zero with every token labelled (newlines shown as \\n); the colour
    range is :func:`colour_scale`'s (the colour bar names any cell beyond it)."""
    n_rows, n_pos = values.shape
    fig, ax = figure_axes(ax, (max(5.0, 2.6 + 0.2 * n_pos), max(2.6, 1.9 + (0.32 if n_rows <= 12 else 0.2) * n_rows)))
    data = values.detach().float().cpu().numpy()
    lo, hi, clipped = colour_scale(data)
    im = ax.imshow(data, cmap="RdBu_r", vmin=lo, vmax=hi, aspect="auto", interpolation="nearest")
    labels = [repr(t)[1:-1] if t else "" for t in list(tokens)[:n_pos]] + [""] * max(0, n_pos - len(tokens))
    ax.set_xticks(range(n_pos), [f"{s} ({i})" for i, s in enumerate(labels)], rotation=90,
                  fontsize=6.5 if n_pos <= 48 else 6)
    integer_ticks(ax, "y", range(n_rows), fontsize=7)
    ax.set_xlabel("position (token of prompt 0)")
    ax.set_ylabel(row_label)
    ax.tick_params(length=0)
    set_titles(ax, title, subtitle)
    cells = ", ".join(f"{row_label} {i // n_pos} pos {i % n_pos} = {data.flat[i]:.3g}" for i in clipped[:3])
    cbar = fig.colorbar(im, ax=ax, shrink=0.9, extend="both" if clipped else "neither")
    _label_colorbar(cbar, label or "effect", f"scale ends at \u00b1{hi:.2g}; beyond: {cells}" if clipped else "")
    return fig


def scatter_labelled(x: Tensor, y: Tensor, labels: Sequence[str], highlight: Sequence[int], *, xlabel: str,
                     ylabel: str, title: str, subtitle: str = "", ax: Any = None, highlight_label: str = "") -> Any:
    """One point per item; ``highlight`` indices are drawn in colour and labelled, each label placed where it
    overlaps no other label (with a leader line when it has to move away from its point)."""
    fig, ax = figure_axes(ax, (5.2, 4.4))
    xs, ys = x.detach().float().cpu().numpy(), y.detach().float().cpu().numpy()
    ax.scatter(xs, ys, s=16, color="0.55", alpha=0.7, label="all heads")
    hl = list(highlight)
    if hl:
        ax.scatter(xs[hl], ys[hl], s=26, color="C3", label=highlight_label or "labelled heads", zorder=3)
    ax.axhline(0, color="0.8", lw=0.8, zorder=0)
    ax.axvline(0, color="0.8", lw=0.8, zorder=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.25, lw=0.5)
    set_titles(ax, title, subtitle)
    ax.legend(fontsize=7.5, frameon=False)
    if hl:
        place_labels(ax, [(float(xs[i]), float(ys[i])) for i in hl], [labels[i] for i in hl])
    return fig


def place_labels(ax: Any, points: Sequence[tuple[float, float]], labels: Sequence[str], *, fontsize: Num = 7) -> list[Any]:
    """Annotate ``points`` (data coordinates) with ``labels`` so that no label overlaps another label, a labelled
    point or the axes' edge: each tries offsets on rings of growing radius and takes the first free one (a leader
    line joins a label placed more than a few points away). Returns the annotations."""
    import math

    import numpy as np

    fig = ax.figure
    fig.canvas.draw()  # lay the figure out first: positions below are in its final display units
    renderer = fig.canvas.get_renderer()
    to_px = fig.dpi / 72.0
    pts = ax.transData.transform(np.asarray(points, dtype=float).reshape(-1, 2))
    frame = ax.get_window_extent(renderer)
    taken = [(px - 3 * to_px, py - 3 * to_px, px + 3 * to_px, py + 3 * to_px) for px, py in pts]

    def free(b: Any) -> bool:
        if b.x0 < frame.x0 or b.x1 > frame.x1 or b.y0 < frame.y0 or b.y1 > frame.y1:
            return False
        return not any(b.x0 < t[2] and b.x1 > t[0] and b.y0 < t[3] and b.y1 > t[1] for t in taken)

    rings = [(r, a) for r in (4, 9, 16, 24, 34, 46) for a in range(0, 360, 45)]
    out = []
    for (px, py), text in zip(points, labels):
        ann = ax.annotate(text, (px, py), xytext=(4, 4), textcoords="offset points", fontsize=fontsize, zorder=4)
        chosen = None
        for r, a in rings:
            off = (r * math.cos(math.radians(a)), r * math.sin(math.radians(a)))
            ann.set_position(off)
            ann.set_ha("left" if off[0] > 0.5 else "right" if off[0] < -0.5 else "center")
            ann.set_va("bottom" if off[1] > 0.5 else "top" if off[1] < -0.5 else "center")
            box = ann.get_window_extent(renderer)
            if free(box):
                chosen = (r, box)
                break
        if chosen is None:  # nowhere free: keep the first ring (the check in the tests flags it)
            ann.set_position((4, 4))
            ann.set_ha("left")
            ann.set_va("bottom")
            chosen = (4, ann.get_window_extent(renderer))
        r, box = chosen
        if r > 9:  # a leader line from the label back to its point
            ax.annotate("", (px, py), xytext=ann.get_position(), textcoords="offset points",
                        arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.6, "shrinkA": 0, "shrinkB": 2})
        taken.append((box.x0 - to_px, box.y0 - to_px, box.x1 + to_px, box.y1 + to_px))
        out.append(ann)
    return out


def figure_png(fig: Any, *, dpi: int = 110, close: bool = True) -> bytes:
    """The figure as PNG bytes (closed afterwards unless ``close=False``)."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    if close:
        plt.close(fig)
    return buf.getvalue()


__all__ = ["CI_LABEL", "curves", "figure_axes", "figure_png", "grouped_bars", "head_heatmap", "heatmap_panels",
           "in_jupyter", "integer_ticks", "line_plot", "new_figure", "place_legend", "position_heatmap",
           "scatter_labelled", "set_titles", "sweep_panels"]
