"""The one way to apply a vector: :class:`SteeringVector`, :func:`steer`, :func:`evaluate_steering`, :func:`generate`.

A :class:`SteeringVector` says what is written where: the ``layers`` and the ``site`` (``resid_pre``,
``resid_post``, or ``z`` - each head's output before ``W_O``), the ``position`` (``"query"``, ``"all"`` or one
int position), the ``mode`` (:data:`MODES`: ``add``, ``replace``, ``norm_preserving``) and one coefficient
``coeff``. Every method of this package is one such object:

* function vector (Todd et al.): ``SteeringVector.from_function_vector(fv)`` - ``add`` at ``resid_post`` of one
  layer, at the query;
* task vector (Hendel et al.): ``SteeringVector.from_task_vector(tv)`` - ``replace`` at ``resid_post`` of one
  layer, at the query;
* in-context vector (Liu et al.): ``SteeringVector.from_in_context_vector(icv, coeff=0.1)`` - ``norm_preserving``
  at ``resid_post`` of every layer, at every position;
* soft injection (Park & Rhee): ``SteeringVector.from_soft_injection(si)`` - ``replace`` at ``z`` of every layer,
  per head with the learned weights ``alpha`` (``head_weights``), at the query.

:func:`steer` applies one or several of them for the duration of a ``with`` block (hooks checked to fire);
:func:`evaluate_steering` scores a :class:`~tlens_icl.prompts.PromptBatch` with them; :func:`generate` decodes
prompts of different lengths in one batch with them. Hook names come from :mod:`tlens_icl.engine.hooks`.

Interchange: a one-layer residual vector iterates as the plain pair ``(hook_name, vector)`` in TransformerLens's
(and SAELens's) hook naming, :meth:`SteeringVector.as_hook` is a hook any TransformerLens model takes in
``run_with_hooks``, and :meth:`SteeringVector.save` writes one ``.safetensors`` file (tensors ``vector`` and
``head_weights``, the JSON header ``tlens_icl_steering``) that :meth:`SteeringVector.load` validates.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple, Union

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tlens_icl import _validate
from tlens_icl._typing import ModelLike
from tlens_icl._validate import checked
from tlens_icl.analyses.vectors.common import evaluate_intervention, position_index
from tlens_icl.engine import hooks
from tlens_icl.engine.hooks import checked_hooks
from tlens_icl.engine.query import Interventions, blend_heads, resid_edits
from tlens_icl.engine.runs import logit_rows
from tlens_icl.errors import TlensICLError
from tlens_icl.models.adapter import device_of, forward
from tlens_icl.models.remote import SpecHook
from tlens_icl.prompts.batch import PromptBatch
from tlens_icl.results.base import require_same_model

FORMAT = "tlens_icl.steering_vector"
FORMAT_VERSION = 2

Mode = Literal["add", "replace", "norm_preserving"]
Site = Literal["resid_pre", "resid_post", "z"]
#: Where the vector acts: ``"query"`` (each row's query position; the last position of every forward when no
#: ``query_pos`` is given; in :func:`generate` the query and every generated token), ``"all"``, or one position.
Position = Union[Literal["query", "all"], int]

#: The one table of modes: what a mode writes at the steered positions (``x`` the activation, ``v`` the vector,
#: ``c`` the coefficient, ``w`` a head's weight at site ``z``, 1 without ``head_weights``).
MODES: dict[str, str] = {
    "add": "x + c * w * v (function vectors; c = 0 leaves x bit-identical, c < 0 subtracts)",
    "replace": "(1 - c * w) * x + c * w * v; c * w = 1 writes v exactly (task vectors; soft injection with "
               "w = alpha per head)",
    "norm_preserving": "|x| * unit(unit(x) + c * (1 + relu(cos(x, -v))) * unit(v)) (in-context vectors; residual "
                       "sites only; c = 0 leaves x up to rounding)",
}
SITES: tuple[str, ...] = ("resid_pre", "resid_post", "z")
HookList = list[tuple[str, Callable[..., Any]]]


def norm_preserving(x: Tensor, v: Tensor, coeff: float) -> Tensor:
    """Liu et al.'s in-context-vector update of ``x [..., d]`` toward ``v [d]``, keeping each ``|x|``."""
    unit = lambda t: t / t.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # noqa: E731
    xn, vn = unit(x), unit(v)
    gate = 1.0 + torch.relu(-(xn * vn).sum(-1, keepdim=True))
    return x.norm(dim=-1, keepdim=True) * unit(xn + coeff * gate * vn)


