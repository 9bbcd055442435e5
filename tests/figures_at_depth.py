"""Every figure type of tlens_icl, built from random tensors at any model depth (no model needed), and a layout
check a reviewer would otherwise do by eye: no text overlaps another, nothing is drawn outside the figure, every
axis and colour bar is labelled, no text is too small to read.

Used by tests/test_figure_layout.py (4 and 30 layers) and by hand: ``python tests/figures_at_depth.py OUT_DIR``
writes every figure as PNG to look at.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

#: The smallest font a figure may use (points at its own size; a paper prints figures at about that size).
MIN_FONT_PT = 6.0


# ---- the layout check ------------------------------------------------------------------------------------------
def drawn_texts(fig: Any) -> list[Any]:
    """Every visible, non-empty text the figure draws (tick labels outside an axis' view limits are not drawn)."""
    ticks, drawn, hidden = set(), set(), set()
    for ax in all_axes(fig):
        for axis in (ax.xaxis, ax.yaxis):
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                ticks |= {id(tick.label1), id(tick.label2)}
            for tick in axis._update_ticks():
                drawn |= {id(tick.label1), id(tick.label2)}
        if not ax.get_visible():  # nothing of a hidden axes is drawn
            hidden |= {id(t) for t in ax.findobj(matplotlib.text.Text)}
    out = []
    for t in fig.findobj(matplotlib.text.Text):
        if not (t.get_visible() and t.get_text().strip()) or (id(t) in ticks and id(t) not in drawn):
            continue
        if id(t) in hidden:
            continue
        out.append(t)
    return out


def _quad(text: Any, renderer: Any) -> np.ndarray:
    """The corners of a text's (possibly rotated) box in display pixels."""
    box = text.get_window_extent(renderer)
    angle = math.radians(text.get_rotation() % 180)
    if abs(math.sin(angle)) < 1e-6:
        return np.array([[box.x0, box.y0], [box.x1, box.y0], [box.x1, box.y1], [box.x0, box.y1]])
    rot = text.get_rotation()
    text.set_rotation(0)
    flat = text.get_window_extent(renderer)
    text.set_rotation(rot)
    w, h = flat.width, flat.height  # the axis-aligned box of a rotated rectangle shares the rectangle's centre
    cx, cy = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
    c, s = math.cos(angle), math.sin(angle)
    corners = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
    return corners @ np.array([[c, s], [-s, c]]) + [cx, cy]


def _overlap(a: np.ndarray, b: np.ndarray, tol: float = 1.0) -> bool:
    """Separating-axis test of two convex quads; boxes that overlap by ``tol`` pixels or less do not count."""
    for quad in (a, b):
        for i in range(4):
            edge = quad[(i + 1) % 4] - quad[i]
            axis = np.array([-edge[1], edge[0]])
            norm = np.linalg.norm(axis)
            if norm == 0:
                continue
            axis = axis / norm
            pa, pb = a @ axis, b @ axis
            if min(pa.max(), pb.max()) - max(pa.min(), pb.min()) <= tol:
                return False
    return True


def all_axes(fig: Any) -> list[Any]:
    """The figure's axes and their child axes (e.g. a secondary x axis)."""
    return [a for ax in fig.axes for a in (ax, *getattr(ax, "child_axes", []))]


def _colorbar_axes(fig: Any) -> list[Any]:
    return [ax for ax in fig.axes if getattr(ax, "_colorbar", None) is not None]


def layout_problems(fig: Any) -> list[str]:
    """What a reviewer would flag in ``fig`` as drawn by a plain ``savefig``: overlapping texts, anything outside
    the figure, an axis or colour bar without a label, text below :data:`MIN_FONT_PT`."""
    import io

    fig.savefig(io.BytesIO(), format="png", dpi="figure")  # the layout a plain savefig makes, at the dpi of the
    # renderer below (axis labels are placed in display units at draw time)
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    problems = []
    texts = drawn_texts(fig)
    quads = [_quad(t, renderer) for t in texts]
    for t, q in zip(texts, quads):
        if q[:, 0].min() < box.x0 - 1 or q[:, 0].max() > box.x1 + 1 or q[:, 1].min() < box.y0 - 1 or \
                q[:, 1].max() > box.y1 + 1:
            problems.append(f"outside the figure: {t.get_text()!r}")
        if t.get_fontsize() < MIN_FONT_PT:
            problems.append(f"{t.get_fontsize():.1f} pt text: {t.get_text()!r}")
    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            if _overlap(quads[i], quads[j]):
                problems.append(f"overlap: {texts[i].get_text()!r} and {texts[j].get_text()!r}")
    cbars = _colorbar_axes(fig)
    for ax in all_axes(fig):
        if not ax.get_visible():
            continue
        ext = ax.get_window_extent(renderer)
        if ext.x0 < box.x0 - 1 or ext.x1 > box.x1 + 1 or ext.y0 < box.y0 - 1 or ext.y1 > box.y1 + 1:
            problems.append(f"axes outside the figure: {ax.get_title() or ax}")
        if ax in cbars:
            cb = ax._colorbar
            label = ax.get_ylabel() if cb.orientation == "vertical" else ax.get_xlabel()
            if not label.strip():
                problems.append("a colour bar without a label")
            continue
        for axis, label in ((ax.xaxis, ax.get_xlabel()), (ax.yaxis, ax.get_ylabel())):
            shown = [t for t in axis.get_ticklabels() if t.get_visible() and t.get_text().strip()]
            if shown and not label.strip():
                problems.append(f"an unlabelled {axis.axis_name} axis on {ax.get_title()!r}")
    for leg in [*fig.legends, *(ax.get_legend() for ax in all_axes(fig) if ax.get_legend())]:
        ext = leg.get_window_extent(renderer)
        if ext.x0 < box.x0 - 1 or ext.x1 > box.x1 + 1 or ext.y0 < box.y0 - 1 or ext.y1 > box.y1 + 1:
            problems.append("a legend outside the figure")
        own = {id(t) for t in leg.get_texts()} | {id(leg.get_title())}
        frame = np.array([[ext.x0, ext.y0], [ext.x1, ext.y0], [ext.x1, ext.y1], [ext.x0, ext.y1]])
        for t, q in zip(texts, quads):  # a legend (its keys too) must not cover a text of the figure
            if id(t) not in own and _overlap(frame, q):
                problems.append(f"the legend covers {t.get_text()!r}")
    return problems


# ---- every figure type from random tensors -----------------------------------------------------------------------
def figures(n_layers: int, n_heads: int, seed: int = 0) -> dict[str, Callable[[], Any]]:
    """name -> a function that returns one figure, for a model of ``n_layers`` x ``n_heads`` (random data shaped
    like real results: a few dominant heads, CIs, NaN where a result has them)."""
    from tlens_icl.analyses.accuracy import AccuracyResult
    from tlens_icl.analyses.causal.mediation import IndirectEffectResult
    from tlens_icl.analyses.causal.patching import ActivationPatchingResult, HeadPatchingResult
    from tlens_icl.analyses.heads.ablation import HeadAblationResult
    from tlens_icl.analyses.heads.overlap import HeadOverlapResult
    from tlens_icl.analyses.heads.scores import HeadScoresResult
    from tlens_icl.analyses.heads.token_loss import TokenLossResult
    from tlens_icl.analyses.representations.activations import ActivationSet
    from tlens_icl.analyses.representations.attention_ratio import AttentionRatioResult
    from tlens_icl.analyses.representations.compare_heads import HeadComparisonResult
    from tlens_icl.analyses.representations.decodability import DecodabilityResult
    from tlens_icl.analyses.representations.probing import ProbeResult
    from tlens_icl.analyses.representations.rsa import RSAResult
    from tlens_icl.analyses.vectors.common import LayerSweepResult
    from tlens_icl.workflows.compare import ComparisonResult
    from tlens_icl.analyses.vectors.function_vectors import FunctionVector
    from tlens_icl.analyses.vectors.icv import InContextVector
    from tlens_icl.analyses.vectors.soft_injection import SoftInjection
    from tlens_icl.analyses.vectors.task_vectors import TaskVector

    g = torch.Generator().manual_seed(seed)
    L, H = n_layers, n_heads
    info = {"model": f"toy-{L}L", "n_layers": L, "n_heads": H, "d_model": 32, "n": 12, "n_fit": 8}

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g)

    def coin(*shape: int, p: float = 0.6) -> torch.Tensor:
        return (rand(*shape) < p).float()

    def effects(*lead: int, n: int = 6) -> torch.Tensor:
        """Small effects with one dominant head, as on SmolLM2 (L20H5)."""
        e = torch.randn(*lead, L, H, n, generator=g) * 0.01 + 0.004
        e[..., (2 * L) // 3, H // 2, :] += 0.15
        e[..., L // 2, 1, :] += 0.03
        return e

    tasks = ("bitwise_and", "bitwise_or", "uppercase")

    def accuracy(k: int) -> Any:
        return AccuracyResult(coin(k, 5, 20), rand(k, 5, 20), tuple(f"task_{i}" for i in range(k)), (0, 1, 2, 4, 8),
                              info)

    def mediation() -> Any:
        return IndirectEffectResult(effects(len(tasks)), torch.zeros(len(tasks), L, H, 4), rand(len(tasks), 6),
                                    rand(len(tasks), 6), tasks, "prob", "shuffled_labels", 5, "fast", info)

    def head_scores() -> Any:
        s = rand(3, L, H, 8) * 0.2
        s[0, (2 * L) // 3, H // 2] = 0.95
        return HeadScoresResult(s, torch.zeros(8, 20, dtype=torch.long), ("induction", "previous_token",
                                                                          "duplicate_token"), "targets", info)

    def sweep() -> Any:
        return LayerSweepResult(coin(2, L, 20), rand(2, L, 20), coin(2, 20, p=0.2), rand(2, 20),
                                ("zero_shot", "shuffled_labels"), tuple(range(L)), "function_vector", "bitwise_and",
                                info)

    def decodability() -> Any:
        labels = tuple(tuple(["a", "b", "c"][i % 3] for i in range(30)) for _ in range(3))
        correct = torch.stack([coin(L, 30, p=p) for p in (0.33, 0.6, 0.9)])
        shuffled = torch.full((3, L), 1 / 3) + torch.randn(3, L, generator=g) * 0.01
        return DecodabilityResult(correct, shuffled, torch.full((3,), 1 / 3), (0, 2, 8),
                                  tuple((i,) for i in range(L)), labels, "resid_post", 10, "cosine", info)

    def comparison() -> Any:
        methods = ("zero_shot", "icl", "function_vector", "task_vector", "icv", "soft_injection")
        correct = coin(6, 2, 20)
        correct[0] = 0.0  # zero-shot accuracy 0: a bar of height 0 must still show
        chosen = {t: {"function_vector": {"layer": L // 3}, "task_vector": {"layer": L // 2 + i}}
                  for i, t in enumerate(("a", "b"))}
        return ComparisonResult(correct, rand(6, 2, 20), rand(2, 2, L), methods, ("a", "b"), chosen, info)

    def rsa(head: bool) -> Any:
        units = tuple((i, h) for i in range(L) for h in range(H)) if head else tuple((i,) for i in range(L))
        return RSAResult(torch.randn(2, 1, len(units), generator=g) * 0.2, rand(2, 1, len(units)), (0, 8), ("task",),
                         units, "head_out" if head else "resid_post", "cosine", 100, info)

    def probe() -> Any:
        return ProbeResult(rand(2, L), rand(2, L) * 0.5, torch.full((2,), 0.33), (0, 8), tuple((i,) for i in range(L)),
                           "task", "classification", "resid_post", 5, info)

    def attention_ratio() -> Any:
        n = 6
        return AttentionRatioResult(rand(2 * n, L, H), rand(2 * n, L, H), torch.ones(2 * n, dtype=torch.long),
                                    torch.ones(2 * n, dtype=torch.long), ("0-shot",) * n + ("4-shot",) * n,
                                    ("0-shot", "4-shot"), tuple(range(L)), "demo_output", "demo_input", info)

    def compare_heads() -> Any:
        causal, rep = torch.randn(L, H, generator=g) * 0.01, torch.randn(L, H, generator=g) * 0.1
        causal[(2 * L) // 3, H // 2] = 0.15
        for h in range(4):  # a cluster of heads close together: their labels must not collide
            causal[L // 2, h] = 0.05 + 0.001 * h
            rep[L // 2, h] = 0.3 + 0.002 * h
        return HeadComparisonResult(causal, rep, (3, 5), (1, 2), (0.1, 0.3), 0.12, 0.4, "AIE", "RSA", info)

    def token_loss() -> Any:
        losses = 3.0 + torch.randn(8, 120, generator=g) - torch.linspace(0, 1.2, 120)
        return TokenLossResult(losses, 10, 110, "text", "token position", info)

    def ablation() -> Any:
        methods, ks = ("FV", "induction", "random"), (0, 1, 2, 4, 8)
        return HeadAblationResult(coin(3, 5, 2, 2, 10), torch.randn(3, 5, 2, 6, generator=g), methods, ks,
                                  ("a", "b"), {}, 4, 0.0, "all", info)

    def overlap() -> Any:
        ks = (1, 3, 5, 10)
        return HeadOverlapResult(torch.randn(2, L, H, generator=g), ("FV", "induction"), (("FV", "induction"),), ks,
                                 torch.tensor([[0.0, 1, 1, 3]]), torch.tensor([k * k / (L * H) for k in ks]),
                                 rand(1, 4), 5, info)

    def activation_set() -> Any:
        n = 12
        return ActivationSet(("a",) * 6 + ("b",) * 6, torch.tensor([0, 4] * 6), ("",) * n, ("q",) * n, ({},) * n,
                             tuple(range(L)), "query", info, resid_post=torch.randn(n, L, 32, generator=g))

    def activation_patching() -> Any:
        toks = tuple(["<bos>", "0011", " 0101", " ->", " 0001", "\n"] * 4 + ["0110", " 1100", " ->"])
        return ActivationPatchingResult(torch.randn(L, len(toks), 6, generator=g) * 0.1, rand(6), rand(6),
                                        "resid_pre", "prob", "denoise", "bitwise_and", "shuffled_labels", toks, info)

    def head_patching() -> Any:
        return HeadPatchingResult(effects(n=8), rand(8), rand(8), "prob", "denoise", "query", "fast", "bitwise_and",
                                  "shuffled_labels", info)

    def function_vector() -> Any:
        heads = tuple(((L // 3 + i // 3) % L, (i % 3 + 1) % H) for i in range(10))
        return FunctionVector(torch.randn(32, generator=g), heads, "bitwise_and", L // 3, info)

    def soft_injection() -> Any:
        return SoftInjection(torch.randn(L, H, 4, generator=g), torch.randn(L, H, generator=g) * 2,
                             torch.linspace(1, 0.1, 20), "bitwise_and", info)

    def task_vector() -> Any:
        return TaskVector(torch.randn(L, 32, generator=g), "bitwise_and", 5, L // 2, info)

    def icv() -> Any:
        return InContextVector(torch.randn(L, 32, generator=g), torch.randn(L, 32, generator=g), 0.4, "bitwise_and",
                               "pair", "pc1", info)

    def into_ax(make: Callable[[], Any], **kw: Any) -> Callable[[], Any]:
        def draw() -> Any:  # a user's own half-width axes in a figure without a layout engine
            fig, axes = plt.subplots(1, 2, figsize=(10, 4))
            make().plot(ax=axes[0], **kw)
            axes[1].set_visible(False)
            return fig
        return draw

    def pipeline_sweep() -> Any:
        from tlens_icl.workflows.pipeline import plot_fv_sweep

        fams = {"word": ["uppercase", "capitalize"], "bitwise": ["bitwise_and", "bitwise_or"]}
        sweeps = {t: sweep() for names in fams.values() for t in names}
        acc = AccuracyResult(coin(4, 5, 20), rand(4, 5, 20), tuple(sweeps), (0, 1, 2, 4, 8), info)
        return plot_fv_sweep({"fv_sweeps": sweeps, "fv_val": sweeps, "accuracy": acc, "families": fams,
                              "fv_layer": L // 3, "mediation": {"word": mediation()}, "settings": {"k (FV heads)": 10}})

    return {
        "accuracy_3": lambda: accuracy(3).plot(), "accuracy_16": lambda: accuracy(16).plot(),
        "mediation": lambda: mediation().plot(k=10), "mediation_task_ax": into_ax(mediation, task="bitwise_or"),
        "head_scores": lambda: head_scores().plot(), "head_patching": lambda: head_patching().plot(k=5),
        "activation_patching": lambda: activation_patching().plot(),
        "sweep": lambda: sweep().plot(), "decodability": lambda: decodability().plot(),
        "comparison": lambda: comparison().plot(), "comparison_layers": lambda: comparison().plot_layers(),
        "rsa_layers": lambda: rsa(False).plot(), "rsa_heads": lambda: rsa(True).plot(), "probe": lambda: probe().plot(),
        "attention_ratio": lambda: attention_ratio().plot(), "compare_heads": lambda: compare_heads().plot(),
        "token_loss": lambda: token_loss().plot(), "ablation": lambda: ablation().plot(),
        "overlap": lambda: overlap().plot(), "activations": lambda: activation_set().plot(),
        "function_vector": lambda: function_vector().plot(), "soft_injection": lambda: soft_injection().plot(),
        "task_vector": lambda: task_vector().plot(), "icv": lambda: icv().plot(),
        "pipeline_fv_sweep": pipeline_sweep,
    }


if __name__ == "__main__":
    import sys
    from pathlib import Path

    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    only = set(sys.argv[2:])
    for L, H in ((4, 8), (30, 9)):
        for name, make in figures(L, H).items():
            if only and name not in only:
                continue
            fig = make()
            problems = layout_problems(fig)
            fig.savefig(out / f"{name}_{L}L.png", dpi=100)
            plt.close(fig)
            print(f"{name}_{L}L: {len(problems)} problem(s)", *problems[:6], sep="\n   ")
