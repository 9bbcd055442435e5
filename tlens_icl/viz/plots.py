"""Plots (matplotlib) and offline circuitsvis HTML. Nothing here computes analyses."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor


def _ax(ax: Any, figsize: tuple[float, float] = (5, 3.5)) -> tuple[Any, Any]:
    import matplotlib

    if matplotlib.get_backend().lower() not in {"agg", "module://matplotlib_inline.backend_inline"}:
        try:
            matplotlib.use("Agg") if not _in_notebook() else None
        except Exception:  # noqa: BLE001
            pass
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython

        return get_ipython() is not None
    except ImportError:
        return False


def accuracy_curve(result: Any, ax: Any = None) -> Any:
    """Accuracy vs number of shots, one line per task (from an ``AccuracyResult``)."""
    fig, ax = _ax(ax)
    acc = result.accuracy()
    for i, task in enumerate(result.tasks):
        ax.plot(result.n_shots, acc[i].tolist(), marker="o", label=task)
    ax.set_xlabel("shots")
    metric = getattr(result, "metric", "first_token")
    ax.set_ylabel({"exact_match": "exact match (whole answer)", "first_token": "first-token top-1 accuracy"}.get(
        metric, metric))
    ax.set_ylim(-0.02, 1.02)
    if len(result.tasks) <= 12:
        ax.legend(fontsize=7)
    return fig


def head_heatmap(values: Tensor, *, title: str = "", marked: Sequence[tuple[int, int]] = (), ax: Any = None,
                 cmap: str = "RdBu_r", label: str = "") -> Any:
    """A layer x head heatmap centred at zero, with ``marked`` heads outlined (NaN cells left blank)."""
    import matplotlib.patches as patches

    fig, ax = _ax(ax, (1 + 0.45 * values.shape[1], 1 + 0.4 * values.shape[0]))
    lim = float(values.abs().nan_to_num(0.0).max()) or 1.0
    im = ax.imshow(values.float().numpy(), cmap=cmap, vmin=-lim, vmax=lim, aspect="auto")
    for layer, head in marked:
        ax.add_patch(patches.Rectangle((head - 0.5, layer - 0.5), 1, 1, fill=False, lw=2, ec="black"))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label=label)
    return fig


def line_plot(x: Sequence[Any], ys: dict[str, Sequence[float]], *, xlabel: str, ylabel: str, title: str = "",
              ax: Any = None, hline: float | None = None) -> Any:
    fig, ax = _ax(ax)
    for name, y in ys.items():
        ax.plot(list(x), list(y), marker="o", label=name)
    if hline is not None:
        ax.axhline(hline, ls="--", c="gray", lw=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(ys) > 1:
        ax.legend(fontsize=7)
    return fig


# ---- circuitsvis, offline ------------------------------------------------------------------------------
_SELF_CLOSING = re.compile(r'(<div id="circuits-vis-[^"]+" style="[^"]*")\s*/>')


def offline_html(*rendered: Any, title: str = "tlens_icl") -> str:
    """One self-contained page from circuitsvis renders (inline JS; no CDN; several per page work)."""
    body = "".join(_SELF_CLOSING.sub(r"\1></div>", r.local_src, count=1) for r in rendered)
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title></head><body>{body}</body></html>"


def role_colored_tokens(str_tokens: Sequence[str], roles: Tensor) -> Any:
    """circuitsvis coloured tokens where colour = token role (see ``tlens_icl.prompts.ROLES``)."""
    import circuitsvis as cv

    return cv.tokens.colored_tokens(tokens=list(str_tokens), values=roles.float().tolist(), min_value=0, max_value=6)


def attention_view(pattern: Tensor, str_tokens: Sequence[str], head_names: Sequence[str]) -> Any:
    """circuitsvis ``attention_heads`` for patterns ``[heads, dest, src]``."""
    import circuitsvis as cv

    return cv.attention.attention_heads(attention=pattern, tokens=list(str_tokens), attention_head_names=list(head_names))


def write_html(html: str, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path


def stack_roles_legend() -> str:
    from tlens_icl.prompts.batch import ROLES

    return ", ".join(f"{i}={r}" for i, r in enumerate(ROLES))


__all__ = ["accuracy_curve", "head_heatmap", "line_plot", "offline_html", "role_colored_tokens", "attention_view",
           "write_html", "stack_roles_legend"]