@dataclass(frozen=True, eq=False)
class SteeringVector:
    """What is written where: ``vector`` at ``site`` of each of ``layers``, at ``position``, by ``mode``.

    ``vector``: ``[d_model]`` (the same vector at every layer listed), ``[len(layers), d_model]`` (one per layer),
    or at site ``"z"`` ``[len(layers), n_heads, d_head]`` (one per head). ``head_weights`` (site ``"z"`` only,
    ``[len(layers), n_heads]``): each head's own weight ``w`` (soft injection's ``alpha``); a head of weight 0 is
    untouched. ``coeff``: the one coefficient (see :data:`MODES`). ``layers`` may be given as one int.
    ``metadata``: provenance (the source result, its task, the model it was made on - checked by :func:`steer`).
    """

    vector: Float[Tensor, "..."]
    layers: Union[int, Sequence[int]]  # a tuple of ints once made
    site: Site = "resid_post"
    mode: Mode = "add"
    coeff: Union[float, int] = 1.0  # a float once made
    position: Position = "query"
    head_weights: Float[Tensor, "layer head"] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    #: The modes and what each writes (:data:`MODES`).
    MODES: ClassVar[dict[str, str]] = MODES

    def __post_init__(self) -> None:
        layers = (self.layers,) if _validate.is_int(self.layers) else self.layers
        if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence) or not layers:
            raise TlensICLError(f"SteeringVector: layers must be an int or a non-empty list of ints, got {layers!r}.")
        object.__setattr__(self, "layers", tuple(_validate.integer(x, "layer", minimum=0, where="SteeringVector: ")
                                                 for x in layers))
        if len(set(self.layers)) != len(self.layers):
            raise TlensICLError(f"SteeringVector: layers repeat: {self.layers}.")
        object.__setattr__(self, "coeff", _check_fields(self.site, self.mode, self.coeff, self.position,
                                                        "SteeringVector: "))
        v = self.vector
        if not isinstance(v, Tensor) or not v.is_floating_point():
            raise TlensICLError(f"SteeringVector: vector must be a floating-point tensor, got {type(v).__name__}.")
        if not bool(v.isfinite().all()):
            raise TlensICLError("SteeringVector: vector holds NaN or infinite values.")
        n = len(self.layers)
        if self.site == "z":
            if v.dim() != 3 or v.shape[0] != n:
                raise TlensICLError(f"SteeringVector: at site 'z' the vector is [len(layers)={n}, n_heads, d_head], "
                                    f"got {tuple(v.shape)}.")
            if self.mode == "norm_preserving":
                raise TlensICLError("SteeringVector: mode 'norm_preserving' acts on the residual stream, not at site 'z'.")
        elif not (v.dim() == 1 or (v.dim() == 2 and v.shape[0] == n)):
            raise TlensICLError(f"SteeringVector: the vector is [d_model] or [len(layers)={n}, d_model], "
                                f"got {tuple(v.shape)}.")
        w = self.head_weights
        if w is not None:
            if self.site != "z":
                raise TlensICLError("SteeringVector: head_weights weigh heads, so they need site 'z'.")
            if not isinstance(w, Tensor) or tuple(w.shape) != tuple(v.shape[:2]) or not bool(w.isfinite().all()):
                raise TlensICLError(f"SteeringVector: head_weights must be a finite [{n}, {v.shape[1]}] tensor, got "
                                    f"{tuple(getattr(w, 'shape', ()))}.")

    # ---- constructors ------------------------------------------------------------------------------------
    @classmethod
    @checked(rules={"layer": lambda v, name, where, m: _optional_layer(v, name, where)})
    def from_function_vector(cls, fv: Any, *, layer: int | None = None, coeff: float = 1.0,
                             position: Position = "query", site: Site = "resid_post") -> "SteeringVector":
        """Todd et al.: ``resid_post[layer] += coeff * fv`` at the query (``layer``: default ``fv.layer``).

        ``fv``: a :class:`~tlens_icl.analyses.vectors.function_vectors.FunctionVector` or a ``[d_model]`` tensor (then ``layer=`` is needed).
        """
        layer = _layer_of(fv, layer, "from_function_vector")
        return cls(_tensor(fv, "vector").detach(), (layer,), site, "add", coeff, position, None, _provenance(fv))

    @classmethod
    @checked(rules={"layer": lambda v, name, where, m: _optional_layer(v, name, where)})
    def from_task_vector(cls, tv: Any, *, layer: int | None = None, coeff: float = 1.0,
                         position: Position = "query") -> "SteeringVector":
        """Hendel et al.: the residual after block ``layer`` (default ``tv.layer``) *replaced* by the task vector.

        ``tv``: a :class:`~tlens_icl.analyses.vectors.task_vectors.TaskVector` (its vector at ``layer``) or a ``[d_model]`` tensor.
        """
        layer = _layer_of(tv, layer, "from_task_vector")
        vec = _tensor(tv, "vector") if isinstance(tv, Tensor) else _tensor(tv, "vectors")
        if not isinstance(tv, Tensor):
            if layer >= vec.shape[0]:
                raise TlensICLError(f"from_task_vector(): layer {layer} is past the task vector's {vec.shape[0]} layers.")
            vec = vec[layer]
        return cls(vec.detach(), (layer,), "resid_post", "replace", coeff, position, None, _provenance(tv))

    @classmethod
    @checked
    def from_in_context_vector(cls, icv: Any, *, coeff: float = 0.1, position: Position = "all",
                               layers: Sequence[int] | None = None) -> "SteeringVector":
        """Liu et al.: every layer's ``resid_post`` (or ``layers``) steered toward the ICV direction, norm-preserving.

        ``coeff`` is the paper's strength (0.1 by default; 0 keeps the activations up to rounding).
        """
        d = _tensor(icv, "directions")
        chosen = tuple(range(d.shape[0])) if layers is None else tuple(layers)
        if any(not _validate.is_int(x) or not 0 <= x < d.shape[0] for x in chosen):
            raise TlensICLError(f"from_in_context_vector(): layers must be layers of the vector's {d.shape[0]}, "
                                f"got {layers!r}.")
        return cls(d[list(chosen)].detach(), chosen, "resid_post", "norm_preserving", coeff, position, None,
                   _provenance(icv))

    @classmethod
    @checked
    def from_soft_injection(cls, si: Any, *, coeff: float = 1.0, position: Position = "query") -> "SteeringVector":
        """Park & Rhee: every head's ``hook_z`` blended toward its task embedding with weight ``alpha`` (learned)."""
        emb = _tensor(si, "embeddings")
        alpha = getattr(si, "alpha", None)
        if not isinstance(alpha, Tensor):
            raise TlensICLError(f"from_soft_injection(): si must be a SoftInjection, got {type(si).__name__}.")
        return cls(emb.detach(), tuple(range(emb.shape[0])), "z", "replace", coeff, position, alpha.detach(),
                   _provenance(si))

    # ---- what it is ------------------------------------------------------------------------------------
    def __repr__(self) -> str:
        where = self.hook_names[0] if len(self.layers) == 1 else f"{self.site} of layers {list(self.layers)}"
        src = self.metadata.get("source")
        task = self.metadata.get("task")
        made = f", from {src}" + (f" {task!r}" if task else "") if src else ""
        heads = ", per-head weights" if self.head_weights is not None else ""
        return (f"SteeringVector({self.mode} at {where}, position={self.position!r}, coeff={self.coeff:g}, "
                f"shape {list(self.vector.shape)}{heads}{made})")

    @property
    def layer(self) -> int:
        """The layer of a one-layer vector."""
        if len(self.layers) != 1:
            raise TlensICLError(f"This steering vector acts at {len(self.layers)} layers; read .layers.")
        return self.layers[0]

    @property
    def hook_names(self) -> list[str]:
        """The hook of each layer (TransformerLens's names, as SAELens's ``hook_name``)."""
        return [hooks.site_name(self.site, layer) for layer in self.layers]

    @property
    def hook_name(self) -> str:
        """The hook of a one-layer vector."""
        return hooks.site_name(self.site, self.layer)

    def __iter__(self) -> Iterator[Any]:
        """A one-layer residual vector as the plain pair ``(hook_name, vector)``."""
        if self.site == "z" or self.vector.dim() != 1:
            raise TlensICLError("Only a one-layer residual steering vector is a plain (hook_name, vector) pair.")
        return iter((self.hook_name, self.vector))

    def at_layer(self, i: int) -> Tensor:
        """The vector written at ``layers[i]``."""
        return self.vector if self.vector.dim() == 1 else self.vector[i]

    def check_model(self, model: ModelLike) -> "SteeringVector":
        """Raise unless this vector fits ``model`` (sizes, layers, hooks, and the model it was made on); returns self."""
        cfg = model.cfg
        if self.site == "z":
            want = (int(cfg.n_heads), int(cfg.d_head))
            if tuple(self.vector.shape[1:]) != want:
                raise TlensICLError(f"The steering vector has heads x d_head {tuple(self.vector.shape[1:])}, but the "
                                    f"model has {want}.")
        elif self.vector.shape[-1] != int(cfg.d_model):
            raise TlensICLError(f"The steering vector has {self.vector.shape[-1]} dims but the model's d_model is "
                                f"{cfg.d_model}.")
        if max(self.layers) >= int(cfg.n_layers):
            raise TlensICLError(f"layer {max(self.layers)} of the steering vector is past the model's "
                                f"{cfg.n_layers} layers.")
        require_same_model(model, self.metadata, "the steering vector")
        hooks.require_hooks(model, self.hook_names)
        return self

    # ---- hooks -----------------------------------------------------------------------------------------
    def as_hooks(self, model: ModelLike | None = None, *,
                 query_pos: Int[Tensor, " batch"] | None = None) -> HookList:
        """``(hook_name, fn)`` per layer (checked against ``model`` when given; nothing installed).

        With ``position="query"`` and no ``query_pos`` the last position of each forward is edited.
        """
        if model is not None:
            self.check_model(model)
        return [(name, self._hook(i, query_pos)) for i, name in enumerate(self.hook_names)]

    def as_hook(self, *, query_pos: Int[Tensor, " batch"] | None = None) -> tuple[str, Callable[..., Tensor]]:
        """The one hook of a one-layer vector, for plain TransformerLens: ``model.run_with_hooks(t, fwd_hooks=[sv.as_hook()])``."""
        if len(self.layers) != 1:
            raise TlensICLError(f"This steering vector acts at {len(self.layers)} layers; use as_hooks().")
        return self.as_hooks(query_pos=query_pos)[0]

    def _weight(self, i: int) -> Tensor | None:
        return None if self.head_weights is None else self.head_weights[i]

    def _hook(self, i: int, query_pos: Tensor | None) -> Callable[..., Tensor]:
        v, c, pos = self.at_layer(i), self.coeff, self.position
        if self.site != "z" and self.mode == "add":  # a declarative edit: local models and remote drivers alike
            return SpecHook("add", value=c * v.detach().float(), pos=_spec_position(pos, query_pos))
        if self.site != "z" and self.mode == "replace" and c == 1.0:
            return SpecHook("set", value=v.detach(), pos=_spec_position(pos, query_pos))
        edit = _edit(self.mode, v, c, self._weight(i))

        def hook_fn(act: Tensor, hook: Any) -> Tensor:
            if pos == "all":
                return edit(act)
            rows, cols = position_index(act, pos, query_pos)
            out = act.clone()
            out[rows, cols] = edit(act[rows, cols])
            return out

        return hook_fn

    def _from_hooks(self, start: Tensor) -> HookList:
        """Hooks for a full forward in :func:`generate`: ``"query"`` edits each row from ``start[row]`` on."""
        out = []
        for i, name in enumerate(self.hook_names):
            edit = _edit(self.mode, self.at_layer(i), self.coeff, self._weight(i))

            def hook_fn(act: Tensor, hook: Any, edit: Callable[[Tensor], Tensor] = edit) -> Tensor:
                cols = torch.arange(act.shape[1], device=act.device)[None]
                if self.position == "all":
                    return edit(act)
                if self.position == "query":
                    mask = cols >= start.to(act.device)[:, None]
                else:
                    mask = (cols == int(self.position)).expand(act.shape[0], -1)
                mask = mask.reshape(*mask.shape, *([1] * (act.dim() - 2)))
                return torch.where(mask, edit(act), act)

            out.append((name, hook_fn))
        return out

    def query_edits(self) -> Interventions | None:
        """The same edit for the engine's query-intervention route (:mod:`tlens_icl.engine.query`), or None where
        it has none (a position other than the query, ``norm_preserving``, a partial replacement of the residual)."""
        if self.position != "query":
            return None
        vecs = torch.stack([self.at_layer(i) for i in range(len(self.layers))])
        if self.site == "z":
            if self.mode != "replace":
                return None
            n = max(self.layers) + 1
            emb = torch.zeros((n, *self.vector.shape[1:]), dtype=self.vector.dtype)
            w = torch.zeros((n, self.vector.shape[1]), dtype=self.vector.dtype)
            weights = torch.ones(self.vector.shape[:2]) if self.head_weights is None else self.head_weights
            for i, layer in enumerate(self.layers):
                emb[layer] = self.vector[i]
                w[layer] = weights[i] if self.coeff == 1.0 else self.coeff * weights[i]
            return blend_heads(emb, w)
        if self.mode == "add":
            return resid_edits(self.layers, vecs, site=self.site, mode="add", coeff=self.coeff)
        if self.mode == "replace" and self.coeff == 1.0:
            return resid_edits(self.layers, vecs, site=self.site, mode="set")
        return None

    # ---- files -----------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write one ``.safetensors`` file: tensors ``vector`` (and ``head_weights``), JSON header ``tlens_icl_steering``."""
        from safetensors.torch import save_file

        path = _validate.path_arg(path, "path", where="SteeringVector.save(): ")
        if path.suffix != ".safetensors":
            path = path.with_suffix(".safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"format": FORMAT, "version": FORMAT_VERSION, "layers": list(self.layers), "site": self.site,
               "mode": self.mode, "coeff": self.coeff, "position": self.position,
               "shape": list(self.vector.shape), "hook_names": self.hook_names,
               "metadata": json.loads(json.dumps(self.metadata, default=str))}
        tensors = {"vector": self.vector.detach().float().cpu().contiguous()}
        if self.head_weights is not None:
            tensors["head_weights"] = self.head_weights.detach().float().cpu().contiguous()
        save_file(tensors, str(path), metadata={"tlens_icl_steering": json.dumps(doc)})
        return path

    @classmethod
    def load(cls, path: str | Path, model: ModelLike | None = None) -> "SteeringVector":
        """Read a file written by :meth:`save`; validates the header, the tensors and (optionally) the model."""
        from safetensors import safe_open

        path = _validate.path_arg(path, "path", where="SteeringVector.load(): ")
        if not path.is_file():
            raise TlensICLError(f"No steering-vector file at {path}.")
        try:
            with safe_open(str(path), framework="pt") as f:
                header = (f.metadata() or {}).get("tlens_icl_steering")
                names = sorted(f.keys())
                tensors = {k: f.get_tensor(k) for k in names}
        except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
            raise TlensICLError(f"{path} is not a readable safetensors file: {e}") from e
        if header is None or names not in (["vector"], ["head_weights", "vector"]):
            raise TlensICLError(f"{path} is not a tlens_icl steering vector (needs the tensor 'vector', optionally "
                                "'head_weights', and a 'tlens_icl_steering' header).")
        try:
            doc = json.loads(header)
        except json.JSONDecodeError as e:
            raise TlensICLError(f"{path}: the steering header is not JSON: {e}") from e
        if doc.get("format") != FORMAT or doc.get("version") != FORMAT_VERSION:
            raise TlensICLError(f"{path}: unknown format {doc.get('format')!r} version {doc.get('version')!r}.")
        vector = tensors["vector"]
        if doc.get("shape") != list(vector.shape):
            raise TlensICLError(f"{path}: the header says shape {doc.get('shape')} but the tensor has "
                                f"{list(vector.shape)}.")
        layers = doc.get("layers")
        if not isinstance(layers, list) or not layers or not all(_validate.is_int(x) for x in layers):
            raise TlensICLError(f"{path}: the header's layers must be a non-empty list of ints, got {layers!r}.")
        _check_fields(doc.get("site"), doc.get("mode"), doc.get("coeff"), doc.get("position"), f"{path}: ")
        try:
            sv = cls(vector, tuple(layers), doc["site"], doc["mode"], doc["coeff"], doc["position"],
                     tensors.get("head_weights"), doc.get("metadata") or {})
        except TlensICLError as e:
            raise TlensICLError(f"{path}: {e}") from e
        if doc.get("hook_names") != sv.hook_names:
            raise TlensICLError(f"{path}: the header's hook_names {doc.get('hook_names')} do not match its layers and "
                                f"site ({sv.hook_names}).")
        return sv.check_model(model) if model is not None else sv


