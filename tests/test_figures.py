"""What a reader sees: every figure names the model, corruption and n, labels every head and layer with an integer,
has legends and CIs, and survives a plain ``savefig`` without clipping; results show a compact repr."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from tlens_icl.analyses.accuracy import AccuracyResult  # noqa: E402
from tlens_icl.analyses.causal.mediation import IndirectEffectResult  # noqa: E402
from tlens_icl.analyses.representations.decodability import DecodabilityResult  # noqa: E402
from tlens_icl.analyses.vectors.common import LayerSweepResult  # noqa: E402
from tlens_icl.workflows.compare import ComparisonResult  # noqa: E402

INFO = {"model": "toy-model", "n": 20, "n_fit": 8}
gen = torch.Generator().manual_seed(0)


def coin(*shape: int, p: float = 0.6) -> torch.Tensor:
    return (torch.rand(*shape, generator=gen) < p).float()


def accuracy(n_tasks: int) -> AccuracyResult:
    return AccuracyResult(coin(n_tasks, 5, 20), torch.rand(n_tasks, 5, 20, generator=gen),
                          tuple(f"task_{i}" for i in range(n_tasks)), (0, 1, 2, 4, 8), INFO)


def mediation() -> IndirectEffectResult:
    return IndirectEffectResult(torch.randn(2, 4, 8, 6, generator=gen) * 0.05, torch.zeros(2, 4, 8, 4),
                                torch.rand(2, 6, generator=gen), torch.rand(2, 6, generator=gen), ("a", "b"), "prob",
                                "shuffled_labels", 8, "fast", INFO)


def sweep() -> LayerSweepResult:
    return LayerSweepResult(coin(2, 4, 20), torch.rand(2, 4, 20, generator=gen), coin(2, 20, p=0.2),
                            torch.rand(2, 20, generator=gen), ("zero_shot", "shuffled_labels"), (0, 1, 2, 3),
                            "function_vector", "a", INFO)


def decodability() -> DecodabilityResult:
    labels = tuple(tuple(["x", "y", "z"][i % 3] for i in range(30)) for _ in range(3))
    return DecodabilityResult(coin(3, 4, 30), torch.full((3, 4), 0.33), torch.full((3,), 1 / 3), (0, 2, 8),
                              ((0,), (1,), (2,), (3,)), labels, "resid_post", 10, "cosine", INFO)


def comparison() -> ComparisonResult:
    methods = ("zero_shot", "icl", "function_vector", "task_vector", "icv", "soft_injection")
    return ComparisonResult(coin(6, 2, 20), torch.rand(6, 2, 20, generator=gen), torch.rand(2, 2, 4, generator=gen),
                            methods, ("a", "b"), {}, INFO)


RESULTS = {"accuracy_3": lambda: accuracy(3), "accuracy_16": lambda: accuracy(16), "mediation": mediation,
           "sweep": sweep, "decodability": decodability, "comparison": comparison}


def texts(fig) -> list:
    """Every text the figure draws (tick labels outside an axis' view limits are not drawn)."""
    ticks, drawn = set(), set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                ticks |= {id(tick.label1), id(tick.label2)}
            for tick in axis._update_ticks():
                drawn |= {id(tick.label1), id(tick.label2)}
    return [t for t in fig.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text().strip()
            and (id(t) not in ticks or id(t) in drawn)]


@pytest.mark.parametrize("name", list(RESULTS))
def test_plain_savefig_clips_nothing_and_titles_say_what(name):
    res = RESULTS[name]()
    for stem, fig in res.figures().items():
        fig.savefig(io.BytesIO(), format="png", dpi=80)  # a plain savefig, no bbox_inches
        renderer = fig.canvas.get_renderer()
        box = fig.bbox
        for t in texts(fig):
            ext = t.get_window_extent(renderer)
            assert ext.x0 >= box.x0 - 1 and ext.x1 <= box.x1 + 1 and ext.y0 >= box.y0 - 1 and ext.y1 <= box.y1 + 1, \
                f"{name}/{stem}: {t.get_text()!r} is cut off by the figure edge"
        words = " ".join(t.get_text() for t in texts(fig))
        assert "toy-model" in words and "n=" in words, f"{name}/{stem}: the figure does not say model and n"
        plt.close(fig)


def test_head_heatmap_labels_every_head_and_integer_layers():
    fig = mediation().plot(k=3)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(h) for h in range(8)]
    assert [t.get_text() for t in ax.get_yticklabels()] == [str(layer) for layer in range(4)]
    words = " ".join(t.get_text() for t in texts(fig))
    assert "shuffled_labels" in words and "8 shots" in words and "mean over 2 tasks" in words
    assert "top 3" in " ".join(t.get_text() for t in ax.get_legend().get_texts())
    plt.close(fig)


def test_lines_have_legends_for_baselines_chance_and_cis():
    legend = lambda fig: " ".join(t.get_text() for ax in fig.axes if ax.get_legend()  # noqa: E731
                                  for t in ax.get_legend().get_texts())
    fig = sweep().plot()
    assert "zero_shot, no vector" in legend(fig) and "95% CI" in legend(fig)
    fig2 = decodability().plot()
    assert "chance" in legend(fig2) and "shuffled-label control" in legend(fig2) and "95% CI" in legend(fig2)
    assert [t.get_text() for t in fig2.axes[0].get_xticklabels()] == ["0", "1", "2", "3"]  # integer layers
    fig3 = accuracy(3).plot()
    assert {"task_0", "task_1", "task_2", "mean over all tasks"} <= set(legend(fig3).split("  ")) or \
        all(f"task_{i}" in legend(fig3) for i in range(3))
    assert "error bars: 95% CI" in " ".join(t.get_text() for t in texts(fig3))
    for f in (fig, fig2, fig3):
        plt.close(f)


def test_many_tasks_become_small_multiples_with_a_shared_legend():
    fig = accuracy(16).plot()
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert len(panels) == 16 and {ax.get_title() for ax in panels} == {f"task_{i}" for i in range(16)}
    assert fig.legends and "95% CI" in [t.get_text() for t in fig.legends[0].get_texts()]
    plt.close(fig)


@pytest.mark.parametrize("name", list(RESULTS))
def test_repr_is_compact_and_html_has_table_and_figure(name):
    res = RESULTS[name]()
    text = repr(res)
    assert text.startswith(f"<{type(res).__name__}:") and len(text.splitlines()) <= 4 and "tensor(" not in text
    html = res._repr_html_()
    assert "<table" in html and "data:image/png;base64," in html and len(html) < 400_000
