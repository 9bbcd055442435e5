"""Prompt templates: how demonstrations and the query are written out.

A prompt is ``demo_1 + separator + ... + demo_n + separator + query`` where
``demo = input_prefix + input + input_suffix + answer_prefix + output`` and
``query = input_prefix + input + input_suffix``; the model should continue with
``answer_prefix + output``.
"""

from __future__ import annotations

from dataclasses import dataclass

from tlens_icl.errors import TlensICLError


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    input_prefix: str = ""
    input_suffix: str = " ->"
    answer_prefix: str = " "
    separator: str = "\n"

    def render_demo(self, x: str, y: str) -> str:
        return f"{self.input_prefix}{x}{self.input_suffix}{self.answer_prefix}{y}"

    def render_query(self, x: str) -> str:
        return f"{self.input_prefix}{x}{self.input_suffix}"


#: Todd et al. (function vectors): ``Q: x\nA: y\n\n``.
QA = PromptTemplate("qa", input_prefix="Q: ", input_suffix="\nA:", answer_prefix=" ", separator="\n\n")
#: Hendel et al. (task vectors): ``x -> y`` one per line. The embedded models are trained on it.
ARROW = PromptTemplate("arrow", input_prefix="", input_suffix=" ->", answer_prefix=" ", separator="\n")

_TEMPLATES: dict[str, PromptTemplate] = {"qa": QA, "arrow": ARROW}


def get_template(template: str | PromptTemplate) -> PromptTemplate:
    if isinstance(template, PromptTemplate):
        return template
    if template not in _TEMPLATES:
        raise TlensICLError(f"Unknown template {template!r}; known: {sorted(_TEMPLATES)} or pass a PromptTemplate.")
    return _TEMPLATES[template]


def register_template(template: PromptTemplate) -> PromptTemplate:
    """Make a user template available by name."""
    _TEMPLATES[template.name] = template
    return template