# ---- helpers ------------------------------------------------------------------------------------------
def _check_fields(site: Any, mode: Any, coeff: Any, position: Any, where: str) -> float:
    """Validate the scalar fields by the one table (:data:`MODES`, :data:`SITES`); returns ``coeff`` as a float."""
    _validate.choice(mode, "mode", tuple(MODES), where=where)
    _validate.choice(site, "site", SITES, where=where)
    if not (position in ("query", "all") if isinstance(position, str) else _validate.is_int(position) and position >= 0):
        raise TlensICLError(f"{where}position must be 'query', 'all' or an int >= 0, got {position!r}.")
    return _validate.number(coeff, "coeff", where=where)


def _optional_layer(v: Any, name: str, where: str) -> Any:
    """The ``layer=`` rule of the constructors (no model yet: :meth:`SteeringVector.check_model` bounds it)."""
    return v if v is None else _validate.integer(v, name, minimum=0, where=where)


def _tensor(obj: Any, name: str) -> Tensor:
    v = obj if isinstance(obj, Tensor) else getattr(obj, name, None)
    if not isinstance(v, Tensor):
        raise TlensICLError(f"Cannot make a steering vector from a {type(obj).__name__} (it has no tensor {name!r}).")
    return v


def _layer_of(obj: Any, layer: Any, where: str) -> int:
    layer = layer if layer is not None else getattr(obj, "layer", None)
    if layer is None:
        raise TlensICLError(f"{where}() needs layer=... (the vector has no chosen layer; see .with_layer).")
    return _validate.integer(layer, "layer", minimum=0, where=f"{where}(): ")


