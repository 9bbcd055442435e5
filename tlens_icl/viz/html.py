"""Offline HTML: circuitsvis views with the JavaScript bundle inlined once per page, and role-coloured tokens.

circuitsvis' own ``local_src`` inlines its 1.3 MB bundle into every view and opens each view with a
self-closing ``<div .../>`` (HTML does not close it, so a second view on the page is swallowed by the
first). Here a page (or a Jupyter output) holds the bundle once, gzipped and base64-encoded (0.48 MB), in a
``<script>`` that unpacks it in the browser (``DecompressionStream``) and sets ``window.tlensCircuitsVis``, a
promise of ``window.CircuitsVis``; every view is a closed ``<div>`` plus a one-line render call on that promise.
Nothing is loaded from the network. Everything is styled under one class (:data:`SCOPE`), so a view in a
notebook styles itself and nothing else on the page.
"""

from __future__ import annotations

import html as _html
import json
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from torch import Tensor

#: One colour per token role (``tlens_icl.prompts.ROLES``), used by every token strip and legend.
ROLE_COLORS: dict[str, str] = {
    "pad": "#ffffff", "bos": "#c7c7c7", "separator": "#e8e8e8", "demo_input": "#9ecae1", "demo_output": "#fdae6b",
    "query_input": "#74c476", "answer_position": "#e377c2", "answer": "#f7b6d2",
}
ROLE_NAMES: dict[str, str] = {
    "pad": "padding", "bos": "BOS", "separator": "separator", "demo_input": "demo input (x)",
    "demo_output": "demo output (y)", "query_input": "query input (qx)", "answer_position": "answer position (ans)",
    "answer": "appended answer (teacher forcing)",
}


@lru_cache(maxsize=1)
def circuitsvis_bundle() -> str:
    """circuitsvis' browser bundle (``dist/cdn/iife.js``), safe to inline in a ``<script>``."""
    import circuitsvis

    path = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"
    return path.read_text(encoding="utf-8").replace("</script>", "<\\/script>")


#: Marks the one script that carries the bundle (tests count it: one per page or output).
BUNDLE_MARK = "tlens_icl: circuitsvis bundle"


@lru_cache(maxsize=1)
def circuitsvis_loader() -> str:
    """A ``<script>`` with the circuitsvis bundle gzipped and base64-encoded that defines ``window.tlensCircuitsVis``
    (a promise of ``window.CircuitsVis``; kept when the page already has it)."""
    import base64
    import gzip

    packed = base64.b64encode(gzip.compress(circuitsvis_bundle().encode("utf-8"), 9, mtime=0)).decode("ascii")
    return ("<script>/* " + BUNDLE_MARK + " (gzip, base64) */\n"
            "window.tlensCircuitsVis = window.tlensCircuitsVis || (async () => {\n"
            "  const bytes = Uint8Array.from(atob('" + packed + "'), c => c.charCodeAt(0));\n"
            "  const code = await new Response(new Blob([bytes]).stream()"
            ".pipeThrough(new DecompressionStream('gzip'))).text();\n"
            "  const s = document.createElement('script'); s.textContent = code; document.head.appendChild(s);\n"
            "  return window.CircuitsVis;\n})();\n</script>")


@dataclass(frozen=True)
class Component:
    """One circuitsvis view: the React component name and its props (JSON-able)."""

    name: str
    props: dict[str, Any]

    def html(self) -> str:
        from circuitsvis.utils.convert_props import convert_props

        div = f"circuits-vis-{uuid.uuid4().hex[:12]}"
        props = convert_props(self.props).replace("</", "<\\/")  # a token such as "</b>" cannot end the script
        return (f'<div id="{div}" class="cv-view"></div>\n'
                f'<script>window.tlensCircuitsVis.then(cv => cv.render("{div}", cv.{self.name}, {props}));</script>')


def attention_heads(pattern: Tensor, tokens: Sequence[str], head_names: Sequence[str]) -> Component:
    """circuitsvis ``AttentionHeads`` for patterns ``[heads, dest, src]``."""
    # 4 decimals: a pattern's JSON is a third of full float precision, and the view draws no finer shade
    return Component("AttentionHeads", {"attention": pattern.detach().double().cpu().round(decimals=4).tolist(),
                                        "tokens": list(tokens),
                                        "attentionHeadNames": list(head_names)})


def role_legend() -> str:
    """The role colours as an inline legend."""
    from tlens_icl.prompts.batch import ROLES

    chips = "".join(f'<span class="tok" style="background:{ROLE_COLORS[r]}">{_html.escape(ROLE_NAMES[r])}</span>'
                    for r in ROLES if r not in ("pad", "answer"))  # "answer" exists only in scoring batches
    return f'<div class="legend"><b>token roles:</b> {chips}</div>'


