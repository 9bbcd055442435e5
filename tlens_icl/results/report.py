"""Results into the per-run ``index.html``: export a result and turn it into a report section.

``tlens-icl run`` and every analysis subcommand with ``--out`` write their results with
:func:`export_section` and finish with :func:`write_index`.
"""

from __future__ import annotations

import html as _html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tlens_icl.results.base import Result
from tlens_icl.viz.html import HTMLView, table_html
from tlens_icl.viz.report import ReportFigure, ReportSection, render_report


def export_section(result: Result, out: str | Path, folder: str, name: str, *, heading: str | None = None,
                   text: str = "", **plot_kwargs: Any) -> ReportSection:
    """``result.export(out/folder, name)`` and a report section showing its summary, table and figures."""
    out = Path(out)
    target = out / folder if folder else out
    result.export(target, name, overwrite=True, **plot_kwargs)  # the caller owns out (the CLI checked --out)
    rel = (lambda f: f"{folder}/{f}") if folder else (lambda f: f)
    figures = [ReportFigure(p.read_bytes(), f"{result.title}: {p.stem}", rel(p.name))
               for p in sorted(target.glob(f"{name}*.png"))]
    files = [rel(f) for f in ("meta.json", "tensors.safetensors", f"{name}.csv") if (target / f).exists()]
    summary = _html.escape(result.summary())
    return ReportSection(heading or result.title, (text + " " if text else "") + summary,
                         tables=[("", table_html(result.display_table()))], figures=figures, files=files)


def table_section(heading: str, tables: Mapping[str, Any], *, text: str = "", figures: Sequence[ReportFigure] = (),
                  files: Sequence[str] = (), views: Sequence[HTMLView] = ()) -> ReportSection:
    """A section of DataFrames (caption -> DataFrame), figures and HTML views."""
    return ReportSection(heading, text, [(c, table_html(df)) for c, df in tables.items()], list(figures),
                         list(views), list(files))


def write_index(out: str | Path, *, title: str, sections: Sequence[ReportSection], settings: Mapping[str, Any],
                subtitle: str = "") -> Path:
    """Write ``out/index.html``: the sections, the task and settings, and links to every file under ``out``."""
    out = Path(out)
    path = out / "index.html"
    path.write_text(render_report(out, title=title, subtitle=subtitle, settings=settings, sections=sections),
                    encoding="utf-8")
    return path


__all__ = ["export_section", "table_section", "write_index"]