def _provenance(obj: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"source": type(obj).__name__}
    for key in ("task", "heads", "n_shots", "contrast", "direction"):
        if hasattr(obj, key):
            meta[key] = getattr(obj, key)
    info = getattr(obj, "info", None) or {}
    meta.update({k: info[k] for k in ("model", "model_fingerprint", "tlens_icl", "transformer_lens", "n_layers",
                                      "d_model") if k in info})
    return meta


def _spec_position(position: Position, query_pos: Tensor | None) -> Any:
    """``position`` as a :class:`~tlens_icl.models.remote.SpecHook` position (None: all; ``"last"``: the last)."""
    if position == "all":
        return None
    if position == "query":
        return "last" if query_pos is None else query_pos.long().cpu()
    return int(position)


def _edit(mode: str, v: Tensor, coeff: float, weight: Tensor | None) -> Callable[[Tensor], Tensor]:
    """``x -> edited x`` for activations ``x [..., d]`` (site ``z``: ``[..., n_heads, d_head]``)."""
    def fn(x: Tensor) -> Tensor:
        vec = v.to(device=x.device, dtype=x.dtype)
        if mode == "norm_preserving":
            return norm_preserving(x, vec, coeff)
        if weight is None:
            if mode == "add":
                return x + (coeff * v.detach().float()).to(device=x.device, dtype=x.dtype)
            return vec.expand_as(x).clone() if coeff == 1.0 else (1 - coeff) * x + coeff * vec
        a = weight.to(device=x.device, dtype=x.dtype)[:, None]
        a = a if coeff == 1.0 else coeff * a
        return x + a * vec if mode == "add" else (1 - a) * x + a * vec

    return fn


