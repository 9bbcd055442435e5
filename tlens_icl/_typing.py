"""Shared types: the model protocol, head identifiers and tensor aliases."""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable


@runtime_checkable
class TransformerLensModel(Protocol):
    """What tlens_icl needs from a model: TransformerLens's structural model surface.

    The same members as ``transformer_lens.model_protocol.TransformerLensModel`` (TransformerLens 4),
    defined here because TransformerLens 3 has no such module. A ``TransformerBridge`` (3.x and 4.x),
    a TransformerLens 3 ``HookedTransformer`` and another project's wrapper all satisfy it.
    Model-family differences are handled in :mod:`tlens_icl.models.adapter`.
    """

    @property
    def cfg(self) -> Any: ...

    def run_with_cache(self, *args: Any, **kwargs: Any) -> Any: ...

    def run_with_hooks(self, *args: Any, **kwargs: Any) -> Any: ...

    def to_tokens(self, *args: Any, **kwargs: Any) -> Any: ...


#: Any object satisfying :class:`TransformerLensModel`. tlens_icl never subclasses TransformerLens classes.
ModelLike = TransformerLensModel


class Head(NamedTuple):
    """An attention head, labelled ``L{layer}H{head}`` as in TransformerLens.

    >>> import torch
    >>> from tlens_icl import Head
    >>> h = Head(layer=3, head=1)
    >>> str(h), h.layer, h.head
    ('L3H1', 3, 1)
    >>> h == (3, 1)                                 # a plain tuple underneath,
    True
    >>> effects = torch.arange(8.0).reshape(4, 2)   # so it indexes a [layer, head] tensor
    >>> float(effects[h])
    7.0
    """

    layer: int
    head: int

    def __str__(self) -> str:
        return f"L{self.layer}H{self.head}"
