"""The per-run ``index.html``: one offline page with the summary, every figure, attention views and the raw files.

Built from plain pieces (text, HTML tables, PNG bytes, :class:`~tlens_icl.viz.html.HTMLView` s); it knows
no analysis. Figures are embedded as ``data:`` PNGs and the circuitsvis bundle is inlined once, so the page
can be opened offline and sent on its own; the raw files are linked relative to the page.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html as _html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlens_icl.viz.html import HTMLView, cell_text, circuitsvis_loader, page, role_legend


@dataclass
class ReportFigure:
    """A figure of the report: PNG bytes, a caption, and the file it was saved to (linked when given)."""

    png: bytes
    caption: str
    file: str | None = None


@dataclass
class ReportSection:
    """A heading with text, tables (HTML), figures and HTML views, in that order."""

    heading: str
    text: str = ""
    tables: list[tuple[str, str]] = field(default_factory=list)
    figures: list[ReportFigure] = field(default_factory=list)
    views: list[HTMLView] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def _href(rel: str) -> str:
    """A relative link to ``rel`` as an ``href`` value: percent-encoded (a file named ``a%2Fb`` is linked as
    ``a%252Fb``), then HTML-escaped."""
    from urllib.parse import quote

    return _html.escape(quote(rel, safe="/"))


def _link(rel: str, text: str | None = None) -> str:
    return f'<a href="{_href(rel)}">{_html.escape(rel if text is None else text)}</a>'


def _figure_html(f: ReportFigure) -> str:
    src = "data:image/png;base64," + base64.b64encode(f.png).decode()
    link = f" ({_link(f.file)})" if f.file else ""
    return (f'<figure><img src="{src}" alt="{_html.escape(f.caption)}">'
            f"<figcaption>{_html.escape(f.caption)}{link}</figcaption></figure>")


def _settings_html(settings: Mapping[str, Any]) -> str:
    rows, num = [], ' class="num"'
    for k, v in settings.items():
        text, is_num = cell_text(v, None)
        rows.append(f"<tr><th>{_html.escape(str(k))}</th><td{num if is_num else ''}>"
                    f"{_html.escape(text)}</td></tr>")
    return f"<table class='settings'>{''.join(rows)}</table>"


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


#: Folders under a report's folder listed as one link (their files are internal: e.g. resumable units of work).
FOLDERS = {"checkpoint": "the resumable run's finished units of work (reused by --resume)"}


def _files_html(out: Path, files: Sequence[str]) -> str:
    items, folders = [], {}
    for rel in files:
        top = rel.split("/", 1)[0]
        if top in FOLDERS and "/" in rel:
            n, size = folders.get(top, (0, 0))
            folders[top] = (n + 1, size + ((out / rel).stat().st_size if (out / rel).exists() else 0))
            continue
        p = out / rel
        size = p.stat().st_size if p.exists() else 0
        items.append(f'<li>{_link(rel)} <span class="muted">{_size(size)}</span></li>')
    for top, (n, size) in folders.items():
        items.append(f'<li>{_link(top + "/", top + "/")} <span class="muted">{n} files, {_size(size)}: '
                     f"{_html.escape(FOLDERS[top])}</span></li>")
    return "<ul>" + "".join(items) + "</ul>"


def render_report(
    out: str | Path, *, title: str, subtitle: str = "", settings: Mapping[str, Any] | None = None,
    sections: Sequence[ReportSection] = (), files: Sequence[str] | None = None, footer: str = "",
) -> str:
    """The HTML of ``out/index.html``. ``files`` (paths relative to ``out``; default: every file under it)
    are listed with links; the circuitsvis bundle is included once if any section has a view."""
    out = Path(out)
    if files is None:
        files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != "index.html")
    body = [f"<h1>{_html.escape(title)}</h1>"]
    if subtitle:
        body.append(f"<p class='muted'>{_html.escape(subtitle)}</p>")
    toc = "".join(f'<li><a href="#s{i}">{_html.escape(s.heading)}</a></li>' for i, s in enumerate(sections))
    body.append(f"<ul class='toc'>{toc}<li><a href='#settings'>Task and settings</a></li>"
                "<li><a href='#files'>Raw files</a></li></ul>")
    if any(s.views for s in sections):
        body.append(circuitsvis_loader())
    for i, s in enumerate(sections):
        body.append(f'<h2 id="s{i}">{_html.escape(s.heading)}</h2>')
        if s.text:
            body.append(f"<p>{s.text}</p>")
        for caption, table in s.tables:
            body.append((f"<h3>{_html.escape(caption)}</h3>" if caption else "") + table)
        body += [_figure_html(f) for f in s.figures]
        for j, v in enumerate(s.views):  # several views: the first shown, the others folded (click to open)
            about = f"<p class='muted'>{_html.escape(v.description)}</p>" if v.description else ""
            if j == 0:
                body.append(f"<h3>{_html.escape(v.title)}</h3>{about}{v.body(bundle=False)}")
            else:
                body.append(f"<details><summary><b>{_html.escape(v.title)}</b> (click to open)</summary>{about}"
                            f"{v.body(bundle=False)}</details>")
        if s.files:
            body.append("<p class='muted'>files: " + ", ".join(_link(f) for f in s.files) + "</p>")
    body.append("<h2 id='settings'>Task and settings</h2>" + _settings_html(settings or {}))
    body.append(f"<h2 id='files'>Raw files</h2><p class='muted'>relative to this page ({_html.escape(str(out))})</p>"
                + _files_html(out, files))
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    body.append(f"<p class='muted'>written {stamp} by tlens_icl{(' - ' + _html.escape(footer)) if footer else ''}</p>")
    return page(title, "\n".join(body))


__all__ = ["ReportFigure", "ReportSection", "render_report", "role_legend"]