def _as_list(steering: Any) -> list[SteeringVector]:
    items = [] if steering is None else [steering] if isinstance(steering, SteeringVector) else steering
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence) or \
            not all(isinstance(s, SteeringVector) for s in items):
        raise TlensICLError(f"steering must be a SteeringVector or a list of them (SteeringVector.from_function_vector"
                            f"(fv), ...), got {_validate.describe(steering)}.")
    return list(items)


# ---- applying ---------------------------------------------------------------------------------------------
@checked
def steer(model: ModelLike, *steering: SteeringVector,
          query_pos: Int[Tensor, " batch"] | None = None) -> AbstractContextManager[None]:
    """Apply the steering vector(s) to every forward pass run inside the ``with`` block::

        with ti.steer(model, ti.SteeringVector.from_function_vector(fv)):
            logits = model(tokens)

    ``query_pos`` (``[batch]``) places ``position="query"`` at each row's query of a right-padded batch; without
    it the last position of every forward is edited (during KV-cached generation: every new token).

    Everything is validated when ``steer`` is called, before the block.

    Raises:
        HookNotFiredError: on exit, if no forward pass ran the hooks inside the block.
    """
    items = _as_list(list(steering))
    if not items:
        raise TlensICLError("steer() needs at least one SteeringVector.")
    fwd = [h for sv in items for h in sv.as_hooks(model, query_pos=query_pos)]
    return checked_hooks(model, fwd)


