"""Shared types: the model protocol, head identifiers and tensor aliases."""

from __future__ import annotations

from typing import NamedTuple

from transformer_lens.model_protocol import TransformerLensModel

#: Any object satisfying TransformerLens's structural model protocol (a ``TransformerBridge``,
#: or another project's wrapper). tlens_icl never subclasses TransformerLens classes.
ModelLike = TransformerLensModel


class Head(NamedTuple):
    """An attention head, labelled ``L{layer}H{head}`` as in TransformerLens."""

    layer: int
    head: int

    def __str__(self) -> str:
        return f"L{self.layer}H{self.head}"
