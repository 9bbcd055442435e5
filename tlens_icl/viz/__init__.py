"""Figures (matplotlib) and offline HTML (circuitsvis). Nothing here computes an analysis."""

from tlens_icl.viz.plots import (
                                 accuracy_curve,
                                 attention_view,
                                 head_heatmap,
                                 line_plot,
                                 offline_html,
                                 role_colored_tokens,
                                 stack_roles_legend,
                                 write_html,
)

__all__ = ["accuracy_curve", "attention_view", "head_heatmap", "line_plot", "offline_html", "role_colored_tokens",
           "stack_roles_legend", "write_html"]