class SteeredScores(NamedTuple):
    """Per-row scores of a prompt batch: top-1 correctness (any accepted answer) and P(first answer token)."""

    correct: Float[Tensor, " batch"]
    answer_prob: Float[Tensor, " batch"]

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean())


@checked
def evaluate_steering(
    model: ModelLike, batch: PromptBatch, steering: SteeringVector | Sequence[SteeringVector] | None = None, *,
    batch_size: int = 32,
) -> SteeredScores:
    """Score ``batch`` at each row's query with ``steering`` applied (None: the plain model), by hooked forwards.

    ``position="query"`` is each row's own query position (right-padded rows are fine).
    """
    items = _as_list(steering)
    for sv in items:
        sv.check_model(model)

    def build(sub: PromptBatch) -> HookList:
        return [h for sv in items for h in sv.as_hooks(query_pos=sub.query_pos)]

    correct, p = evaluate_intervention(model, batch, build if items else None, batch_size=batch_size)
    return SteeredScores(correct, p)


@checked
def generate(
    model: ModelLike, prompts: PromptBatch | str | Sequence[str] | Int[Tensor, "batch pos"], *,
    steering: SteeringVector | Sequence[SteeringVector] | None = None, max_new_tokens: int = 10,
    attention_mask: Int[Tensor, "batch pos"] | None = None, do_sample: bool = False, temperature: float = 1.0,
    top_k: int | None = None, top_p: float | None = None, seed: int = 0, stop_at_eos: bool = True,
    batch_size: int = 32,
) -> Int[Tensor, "batch pos_out"]:
    """Decode prompts of different lengths in one batch, with ``steering`` applied at every step.

    ``prompts``: a :class:`~tlens_icl.prompts.PromptBatch` (right-padded), a string or list of strings (tokenized
    with the model's BOS default), or token ids ``[batch, pos]`` - unpadded, or right-padded with
    ``attention_mask``. Rows stay right-padded and each decodes at its own positions: every step is one forward of
    the batch (no key/value cache), causal attention keeps a row's tokens from ever seeing the pads after them, and
    row ``i``'s next token is read at its own last token, so row ``i`` generates what it generates alone.
    ``position="query"`` steers each row's query and every token generated after it (Todd et al.);
    ``"all"`` every position.

    Greedy unless ``do_sample`` (``temperature``, ``top_k``, ``top_p``; draws from one generator seeded by
    ``seed``, row by row, so a sampled row depends on the rows before it). With ``stop_at_eos`` a row stops after
    the tokenizer's EOS. Returns token ids, prompt included, right-padded with the pad token: row ``i``'s new
    tokens start at its prompt length.
    """
    rows = _prompt_rows(model, prompts, attention_mask)
    items = _as_list(steering)
    for sv in items:
        sv.check_model(model)
    if do_sample:
        _validate.number(temperature, "temperature", minimum=0.0, open_interval=True, where="generate(): ")
        if top_k is not None:
            _validate.integer(top_k, "top_k", minimum=1, where="generate(): ")
        if top_p is not None:
            _validate.number(top_p, "top_p", minimum=0.0, maximum=1.0, where="generate(): ")
    tok = getattr(model, "tokenizer", None)
    pad = getattr(tok, "pad_token_id", None)
    pad = 0 if pad is None else int(pad)
    eos = getattr(tok, "eos_token_id", None) if stop_at_eos else None
    gen = torch.Generator().manual_seed(int(seed))
    outs: list[Tensor] = []
    with torch.inference_mode():
        for lo in range(0, len(rows), batch_size):
            outs += _decode(model, rows[lo:lo + batch_size], items, max_new_tokens, pad, eos,
                            (do_sample, temperature, top_k, top_p, gen))
    width = max(int(o.shape[0]) for o in outs)
    result = torch.full((len(outs), width), pad, dtype=torch.long)
    for i, o in enumerate(outs):
        result[i, : o.shape[0]] = o
    return result


