"""Offline HTML: circuitsvis views with the JavaScript bundle inlined once per page, and role-coloured tokens.

circuitsvis' own ``local_src`` inlines its 1.3 MB bundle into every view and opens each view with a
self-closing ``<div .../>`` (HTML does not close it, so a second view on the page is swallowed by the
first). Here a page holds the bundle once in a classic ``<script>`` (it defines ``window.CircuitsVis``);
every view is a closed ``<div>`` plus a one-line ``CircuitsVis.render(...)`` call. Nothing is loaded
from the network.
"""

from __future__ import annotations

import html as _html
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from torch import Tensor

#: One colour per token role (``tlens_icl.prompts.ROLES``), used by every token strip and legend.
ROLE_COLORS: dict[str, str] = {
    "pad": "#ffffff", "bos": "#c7c7c7", "separator": "#e8e8e8", "demo_input": "#9ecae1", "demo_output": "#fdae6b",
    "query_input": "#74c476", "answer_position": "#e377c2",
}
ROLE_NAMES: dict[str, str] = {
    "pad": "padding", "bos": "BOS", "separator": "separator", "demo_input": "demo input (x)",
    "demo_output": "demo output (y)", "query_input": "query input (qx)", "answer_position": "answer position (ans)",
}


@lru_cache(maxsize=1)
def circuitsvis_bundle() -> str:
    """circuitsvis' browser bundle (``dist/cdn/iife.js``), safe to inline in a ``<script>``."""
    import circuitsvis

    path = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"
    return path.read_text(encoding="utf-8").replace("</script>", "<\\/script>")


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
                f'<script>CircuitsVis.render("{div}", CircuitsVis.{self.name}, {props});</script>')


def attention_heads(pattern: Tensor, tokens: Sequence[str], head_names: Sequence[str]) -> Component:
    """circuitsvis ``AttentionHeads`` for patterns ``[heads, dest, src]``."""
    return Component("AttentionHeads", {"attention": pattern.detach().float().cpu(), "tokens": list(tokens),
                                        "attentionHeadNames": list(head_names)})


def role_legend() -> str:
    """The role colours as an inline legend."""
    from tlens_icl.prompts.batch import ROLES

    chips = "".join(f'<span class="tok" style="background:{ROLE_COLORS[r]}">{_html.escape(ROLE_NAMES[r])}</span>'
                    for r in ROLES if r != "pad")
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


STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1180px;margin:24px auto;
 padding:0 16px;color:#222;line-height:1.45}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:3px;margin-top:1.8em}
h3{font-size:1.02em;margin-bottom:.3em} .muted{color:#666;font-size:.9em}
table{border-collapse:collapse;font-size:.85em;margin:.4em 0 1em} td,th{border:1px solid #ddd;padding:2px 7px;text-align:right}
th{background:#f4f4f4} td:first-child,th:first-child{text-align:left}
figure{margin:.6em 0 1.4em} figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#555} .tok{display:inline-block;padding:1px 4px;margin:1px;border-radius:3px;
 font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.82em;border:1px solid #0001}
.legend{margin:.4em 0;font-size:.9em} .tokens{margin:.3em 0 .8em;line-height:1.9} .cv-view{margin:12px 0}
pre{background:#f7f7f7;padding:8px;overflow-x:auto;font-size:.82em}
"""


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
        out = [f"<script>{circuitsvis_bundle()}</script>"] if bundle and views else []
        out += [p.html() if isinstance(p, Component) else p for p in self.parts]
        return "\n".join(out)

    def page(self) -> str:
        """A complete, self-contained HTML document."""
        return page(self.title, self.body())

    def save(self, path: str | Path) -> Path:
        """Write :meth:`page` to ``path`` (parent folders are created)."""
        return write_html(self.page(), path)

    def _repr_html_(self) -> str:
        return f"<style>{STYLE}</style>" + self.body()

    def __repr__(self) -> str:
        n = sum(isinstance(p, Component) for p in self.parts)
        return f"<HTMLView {self.title!r}: {self.description or f'{n} circuitsvis view(s)'}; .save(path) writes it>"


def page(title: str, body: str) -> str:
    """A complete HTML document with the shared style sheet."""
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{_html.escape(title)}</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{STYLE}</style></head>\n"
            f"<body>\n{body}\n</body></html>\n")


def write_html(html: str, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path


def to_json(value: Any) -> str:
    return json.dumps(value, default=str)


__all__ = ["Component", "HTMLView", "ROLE_COLORS", "attention_heads", "circuitsvis_bundle", "page", "role_legend",
           "role_tokens", "write_html"]
