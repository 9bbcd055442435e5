"""Every figure type at 4 and 30 layers, checked as a reviewer would look at it (tests/figures_at_depth.py builds
them from random tensors): no text overlaps another, nothing is drawn outside the figure, every axis and colour bar
is labelled, no text is too small; and the specific promises of issue 24 (a colour scale one head cannot flatten,
readable rank labels, CI swatches coloured like their bands, visible zero bars and reference lines, the chosen
layer marked, titles that do not state an undecided value as a finding)."""

from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from tlens_icl.analyses.causal.mediation import IndirectEffectResult  # noqa: E402
from tlens_icl.analyses.heads.token_loss import TokenLossResult  # noqa: E402
from figures_at_depth import figures, layout_problems  # noqa: E402



@pytest.mark.parametrize("depth", [(4, 8), (30, 9)], ids=["4-layers", "30-layers"])
def test_every_figure_reads_at_any_depth(depth):
    failures = {}
    for name, make in figures(*depth).items():
        fig = make()
        problems = layout_problems(fig)
        plt.close(fig)
        if problems:
            failures[name] = problems[:4]
    assert not failures, failures


def _mediation(L: int, H: int, dominant: float = 0.15) -> IndirectEffectResult:
    g = torch.Generator().manual_seed(0)
    e = torch.randn(1, L, H, 6, generator=g) * 0.005 + 0.01
    e[0, L - 3, 1] = 0.03 if dominant else 0.02
    e[0, (2 * L) // 3, H // 2] += dominant
    return IndirectEffectResult(e, torch.zeros(1, L, H, 2), torch.rand(1, 6), torch.rand(1, 6), ("a",), "prob",
                                "zero_shot", 5, "fast", {"model": "toy"})


def test_one_dominant_head_cannot_flatten_the_colour_scale_and_is_named():
    res = _mediation(30, 9)
    fig = res.plot(k=10)
    ax, cax = fig.axes[0], fig.axes[-1]
    im = ax.get_images()[0]
    second = float(res.mean()[27, 1])
    assert im.norm(second) > 0.95 or im.norm.vmax <= second * 1.01  # the second head uses the top of the scale
    top = (2 * 30) // 3
    assert f"L{top}H4" in cax.get_ylabel() and "beyond" in cax.get_ylabel()
    assert ax.get_xlabel() == "layer" and ax.get_ylabel() == "head"  # 30 layers run along x
    assert fig.get_figheight() <= 6.0
    plt.close(fig)
    fig = _mediation(4, 8, dominant=0.0).plot(k=3)  # no dominant head: the plain symmetric scale, no note
    assert "beyond" not in fig.axes[-1].get_ylabel() and fig.axes[0].get_ylabel() == "layer"
    plt.close(fig)


def test_rank_labels_read_on_dark_and_light_cells():
    fig = _mediation(30, 9).plot(k=10)
    ax = fig.axes[0]
    im = ax.get_images()[0]
    ranks = [t for t in ax.texts if t.get_text().isdigit()]
    assert len(ranks) == 10
    for t in ranks:
        x, y = (int(round(v)) for v in t.get_position())
        cell = np.array(im.cmap(im.norm(im.get_array()[y, x]))[:3])
        fg = np.array(matplotlib.colors.to_rgb(t.get_color()))
        lum = lambda c: 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]  # noqa: E731
        assert abs(lum(fg) - lum(cell)) > 0.4, (t.get_text(), t.get_color(), cell)
        assert t.get_fontsize() >= 6
    plt.close(fig)


def test_ci_legend_swatch_has_the_colours_of_the_bands():
    from tlens_icl.viz.plots import line_plot

    fig = line_plot([0, 1, 2], {"a": [0.1, 0.2, 0.3], "b": [0.5, 0.4, 0.6]}, xlabel="layer", ylabel="acc",
                    ci={"a": ([0, 0.1, 0.2], [0.2, 0.3, 0.4]), "b": ([0.4, 0.3, 0.5], [0.6, 0.5, 0.7])}, title="t")
    ax = fig.axes[0]
    bands = [matplotlib.colors.to_hex(c.get_facecolor()[0], keep_alpha=False) for c in ax.collections]
    legend = ax.get_legend()
    ci = [h for h, t in zip(legend.legend_handles, legend.get_texts()) if t.get_text() == "95% CI"]
    assert ci, "no CI entry"
    swatches = legend._legend_handle_box.findobj(matplotlib.patches.Rectangle)
    shown = {matplotlib.colors.to_hex(p.get_facecolor(), keep_alpha=False) for p in swatches}
    assert set(bands) <= shown, (bands, shown)
    plt.close(fig)


def test_zero_bars_and_coinciding_reference_lines_stay_visible():
    fig = figures(4, 8)["comparison"]()
    zero = [b for b in fig.axes[0].patches if b.get_height() == 0]
    assert zero and all(b.get_linewidth() > 0 and b.get_edgecolor()[3] == 1 for b in zero)
    plt.close(fig)
    fig = figures(4, 8)["decodability"]()
    ax = fig.axes[0]
    chance, control = [ln for ln in ax.lines if ln.get_label() in ("chance (majority label)", "shuffled-label control")]
    assert chance.get_linewidth() > control.get_linewidth() + 1 and control.get_zorder() > chance.get_zorder()
    assert chance.get_color() != control.get_color()
    plt.close(fig)


def test_plot_layers_marks_the_layers_each_task_chose():
    fig = figures(30, 9)["comparison_layers"]()
    ax = fig.axes[0]
    stars = [ln for ln in ax.lines if ln.get_marker() == "*" and len(ln.get_xdata())]
    assert sorted(int(ln.get_xdata()[0]) for ln in stars) == [10, 15, 16]  # FV layer 10 (2 tasks), TV 15 and 16
    assert "layer chosen for a task (n tasks)" in [t.get_text() for t in ax.get_legend().get_texts()]
    plt.close(fig)


def test_token_loss_title_states_no_undecided_value():
    g = torch.Generator().manual_seed(0)
    flat = 3.0 + torch.randn(6, 40, generator=g)
    falls = 3.0 + 0.01 * torch.randn(6, 40, generator=g) - torch.linspace(0, 1, 40)
    for losses, word in ((flat, "undecided"), (falls, "loss falls")):
        res = TokenLossResult(losses, 3, 36, "text", "token position", {"model": "toy"})
        lo, hi = res.ci()
        assert (lo <= 0 <= hi) == (word == "undecided")
        fig = res.plot()
        title = fig.axes[0].get_title(loc="left")
        assert word in title and not re.search(r"\d\.\d", title), title  # no score in the title
        plt.close(fig)


def test_plot_into_a_users_axes_names_only_that_task():
    fig = figures(4, 8)["mediation_task_ax"]()
    words = " ".join(t.get_text() for t in fig.findobj(matplotlib.text.Text))
    assert "bitwise_or" in words and "bitwise_and" not in words and "uppercase" not in words
    plt.close(fig)