def _decode(model: ModelLike, rows: list[Tensor], items: list[SteeringVector], max_new: int, pad: int,
            eos: int | None, sampling: tuple[Any, ...]) -> list[Tensor]:
    """Greedy/sampled decoding of right-padded ``rows``: each step one full forward of the unfinished rows."""
    lengths = torch.tensor([int(r.shape[0]) for r in rows])
    start = lengths - 1  # each row's query position
    buf = torch.full((len(rows), int(lengths.max()) + max_new), pad, dtype=torch.long)
    for i, r in enumerate(rows):
        buf[i, : r.shape[0]] = r
    cur, done = lengths.clone(), torch.zeros(len(rows), dtype=torch.bool)
    dev = device_of(model)
    for _ in range(max_new):
        act = (~done).nonzero().flatten()
        if act.numel() == 0:
            break
        width = int(cur[act].max())
        fwd = [h for sv in items for h in sv._from_hooks(start[act])]
        at = logit_rows(model, cur[act] - 1, fwd)
        with checked_hooks(model, fwd + at.hooks):
            logits = at.read(forward(model, buf[act, :width].to(dev))).float().cpu()
        nxt = _pick(logits, *sampling)
        buf[act, cur[act]] = nxt
        cur[act] += 1
        if eos is not None:
            done[act] |= nxt == int(eos)
    return [buf[i, : int(cur[i])].clone() for i in range(len(rows))]


