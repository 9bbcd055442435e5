"""Steering-vector interchange: a function or task vector as a plain ``(hook_name, tensor)`` pair.

Any TransformerLens project (TL 3 ``HookedTransformer`` or a bridge, TL 3 or 4) can apply a
:class:`SteeringVector` with its own ``run_with_hooks`` - no tlens_icl needed at that point::

    hook_name, vector = sv                        # a plain pair; hook_name in SAELens's convention
    model.run_with_hooks(tokens, fwd_hooks=[sv.as_hook()])   # or write the hook yourself

``hook_name`` uses TransformerLens's alias names (``blocks.{layer}.hook_resid_post``), the same
convention as SAELens's ``sae.cfg.metadata.hook_name``, so a vector and an SAE trained at that hook
meet at the same point. ``operation`` says how the vector acts: ``"add"`` (function vectors, Todd et
al.: ``resid += coeff * vector``) or ``"replace"`` (task vectors, Hendel et al.: ``resid := vector``);
``position`` is ``"last"`` (the query of an unpadded prompt), ``"all"``, or an integer position.

Files: one ``.safetensors`` file holding the tensor ``vector`` and, in its header, the JSON document
``tlens_icl_steering`` (hook name, operation, coefficient, position, provenance). :meth:`SteeringVector.load`
validates both before returning, and against a model when one is given.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import torch
from jaxtyping import Float
from torch import Tensor

from tlens_icl import _validate as _validate_module
from tlens_icl._typing import ModelLike
from tlens_icl.engine import hooks
from tlens_icl.errors import TlensICLError

FORMAT = "tlens_icl.steering_vector"
FORMAT_VERSION = 1
Operation = Literal["add", "replace"]
SteerPosition = Union[Literal["last", "all"], int]
_RESID = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|post)$")


@dataclass(frozen=True)
class SteeringVector:
    """A vector at one TransformerLens hook: ``(hook_name, vector)`` plus how to apply it.

    Iterates as the plain pair ``(hook_name, vector)``. Sign convention: ``"add"`` adds
    ``coeff * vector`` (positive = toward the task); ``"replace"`` writes ``coeff * vector``.
    """

    hook_name: str
    vector: Float[Tensor, " d_model"]
    operation: Operation = "add"
    coeff: float = 1.0
    position: SteerPosition = "last"
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _validate(self.hook_name, self.vector, self.operation, self.coeff, self.position)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter((self.hook_name, self.vector))

    @property
    def layer(self) -> int:
        """The block the hook belongs to."""
        return int(_RESID.match(self.hook_name).group(1))  # type: ignore[union-attr]

    @property
    def site(self) -> str:
        """``"resid_pre"`` or ``"resid_post"``."""
        return "resid_" + _RESID.match(self.hook_name).group(2)  # type: ignore[union-attr]

    def hook_fn(self, *, coeff: float | None = None, position: SteerPosition | None = None) -> Callable[..., Tensor]:
        """The TransformerLens hook function ``(act, hook) -> act`` that applies the vector."""
        c = self.coeff if coeff is None else float(coeff)
        pos = self.position if position is None else position
        vec, op = self.vector, self.operation

        def steer(act: Tensor, hook: Any) -> Tensor:
            out = act.clone()
            idx = (slice(None), slice(None)) if pos == "all" else (slice(None), -1 if pos == "last" else int(pos))
            v = (c * vec).to(device=act.device, dtype=act.dtype)
            out[idx] = out[idx] + v if op == "add" else v.expand_as(out[idx])
            return out

        return steer

    def as_hook(self, **kwargs: Any) -> tuple[str, Callable[..., Tensor]]:
        """``(hook_name, hook_fn)`` for ``model.run_with_hooks(tokens, fwd_hooks=[sv.as_hook()])``."""
        return self.hook_name, self.hook_fn(**kwargs)

    def check_model(self, model: ModelLike) -> "SteeringVector":
        """Raise unless the model has this hook and ``d_model == len(vector)``; returns self."""
        if self.vector.shape[0] != int(model.cfg.d_model):
            raise TlensICLError(f"The steering vector has {self.vector.shape[0]} dims but the model's d_model is "
                                f"{model.cfg.d_model}.")
        if self.layer >= int(model.cfg.n_layers):
            raise TlensICLError(f"{self.hook_name} is past the model's {model.cfg.n_layers} layers.")
        hooks.require_hooks(model, [self.hook_name])
        return self

    # ---- files ---------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write one ``.safetensors`` file: tensor ``vector`` and the JSON header ``tlens_icl_steering``."""
        from safetensors.torch import save_file

        path = _validate_module.path_arg(path, "path", where="SteeringVector.save(): ")
        if path.suffix != ".safetensors":
            path = path.with_suffix(".safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"format": FORMAT, "version": FORMAT_VERSION, "hook_name": self.hook_name, "operation": self.operation,
               "coeff": self.coeff, "position": self.position, "d_model": int(self.vector.shape[0]),
               "metadata": _jsonable(self.metadata)}
        save_file({"vector": self.vector.detach().float().cpu().contiguous()}, str(path),
                  metadata={"tlens_icl_steering": json.dumps(doc)})
        return path

    @classmethod
    def load(cls, path: str | Path, model: ModelLike | None = None) -> "SteeringVector":
        """Read a file written by :meth:`save`; validates the header, the tensor and (optionally) the model."""
        from safetensors import safe_open

        path = _validate_module.path_arg(path, "path", where="SteeringVector.load(): ")
        if not path.is_file():
            raise TlensICLError(f"No steering-vector file at {path}.")
        try:
            with safe_open(str(path), framework="pt") as f:
                header = (f.metadata() or {}).get("tlens_icl_steering")
                names = list(f.keys())
                vector = f.get_tensor("vector") if "vector" in names else None
        except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
            raise TlensICLError(f"{path} is not a readable safetensors file: {e}") from e
        if header is None or vector is None or names != ["vector"]:
            raise TlensICLError(f"{path} is not a tlens_icl steering vector (needs exactly one tensor 'vector' and a "
                                "'tlens_icl_steering' header).")
        try:
            doc = json.loads(header)
        except json.JSONDecodeError as e:
            raise TlensICLError(f"{path}: the steering header is not JSON: {e}") from e
        if doc.get("format") != FORMAT or doc.get("version") != FORMAT_VERSION:
            raise TlensICLError(f"{path}: unknown format {doc.get('format')!r} version {doc.get('version')!r}.")
        if vector.dim() != 1 or doc.get("d_model") != vector.shape[0]:
            raise TlensICLError(f"{path}: the header says d_model={doc.get('d_model')} but the tensor has shape "
                                f"{list(vector.shape)}.")
        _validate(doc.get("hook_name"), vector, doc.get("operation"), doc.get("coeff"), doc.get("position"))
        sv = cls(hook_name=doc.get("hook_name"), vector=vector, operation=doc.get("operation"),
                 coeff=doc.get("coeff"), position=doc.get("position"), metadata=doc.get("metadata") or {})
        return sv.check_model(model) if model is not None else sv