def role_tokens(str_tokens: Sequence[str], roles: Tensor | Sequence[int], *, legend: bool = True) -> str:
    """The prompt as a strip of tokens, each coloured by its role (plain HTML, no script)."""
    from tlens_icl.prompts.batch import ROLES

    spans = []
    for tok, r in zip(str_tokens, [int(x) for x in roles]):
        role = ROLES[r]
        text = _html.escape(tok.replace("\n", "\\n")) or "&nbsp;"
        spans.append(f'<span class="tok" title="{role}" style="background:{ROLE_COLORS[role]}">{text}</span>'
                     + ("<br>" if tok.endswith("\n") else ""))  # one demonstration per line
    return (role_legend() if legend else "") + f'<div class="tokens">{"".join(spans)}</div>'


#: Class of the element that holds tlens_icl HTML; every rule of :data:`STYLE` is scoped to it, so a view shown
#: in Jupyter styles itself and nothing else on the page.
SCOPE = "tlens-icl"

#: The look of tlens_icl HTML (report pages and views), every selector inside ``.tlens-icl``.
STYLE = """
.tlens-icl{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;line-height:1.45}
.tlens-icl h1{font-size:1.5em;margin-bottom:.2em}
.tlens-icl h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:3px;margin-top:1.8em}
.tlens-icl h3{font-size:1.02em;margin-bottom:.3em} .tlens-icl .muted{color:#666;font-size:.9em}
.tlens-icl table{border-collapse:collapse;font-size:.85em;margin:.4em 0 1em}
.tlens-icl td,.tlens-icl th{border:1px solid #ddd;padding:2px 7px;text-align:left;vertical-align:top}
.tlens-icl th{background:#f4f4f4} .tlens-icl td.num,.tlens-icl th.num{text-align:right;font-variant-numeric:tabular-nums}
.tlens-icl figure{margin:.6em 0 1.4em} .tlens-icl figure img{max-width:100%;height:auto;border:1px solid #eee}
.tlens-icl figcaption{font-size:.85em;color:#555}
.tlens-icl .tok{display:inline-block;padding:1px 4px;margin:1px;border-radius:3px;
 font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.82em;border:1px solid #0001}
.tlens-icl .legend{margin:.4em 0;font-size:.9em} .tlens-icl .tokens{margin:.3em 0 .8em;line-height:1.9}
.tlens-icl .cv-view{margin:12px 0} .tlens-icl details{margin:.5em 0} .tlens-icl summary{cursor:pointer}
.tlens-icl pre{background:#f7f7f7;padding:8px;overflow-x:auto;font-size:.82em}
"""
#: Page layout of a stand-alone page (never sent to Jupyter).
PAGE_STYLE = "body{max-width:1180px;margin:24px auto;padding:0 16px}"

_NUMERIC_TEXT = re.compile(r"^\s*[-+\u2212]?(\d[\d,]*\.?\d*(e[-+]?\d+)?%?|n/a|\u2013)"
                           r"(\s*[\u2013,]\s*[-+\u2212]?\d[\d,]*\.?\d*(e[-+]?\d+)?%?)?\s*$", re.IGNORECASE)


def _column_format(values: Sequence[float]) -> Callable[[float], str]:
    """One format for a whole float column: 3 decimals, or 3 significant digits in scientific notation when a
    value would read 0.000 (|x| < 5e-4) or is 1e5 or more."""
    import math

    finite = [abs(v) for v in values if math.isfinite(v) and v != 0]
    if finite and (min(finite) < 5e-4 or max(finite) >= 1e5):
        return lambda v: f"{v:.2e}"
    return lambda v: f"{v:.3f}"


def cell_text(value: Any, fmt: Callable[[float], str] | None) -> tuple[str, bool]:
    """``(text, is_number)`` of one table cell: floats by the column's format, NaN as n/a, lists joined."""
    import math
    from numbers import Integral, Real

    if isinstance(value, bool):
        return ("yes" if value else "no"), False
    if isinstance(value, Integral):
        return str(int(value)), True
    if isinstance(value, Real):
        v = float(value)
        if not math.isfinite(v):
            return "n/a", True
        return (fmt or _column_format([v]))(v), True
    if value is None:
        return "", False
    if isinstance(value, (list, tuple, set, frozenset)):
        return ", ".join(cell_text(x, None)[0] for x in value), False
    text = str(value)
    return text, bool(_NUMERIC_TEXT.match(text))