def _pick(logits: Tensor, do_sample: bool, temperature: float, top_k: int | None, top_p: float | None,
          gen: torch.Generator) -> Tensor:
    if not do_sample:
        return logits.argmax(-1)
    x = logits / float(temperature)
    if top_k is not None:
        kth = x.topk(min(int(top_k), x.shape[-1]), dim=-1).values[:, -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    if top_p is not None:
        srt, idx = x.sort(-1, descending=True)
        cum = srt.softmax(-1).cumsum(-1)
        drop = cum - srt.softmax(-1) >= float(top_p)  # keep the smallest prefix reaching top_p
        x = x.scatter(-1, idx, srt.masked_fill(drop, float("-inf")))
    return torch.multinomial(x.softmax(-1), 1, generator=gen).flatten()


def _prompt_rows(model: ModelLike, prompts: Any, mask: Any) -> list[Tensor]:
    """Each prompt's unpadded token ids."""
    if isinstance(prompts, PromptBatch):
        if mask is not None:
            raise TlensICLError("generate(): a PromptBatch carries its own attention_mask; do not pass one.")
        prompts, mask = prompts.tokens, prompts.attention_mask
    if isinstance(prompts, str):
        prompts = [prompts]
    if isinstance(prompts, Sequence) and prompts and all(isinstance(p, str) for p in prompts):
        if mask is not None:
            raise TlensICLError("generate(): attention_mask goes with token ids, not strings.")
        return [model.to_tokens(p)[0].cpu() for p in prompts]
    if isinstance(prompts, Tensor) and prompts.dim() == 1:
        prompts = prompts[None]
    if not isinstance(prompts, Tensor) or prompts.dim() != 2 or prompts.is_floating_point() or prompts.shape[1] == 0:
        raise TlensICLError(f"generate(): prompts must be a PromptBatch, a string or list of strings, or a non-empty "
                            f"[batch, pos] tensor of token ids, got {_validate.describe(prompts)}.")
    tokens = prompts.cpu()
    if mask is None:
        _check_unpadded(model, tokens)
        return list(tokens)
    return [tokens[i, :n] for i, n in enumerate(_right_padded_lengths(tokens, mask))]


def _right_padded_lengths(tokens: Tensor, mask: Any) -> list[int]:
    """Each row's prompt length from a right-padding ``mask`` (ones, then zeros), checked."""
    if not isinstance(mask, Tensor) or tuple(mask.shape) != tuple(tokens.shape):
        raise TlensICLError(f"generate(): attention_mask must be a tensor of the tokens' shape {tuple(tokens.shape)}, "
                            f"got {tuple(getattr(mask, 'shape', ()))}.")
    m = mask.long().cpu()
    lengths = m.sum(1).tolist()
    for i, n in enumerate(lengths):
        if n == 0 or bool(m[i, :n].eq(0).any()) or bool(m[i, n:].ne(0).any()):
            raise TlensICLError(f"generate(): attention_mask row {i} is not right padding (ones, then zeros): "
                                f"{m[i].tolist()[:12]}{'...' if m.shape[1] > 12 else ''}.")
    return [int(n) for n in lengths]


def _check_unpadded(model: ModelLike, tokens: Tensor) -> None:
    """Refuse a token batch whose rows start or end with the pad token (padding needs ``attention_mask``)."""
    tok = getattr(model, "tokenizer", None)
    pad = getattr(tok, "pad_token_id", None)
    if pad is None or pad == getattr(tok, "bos_token_id", None):
        return
    rows = ((tokens[:, -1] == pad) | (tokens[:, 0] == pad)).nonzero().flatten().tolist()
    if rows:
        r = rows[0]
        side = "right" if bool(tokens[r, -1] == pad) else "left"
        raise TlensICLError(
            f"generate(): tokens row {r} holds the pad token ({side}-padded): pass the PromptBatch, or "
            "attention_mask= for right padding, so each row decodes from its own last token.")


__all__ = ["MODES", "SteeredScores", "SteeringVector", "evaluate_steering", "generate", "norm_preserving", "steer"]