def _validate(hook_name: Any, vector: Any, operation: Any, coeff: Any, position: Any) -> None:
    if not isinstance(hook_name, str) or not _RESID.match(hook_name):
        raise TlensICLError(f"hook_name must be 'blocks.<layer>.hook_resid_pre' or '...hook_resid_post', "
                            f"got {hook_name!r}.")
    if not isinstance(vector, Tensor) or vector.dim() != 1 or not vector.is_floating_point():
        raise TlensICLError("vector must be a 1-D floating-point [d_model] tensor.")
    if not bool(vector.isfinite().all()):
        raise TlensICLError("vector holds NaN or infinite values.")
    if operation not in ("add", "replace"):
        raise TlensICLError(f"operation must be 'add' or 'replace', got {operation!r}.")
    if isinstance(coeff, bool) or not isinstance(coeff, (int, float)) or not torch.isfinite(torch.tensor(float(coeff))):
        raise TlensICLError(f"coeff must be a finite number, got {coeff!r}.")
    if position not in ("last", "all") and (isinstance(position, bool) or not isinstance(position, int)):
        raise TlensICLError(f"position must be 'last', 'all' or an int, got {position!r}.")


def _jsonable(v: Any) -> Any:
    return json.loads(json.dumps(v, default=str))


def steering_vector(
    vector: Any, *, layer: int | None = None, site: str = "resid_post", operation: Operation | None = None,
    coeff: float = 1.0, position: SteerPosition = "last",
) -> SteeringVector:
    """A :class:`SteeringVector` from a :class:`FunctionVector`, :class:`TaskVector` or a ``[d_model]`` tensor.

    ``layer`` defaults to the vector's chosen layer. ``operation`` defaults to how the method applies its
    vector: ``"add"`` for function vectors and tensors, ``"replace"`` for task vectors (Hendel et al.).
    """
    from tlens_icl.analyses.vectors.common import resid_hook_name

    layer = layer if layer is not None else getattr(vector, "layer", None)
    if layer is None:
        raise TlensICLError("steering_vector needs layer=... (the vector has no chosen layer).")
    kind = type(vector).__name__
    if operation is None:
        operation = "replace" if kind == "TaskVector" else "add"
    if kind == "TaskVector":
        tensor = vector.at(int(layer))
    else:
        tensor = getattr(vector, "vector", vector)
    if not isinstance(tensor, Tensor):
        raise TlensICLError(f"Cannot make a steering vector from a {kind}.")
    meta: dict[str, Any] = {"source": kind}
    for key in ("task", "heads", "n_shots"):
        if hasattr(vector, key):
            meta[key] = getattr(vector, key)
    info = getattr(vector, "info", None) or {}
    meta.update({k: info[k] for k in ("model", "tlens_icl", "transformer_lens", "n_layers", "d_model") if k in info})
    return SteeringVector(resid_hook_name(site, int(layer)), tensor.detach().float().cpu(), operation, float(coeff),
                          position, meta)


__all__ = ["SteeringVector", "steering_vector"]