def table_html(df: Any, max_rows: int = 40) -> str:
    """A DataFrame as an HTML table: every float column in one format (:func:`_column_format`), NaN as ``n/a``,
    lists as comma-separated text, numbers right-aligned (``class="num"``) and text left-aligned; the index is
    shown unless it is a plain range; longer tables are cut to ``max_rows`` with a note.

    >>> import pandas as pd
    >>> from tlens_icl.viz.html import table_html
    >>> df = pd.DataFrame({"head": ["L1H2", "L0H3"], "effect": [0.25, float("nan")], "n": [16, 16]})
    >>> print(table_html(df).replace("<tr>", "\\n<tr>"))
    <table><thead>
    <tr><th>head</th><th class="num">effect</th><th class="num">n</th></tr></thead><tbody>
    <tr><td>L1H2</td><td class="num">0.250</td><td class="num">16</td></tr>
    <tr><td>L0H3</td><td class="num">n/a</td><td class="num">16</td></tr></tbody></table>
    >>> table_html(pd.DataFrame({"x": range(5)}), max_rows=2).split("</table>")[1]   # the note after a cut table
    "<div class='muted'>... 3 more rows (see the CSV)</div>"
    """
    import pandas as pd

    more = len(df) - max_rows
    shown = df.head(max_rows)
    plain_index = isinstance(df.index, pd.RangeIndex)
    if not plain_index:
        shown = shown.reset_index()
    cols = list(shown.columns)
    label = lambda c: " ".join(map(str, c)) if isinstance(c, tuple) else str(c)  # noqa: E731
    formats: dict[int, Any] = {}
    for j in range(len(cols)):
        col = shown.iloc[:, j]
        if pd.api.types.is_float_dtype(col.dtype):
            formats[j] = _column_format([float(x) for x in col])
    body, numeric = [], [True] * len(cols)
    columns = [shown.iloc[:, j].tolist() for j in range(len(cols))]  # by column: iterrows would make ints floats
    for row in zip(*columns):
        cells = [cell_text(v, formats.get(j)) for j, v in enumerate(row)]
        for j, (text, is_num) in enumerate(cells):
            numeric[j] = numeric[j] and (is_num or not text)
        body.append(cells)
    num = ' class="num"'
    corner = df.columns.name if (df.columns.name and not plain_index) else None
    head = "".join(f"<th{num if numeric[j] else ''}>{_html.escape(corner if (j == 0 and corner) else label(c))}</th>"
                   for j, c in enumerate(cols))
    rows = "".join("<tr>" + "".join(f"<td{num if (is_num and text) else ''}>{_html.escape(text)}</td>"
                                    for text, is_num in cells) + "</tr>" for cells in body)
    note = f"<div class='muted'>... {more} more rows (see the CSV)</div>" if more > 0 else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>{note}"



@dataclass(frozen=True)
class HTMLView:
    """A piece of offline HTML (text and circuitsvis views) that Jupyter renders and ``save`` writes as a page.

    ``parts`` are HTML strings or :class:`Component` s. The circuitsvis bundle is inlined once per page
    (and once per notebook output), never once per view.
    """

    parts: tuple[str | Component, ...]
    title: str = "tlens_icl"
    description: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def body(self, *, bundle: bool = True) -> str:
        """The HTML of the parts; ``bundle=False`` leaves the circuitsvis bundle out (the page has it)."""
        views = any(isinstance(p, Component) for p in self.parts)
        out = [circuitsvis_loader()] if bundle and views else []
        out += [p.html() if isinstance(p, Component) else p for p in self.parts]
        return "\n".join(out)

    def page(self) -> str:
        """A complete, self-contained HTML document."""
        return page(self.title, self.body())

    def save(self, path: str | Path) -> Path:
        """Write :meth:`page` to ``path`` (parent folders are created)."""
        return write_html(self.page(), path)

    def _repr_html_(self) -> str:
        return f'<div class="{SCOPE}"><style>{STYLE}</style>\n{self.body()}\n</div>'

    def __repr__(self) -> str:
        n = sum(isinstance(p, Component) for p in self.parts)
        return f"<HTMLView {self.title!r}: {self.description or f'{n} circuitsvis view(s)'}; .save(path) writes it>"


def page(title: str, body: str) -> str:
    """A complete HTML document with the shared style sheet."""
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{_html.escape(title)}</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{PAGE_STYLE}{STYLE}</style>"
            f"</head>\n<body class='{SCOPE}'>\n{body}\n</body></html>\n")


def write_html(html: str, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path


def to_json(value: Any) -> str:
    return json.dumps(value, default=str)


__all__ = ["BUNDLE_MARK", "Component", "HTMLView", "ROLE_COLORS", "SCOPE", "STYLE", "attention_heads", "cell_text",
           "circuitsvis_bundle", "circuitsvis_loader", "page",
           "role_legend", "role_tokens", "table_html", "write_html"]
