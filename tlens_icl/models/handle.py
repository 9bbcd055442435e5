"""A model resolved once: :func:`resolve_model` checks a model and reads what the engine needs to know of it.

Every public entry point resolves its ``model`` argument once, at its boundary (``@checked`` in
:mod:`tlens_icl._validate` calls :func:`resolve_model`): it must be a TransformerLens model (not a name) in
evaluation mode. The first time a model object is seen its :class:`~tlens_icl.models.adapter.Capabilities`
are measured and kept for the life of the object, and the version fixes of :mod:`tlens_icl.models.fixes` are
installed (``load_model`` installs them too). Below the boundary nothing re-validates the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from tlens_icl import _validate
from tlens_icl._typing import ModelLike
from tlens_icl.models.adapter import Capabilities, capabilities, device_of, dtype_of


@dataclass(frozen=True, eq=False)
class ModelHandle:
    """What the engine needs to know of a model, read once per call: its family and capabilities (what its
    forward accepts), the device its inputs go to, the dtype of its weights, whether a driver runs it remotely,
    and its name. ``model`` is the model itself."""

    model: Any
    capabilities: Capabilities
    device: torch.device
    dtype: torch.dtype
    name: str

    @property
    def family(self) -> str:
        return self.capabilities.family

    @property
    def remote(self) -> bool:
        return self.capabilities.family == "remote"


def resolve_model(model: ModelLike, operation: str = "this function") -> ModelHandle:
    """``model`` checked (a loaded TransformerLens model, in eval mode) and resolved into a :class:`ModelHandle`.

    Raises:
        TlensICLError: ``model`` is a name or not a TransformerLens model.
        ModelStateError: the model is in training mode.
    """
    _validate.model(model, operation)
    name = getattr(getattr(model, "cfg", None), "model_name", None) or type(model).__name__
    return ModelHandle(model, capabilities(model), device_of(model), dtype_of(model), str(name))


__all__ = ["ModelHandle", "resolve_model"]
