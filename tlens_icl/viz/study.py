"""Cross-model figures of the study: several models side by side, from plain numbers (no analysis objects).

Each function takes ``{model label: numbers}`` in the order the models should appear (smallest first) and
returns a matplotlib figure with a title, a subtitle naming the sizes, labelled axes and a legend; intervals
are 95 % (see :mod:`tlens_icl.workflows.summary`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tlens_icl.viz.plots import new_figure, set_titles

Interval = Sequence[float]  # (point, low, high)
#: One colour per model (stable across figures), and one per kind of head / condition.
MODEL_COLOURS = ("#1b6ca8", "#d1495b", "#2e8b57", "#8c5aa8", "#e09f3e", "#555555")
KIND_COLOURS = {"FV": "#d1495b", "induction": "#1b6ca8", "random": "#888888", "without": "#9aa5b1", "with": "#2e8b57"}


def _err(points: Sequence[Interval]) -> tuple[list[float], list[list[float]]]:
    y = [p[0] for p in points]
    return y, [[p[0] - p[1] for p in points], [p[2] - p[0] for p in points]]


def head_depths(fv: Mapping[str, Sequence[float]], induction: Mapping[str, Sequence[float]], *, k: int,
                band: tuple[float, float] = (0.30, 0.56), subtitle: str = "") -> Any:
    """Depth (layer / (n_layers - 1)) of each model's top-``k`` FV and induction heads, one column each."""
    fig, ax = new_figure((7.2, 3.9))
    models = list(fv)
    ax.axhspan(*band, color="#f2d7a7", alpha=0.45, lw=0, label=f"Todd et al.: GPT-J FV heads ({band[0]:.2f}-{band[1]:.2f})")
    for i, m in enumerate(models):
        for dx, kind, depths in ((-0.16, "FV", fv[m]), (0.16, "induction", induction[m])):
            xs = [i + dx + 0.05 * ((j % 5) - 2) for j in range(len(depths))]
            ax.scatter(xs, depths, s=22, color=KIND_COLOURS[kind], alpha=0.75, edgecolor="white", lw=0.4,
                       label=f"top-{k} {kind} heads" if i == 0 else None, zorder=3)
            mean = sum(depths) / len(depths)
            ax.plot([i + dx - 0.13, i + dx + 0.13], [mean, mean], color=KIND_COLOURS[kind], lw=2.2, zorder=4,
                    label=f"mean depth ({kind})" if i == 0 else None)
    ax.set_xticks(range(len(models)), models, fontsize=8, rotation=20, ha="right")
    ax.set(ylim=(-0.03, 1.03), xlim=(-0.6, len(models) - 0.4), ylabel="depth (layer / last layer)", xlabel="model")
    ax.legend(fontsize=7.5, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    set_titles(ax, "Where the top FV and induction heads sit", subtitle)
    return fig


def ablation_panels(curves: Mapping[str, Mapping[str, Sequence[Interval]]], fractions: Sequence[float],
                    zero_shot: Mapping[str, Interval], *, subtitle: str = "") -> Any:
    """Few-shot accuracy vs the fraction of heads mean-ablated at the query, one panel per model, a line per
    ranking (FV, induction, random) with its interval, and the model's zero-shot accuracy."""
    models = list(curves)
    fig, axes = new_figure((3.1 * len(models) + 2.4, 3.6), ncols=len(models), sharey=True, squeeze=False)
    xs = [100 * f for f in fractions]
    for ax, m in zip(axes[0], models):
        z = zero_shot[m]
        ax.axhspan(z[1], z[2], color="0.85", lw=0)
        ax.axhline(z[0], color="0.45", ls=":", lw=1.2, label="zero-shot (no ablation)")
        span = max(xs) - min(xs) or 1.0
        for j, (kind, points) in enumerate(curves[m].items()):
            y, err = _err(points)
            dodge = [x + (j - 1) * 0.012 * span for x in xs]  # overlapping intervals stay readable
            ax.errorbar(dodge, y, yerr=err, marker="o", ms=3.5, capsize=2.5, lw=1.5, color=KIND_COLOURS.get(kind, "k"),
                        label=f"top {kind} heads" if kind != "random" else "random heads (3 seeds)", zorder=3)
        ax.set(title=m, xlabel="% of heads ablated", ylim=(-0.02, 1.02))
        ax.title.set_fontsize(9.5)
        ax.set_xticks(xs, [f"{x:g}" for x in xs], fontsize=8)
    axes[0][0].set_ylabel("few-shot accuracy (first token)")
    axes[0][-1].legend(fontsize=7.5, frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    set_titles(fig, "Mean ablation with exclusion: FV heads vs induction heads", subtitle)
    return fig


def lift_bars(lifts: Mapping[str, Mapping[str, tuple[Interval, Interval]]], *, subtitle: str = "") -> Any:
    """Accuracy without and with the function vector, per model, one panel per setting (zero-shot, shuffled)."""
    models = list(lifts)
    settings = list(next(iter(lifts.values())))
    fig, axes = new_figure((4.2 * len(settings) + 1.2, 3.6), ncols=len(settings), sharey=True, squeeze=False)
    width = 0.36
    for ax, s in zip(axes[0], settings):
        for j, (cond, idx) in enumerate((("without", 0), ("with", 1))):
            pts = [lifts[m][s][idx] for m in models]
            y, err = _err(pts)
            xs = [i + (j - 0.5) * width for i in range(len(models))]
            ax.bar(xs, [max(v, 0.004) for v in y], width=width, color=KIND_COLOURS[cond], edgecolor="0.3", lw=0.5,
                   label=f"{cond} FV", zorder=2)
            ax.errorbar(xs, y, yerr=err, fmt="none", ecolor="0.15", capsize=2.5, lw=1, zorder=3)
        ax.set_xticks(range(len(models)), models, fontsize=8, rotation=20, ha="right")
        ax.set(title=s.replace("_", " "), ylim=(0, 1.05), xlabel="model")
        ax.title.set_fontsize(9.5)
    axes[0][0].set_ylabel("test accuracy (first token)")
    axes[0][-1].legend(fontsize=7.5, frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    set_titles(fig, "Function vectors: accuracy without and with the vector", subtitle)
    return fig


def layer_curves(curves: Mapping[str, Mapping[str, Sequence[float]]], chosen: Mapping[str, Mapping[str, int]],
                 n_layers: Mapping[str, int], *, refs: Mapping[str, float], subtitle: str = "") -> Any:
    """Validation accuracy vs depth for each vector kind (panels) and model (lines), the chosen layer marked,
    the papers' depths as vertical references."""
    kinds = list(refs)
    fig, axes = new_figure((4.4 * len(kinds) + 1.3, 3.6), ncols=len(kinds), sharey=True, squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        ax.axvline(refs[kind], color="0.4", ls="--", lw=1, label="the paper's best depth", zorder=1)
        for c, m in zip(MODEL_COLOURS, curves):
            ys = curves[m][kind]
            L = n_layers[m]
            xs = [i / (L - 1) for i in range(len(ys))]
            ax.plot(xs, ys, color=c, lw=1.5, label=m, zorder=2)
            best = chosen[m][kind]
            ax.plot([best / (L - 1)], [ys[best]], marker="*", ms=11, color=c, markeredgecolor="k", lw=0, zorder=3)
        ax.set(title=f"{kind} added at each layer (validation items)", xlabel="depth (layer / last layer)",
               xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
        ax.title.set_fontsize(9.5)
    axes[0][0].set_ylabel("accuracy (first token)")
    axes[0][-1].plot([], [], marker="*", ms=10, color="0.5", markeredgecolor="k", lw=0, label="layer chosen")
    axes[0][-1].legend(fontsize=7.5, frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    set_titles(fig, "Which layer a vector works at, as a fraction of depth", subtitle)
    return fig


def shot_curves(panels: Mapping[str, Mapping[str, Sequence[Interval]]], shots: Sequence[int],
                controls: Mapping[str, Mapping[str, Sequence[float]]], ylabels: Mapping[str, str], *,
                subtitle: str = "") -> Any:
    """Panels of a quantity against shots (e.g. ICL accuracy, peak CD, peak RSA), one line per model with its
    interval where given (point, low, high), and a dashed control per model where given."""
    names = list(panels)
    fig, axes = new_figure((3.6 * len(names) + 1.3, 3.5), ncols=len(names), squeeze=False)
    for ax, name in zip(axes[0], names):
        span = max(shots) - min(shots) or 1
        for j, (c, (m, pts)) in enumerate(zip(MODEL_COLOURS, panels[name].items())):
            y, err = _err(pts)
            dodge = [x + (j - (len(panels[name]) - 1) / 2) * 0.012 * span for x in shots]
            ax.errorbar(dodge, y, yerr=err, marker="o", ms=3.5, capsize=2.5, color=c, lw=1.5, label=m, zorder=3)
            ctrl = controls.get(name, {}).get(m)
            if ctrl is not None:
                ax.plot(shots, ctrl, color=c, ls="--", lw=1, alpha=0.7, zorder=2)
        if controls.get(name):
            ax.plot([], [], color="0.4", ls="--", lw=1, label="shuffled-label control")
        ax.set(title=name, xlabel="shots (demonstrations)", ylabel=ylabels[name])
        ax.title.set_fontsize(9.5)
        ax.set_xticks(list(shots), [str(s) for s in shots])
    entries: dict[str, Any] = {}  # one legend for every panel: the models, and the control line where drawn
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    axes[0][-1].legend(list(entries.values()), list(entries), fontsize=7.5, frameon=False, loc="upper left",
                       bbox_to_anchor=(1.02, 1.0))
    set_titles(fig, "ICL, decodability and RSA against the number of demonstrations", subtitle)
    return fig


__all__ = ["ablation_panels", "head_depths", "layer_curves", "lift_bars", "shot_curves"]
