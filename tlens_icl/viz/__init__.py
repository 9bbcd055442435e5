"""Figures (matplotlib), offline HTML (circuitsvis, bundle inlined once) and the per-run report page.

Everything here takes tensors, labels and strings; nothing computes an analysis or knows a result class.
"""

from tlens_icl.viz.html import HTMLView, ROLE_COLORS, attention_heads, role_legend, role_tokens, write_html
from tlens_icl.viz.plots import (
    curves,
    figure_png,
    grouped_bars,
    head_heatmap,
    heatmap_panels,
    line_plot,
    new_figure,
    position_heatmap,
    scatter_labelled,
    sweep_panels,
)
from tlens_icl.viz.report import ReportFigure, ReportSection, render_report

__all__ = ["HTMLView", "ROLE_COLORS", "ReportFigure", "ReportSection", "attention_heads", "curves", "figure_png",
           "grouped_bars", "head_heatmap", "heatmap_panels", "line_plot", "new_figure", "position_heatmap",
           "render_report", "role_legend", "role_tokens", "scatter_labelled", "sweep_panels", "write_html"]
