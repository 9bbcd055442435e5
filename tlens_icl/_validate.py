"""Argument validation for the public entry points: bad input fails with a clear error before any forward pass.

One table, :data:`RULES`, says what every commonly named argument must be (``n`` an int >= 1, ``layer`` an
int layer of the model, ``heads`` int pairs inside the model, ``test_size`` in (0, 1), vectors finite, an
output folder creatable, ...). :func:`checked` applies it to a function from its signature::

    @checked
    def icl_accuracy(model, tasks, *, n_shots=(0, 1, 5, 10), n=64, seed=0, batch_size=32): ...

Every rule raises :class:`~tlens_icl.errors.TlensICLError` naming the function, the argument, what it must
be and what it got. The README's "What is validated" table lists these rules. The validators are plain
functions too, for checks an entry point makes itself.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import os
from collections.abc import Callable, Sequence
from numbers import Integral, Real
from pathlib import Path
from typing import Any, TypeVar

from tlens_icl.errors import ModelStateError, TlensICLError

F = TypeVar("F", bound=Callable[..., Any])


def describe(value: Any) -> str:
    text = repr(value)
    return f"{text[:60]}{'...' if len(text) > 60 else ''} ({type(value).__name__})"


# ---- scalars -------------------------------------------------------------------------------------
def is_int(value: Any) -> bool:
    """An integer that is not a bool (``True`` is not a layer; ``2.0`` is not a count)."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def integer(value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None, where: str = "") -> int:
    """``value`` as an ``int`` in ``[minimum, maximum]``; floats, bools and strings are refused."""
    lo = "" if minimum is None else f" >= {minimum}"
    hi = "" if maximum is None else f" <= {maximum}"
    if not is_int(value) or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise TlensICLError(f"{where}{name} must be an int{lo}{hi and (' and' if lo else '') + hi}, got {describe(value)}.")
    return int(value)


def number(value: Any, name: str, *, minimum: float | None = None, maximum: float | None = None,
           open_interval: bool = False, where: str = "") -> float:
    """``value`` as a finite ``float`` within the bounds (exclusive with ``open_interval``)."""
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(float(value))
    if ok and minimum is not None:
        ok = float(value) > minimum if open_interval else float(value) >= minimum
    if ok and maximum is not None:
        ok = float(value) < maximum if open_interval else float(value) <= maximum
    if not ok:
        a, b = ("(", ")") if open_interval else ("[", "]")
        rng = f" in {a}{minimum if minimum is not None else '-inf'}, {maximum if maximum is not None else 'inf'}{b}"
        raise TlensICLError(f"{where}{name} must be a finite number{rng if (minimum, maximum) != (None, None) else ''}, "
                            f"got {describe(value)}.")
    return float(value)


def int_sequence(value: Any, name: str, *, minimum: int | None = None, where: str = "") -> tuple[int, ...]:
    """A non-empty sequence of ints (each ``>= minimum``) without repeats (numpy / torch 1-D arrays too)."""
    if hasattr(value, "tolist") and getattr(value, "ndim", 0) == 1:
        value = value.tolist()
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or is_int(value):
        raise TlensICLError(f"{where}{name} must be a non-empty list of ints, got {describe(value)}.")
    out = tuple(integer(v, f"{name}[{i}]", minimum=minimum, where=where) for i, v in enumerate(value))
    if not out:
        raise TlensICLError(f"{where}{name} is empty; give at least one value.")
    if len(set(out)) != len(out):
        raise TlensICLError(f"{where}{name} repeats a value: {list(out)}.")
    return out


def choice(value: Any, name: str, options: Sequence[Any], *, where: str = "") -> Any:
    if not isinstance(value, (str, int, float, type(None))) or value not in options:
        raise TlensICLError(f"{where}{name} must be one of {tuple(options)}, got {describe(value)}.")
    return value


# ---- models, layers, heads -----------------------------------------------------------------------
def model(obj: Any, operation: str = "this function", *, eval_mode: bool = True) -> Any:
    """A TransformerLens-style model (``cfg`` with ``n_layers``/``n_heads``/``d_model``), in eval mode."""
    if isinstance(obj, (str, os.PathLike)):
        raise TlensICLError(f"{operation} needs a loaded model, got the name {str(obj)!r}; load it first: "
                            f"model = tlens_icl.load_model({str(obj)!r}).")
    cfg = getattr(obj, "cfg", None)
    runs = callable(obj) or callable(getattr(obj, "forward", None))  # a RemoteBridge is not callable itself
    if cfg is None or not all(is_int(getattr(cfg, a, None)) for a in ("n_layers", "n_heads", "d_model")) or not runs:
        raise TlensICLError(f"{operation} needs a TransformerLens model (e.g. a TransformerBridge), got {describe(obj)}.")
    if eval_mode and getattr(obj, "training", False):
        raise ModelStateError(
            f"{operation} needs the model in evaluation mode, but it is in training mode (TransformerLens "
            "bridges start in train mode, so dropout is active). Call model.eval() first.")
    return obj


def layer(model_obj: Any, value: Any, name: str = "layer", *, where: str = "") -> int:
    """An int layer index of ``model_obj`` (``0 <= layer < n_layers``; no bools, no negative indices)."""
    n = int(model_obj.cfg.n_layers)
    return integer(value, name, minimum=0, maximum=n - 1, where=where)


def layers(model_obj: Any, value: Any, name: str = "layers", *, where: str = "") -> tuple[int, ...]:
    """A non-empty, repeat-free list of layer indices of ``model_obj``."""
    out = int_sequence(value, name, minimum=0, where=where)
    for i, v in enumerate(out):
        layer(model_obj, v, f"{name}[{i}]", where=where)
    return out


def heads(model_obj: Any, value: Any, name: str = "heads", *, where: str = "") -> tuple[tuple[int, int], ...]:
    """A non-empty list of ``(layer, head)`` int pairs inside ``model_obj`` (``Head`` is such a pair)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TlensICLError(f"{where}{name} must be a list of (layer, head) int pairs, got {describe(value)}.")
    n_layers, n_heads = int(model_obj.cfg.n_layers), int(model_obj.cfg.n_heads)
    out = []
    for h in value:
        if isinstance(h, (str, bytes)) or not isinstance(h, Sequence) or len(h) != 2 or not all(is_int(i) for i in h):
            raise TlensICLError(f"{where}{name} must be Head(layer, head) or (layer, head) int pairs, "
                                f"got {describe(h)}.")
        if not (0 <= h[0] < n_layers and 0 <= h[1] < n_heads):
            raise TlensICLError(f"{where}{name}: head {tuple(h)} is out of range, outside the model's {n_layers} "
                                f"layers x {n_heads} heads.")
        out.append((int(h[0]), int(h[1])))
    if not out:
        raise TlensICLError(f"{where}{name} is empty.")
    return tuple(out)


# ---- tensors -------------------------------------------------------------------------------------
_VECTOR_FIELDS = ("vector", "vectors", "directions", "mean_difference", "embeddings", "theta", "mean_z")


def finite(value: Any, name: str, *, where: str = "") -> Any:
    """Raise if a tensor (or a vector result's tensor fields) holds NaN or inf; returns ``value``."""
    import torch

    if isinstance(value, torch.Tensor):
        parts = [(name, value)]
    elif dataclasses.is_dataclass(value):  # a vector result: every tensor field (not properties that may raise)
        parts = [(f"{name}.{f.name}", getattr(value, f.name)) for f in dataclasses.fields(value)
                 if isinstance(getattr(value, f.name), torch.Tensor)]
    else:
        parts = [(f"{name}.{f}", v) for f in _VECTOR_FIELDS
                 if isinstance(v := getattr(value, f, None), torch.Tensor)]
    for label, t in parts:
        # soft-injection logits may be +-inf (alpha exactly 0 or 1); NaN is never meaningful
        bad_mask = t.isnan() if label.endswith(".theta") else ~torch.isfinite(t)
        if t.is_floating_point() and bool(bad_mask.any()):
            raise TlensICLError(f"{where}{label} holds {int(bad_mask.sum())} NaN/inf value(s); injecting it would "
                                "make the logits NaN.")
    return value


# ---- paths ---------------------------------------------------------------------------------------
def path_arg(value: Any, name: str = "path", *, where: str = "") -> Path:
    """A ``str``/``os.PathLike`` path (not None, not a number), as a :class:`~pathlib.Path`."""
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise TlensICLError(f"{where}{name} must be a file or folder path (str or pathlib.Path), got {describe(value)}.")
    return Path(value).expanduser()


def output_dir(value: Any, name: str = "out", *, where: str = "") -> Path:
    """A folder that can be created and written: no existing file on its path, a writable parent."""
    path = path_arg(value, name, where=where)
    if path.exists() and not path.is_dir():
        raise TlensICLError(f"{where}{name}={str(path)!r} is an existing file, not a folder.")
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise TlensICLError(f"{where}{name}={str(path)!r} lies under the file {str(parent)!r}.")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise TlensICLError(f"{where}{name}={str(path)!r}: the folder {str(parent)!r} is not writable.")
            break
    return path


# ---- the table -----------------------------------------------------------------------------------
def _count(minimum: int) -> Callable[..., Any]:
    return lambda v, name, where, m: integer(v, name, minimum=minimum, where=where)


def _shots(v: Any, name: str, where: str, m: Any) -> Any:
    if is_int(v):
        return integer(v, name, minimum=0, where=where)
    return int_sequence(v, name, minimum=0, where=where)


def _seed(v: Any, name: str, where: str, m: Any) -> Any:
    return integer(v, name, where=where)


def _layer(v: Any, name: str, where: str, m: Any) -> Any:
    if v is None or m is None:
        return v
    return layer(m, v, name, where=where)


def _layers(v: Any, name: str, where: str, m: Any) -> Any:
    if v is None:
        return v
    return layers(m, v, name, where=where) if m is not None else int_sequence(v, name, minimum=0, where=where)


def _heads(v: Any, name: str, where: str, m: Any) -> Any:
    if v is None or m is None:
        return v
    if hasattr(v, "top_heads") or isinstance(v, dict):  # a mediation result / per-task heads (compare_methods)
        return v
    return heads(m, v, name, where=where)


def _finite_number(v: Any, name: str, where: str, m: Any) -> Any:
    return number(v, name, where=where)


def _positive_number(v: Any, name: str, where: str, m: Any) -> Any:
    return number(v, name, minimum=0.0, open_interval=True, where=where)


def _unit_interval(v: Any, name: str, where: str, m: Any) -> Any:
    return number(v, name, minimum=0.0, maximum=1.0, open_interval=True, where=where)


def _vector(v: Any, name: str, where: str, m: Any) -> Any:
    if v is None:  # an optional vector / means argument left out
        return v
    import torch

    if not (isinstance(v, torch.Tensor) or dataclasses.is_dataclass(v)
            or any(isinstance(getattr(v, f, None), torch.Tensor) for f in _VECTOR_FIELDS)):
        raise TlensICLError(f"{where}{name} must be a tensor or a vector result (FunctionVector, TaskVector, "
                            f"InContextVector, SoftInjection), got {describe(v)}.")
    return finite(v, name, where=where)


def _out(v: Any, name: str, where: str, m: Any) -> Any:
    return None if v is None else output_dir(v, name, where=where)


def _progress(v: Any, name: str, where: str, m: Any) -> Any:
    if v is not None and not isinstance(v, bool):  # None: automatic (tlens_icl.engine.progress)
        raise TlensICLError(f"{where}{name} must be True, False or None (automatic), got {describe(v)}.")
    return v


def _flag(v: Any, name: str, where: str, m: Any) -> Any:
    if not isinstance(v, bool):
        raise TlensICLError(f"{where}{name} must be True or False, got {describe(v)}.")
    return v


def _position(v: Any, name: str, where: str, m: Any) -> Any:
    if isinstance(v, bool) or (isinstance(v, Real) and not is_int(v)):
        raise TlensICLError(f"{where}{name} must be a name such as 'query' or an int position >= 0, got {describe(v)}.")
    if is_int(v) and v < 0:
        raise TlensICLError(f"{where}{name} must be >= 0 (a negative index reads padding on right-padded rows), "
                            f"got {v}.")
    return v


def _pairs(v: Any, name: str, where: str, m: Any) -> Any:
    if not (hasattr(v, "clean") and hasattr(v, "corrupted")):
        raise TlensICLError(f"{where}{name} must be a PromptPairBatch (tlens_icl.make_prompt_pairs), got {describe(v)}.")
    return v


def _batch(v: Any, name: str, where: str, m: Any) -> Any:
    if not (hasattr(v, "tokens") and hasattr(v, "query_pos")):
        raise TlensICLError(f"{where}{name} must be a PromptBatch (tlens_icl.make_prompts), got {describe(v)}.")
    return v


#: argument name -> rule ``(value, name, where, model) -> value`` (raises TlensICLError).
RULES: dict[str, Callable[..., Any]] = {
    **{n: _count(1) for n in ("n", "n_mean", "n_corrupted", "n_test", "n_fit", "batch_size",
                              "train_batch_size", "max_new_tokens", "k", "fv_k", "n_resamples")},
    **{n: _count(0) for n in ("steps", "n_permutations", "n_shuffles", "n_random")},
    "folds": _count(2),
    "n_shots": _shots,
    "shots": _shots,
    "seed": _seed,
    "layer": _layer,
    "layers": _layers,
    "heads": _heads,
    "coeff": _finite_number,
    "strength": _finite_number,
    "lr": _positive_number,
    "soft_lr": _positive_number,
    "test_size": _unit_interval,
    "confidence": _unit_interval,
    **{n: _vector for n in ("vector", "fv", "tv", "icv", "si", "values", "mean_z")},
    "out": _out,
    "checkpoint": _out,
    "progress": _progress,
    "filter_correct": _flag,
    "include_bias": _flag,
    "position": _position,
    "pairs": _pairs,
    "batch": _batch,
}


def optional_steps(v: Any, name: str, where: str, m: Any) -> Any:
    """Rule for a list of training steps (``head_dynamics``): None (all) or distinct ints >= 0."""
    return v if v is None else int_sequence(v, name, minimum=0, where=where)


def check_arguments(fn_name: str, arguments: dict[str, Any], *, model_obj: Any = None,
                    rules: dict[str, Callable[..., Any]] | None = None) -> None:
    """Apply :data:`RULES` (``rules`` override entries of it for one function) to ``arguments`` (name -> value) of
    the call ``fn_name(...)``."""
    where = f"{fn_name}(): "
    table = {**RULES, **(rules or {})}
    for name, value in arguments.items():
        rule = table.get(name)
        if rule is not None:
            rule(value, name, where, model_obj)


def literal_options(annotation: Any) -> tuple[Any, ...] | None:
    """The values a ``Literal`` annotation allows (also inside a union: ``Literal["a", "b"] | int``), or None when
    the annotation has no Literal or also admits any string."""
    import typing

    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return typing.get_args(annotation)
    if origin is typing.Union or type(annotation).__name__ == "UnionType":
        members = typing.get_args(annotation)
        if str in members:
            return None
        found = [v for m in members for v in (literal_options(m) or ())]
        return tuple(found) or None
    return None


def annotations(f: Callable[..., Any]) -> dict[str, Any]:
    """``f``'s parameter annotations, evaluated in the module that wrote them (not a type checker's wrapper); a name
    imported only for type checking is left out."""
    scope = inspect.unwrap(f).__globals__
    out = {}
    for name, p in inspect.signature(f).parameters.items():
        ann = p.annotation
        if isinstance(ann, str):
            try:
                ann = eval(ann, scope)  # noqa: S307 - the function's own annotation, in its own module
            except Exception:  # noqa: BLE001 - a name only imported for type checking: not a mode
                continue
        out[name] = ann
    return out


def _mode_rules(f: Callable[..., Any]) -> dict[str, tuple[Any, ...]]:
    """Parameter name -> allowed values, for every parameter of ``f`` annotated with a ``Literal`` (the one place
    where modes are checked: the annotation is the table)."""
    return {name: opts for name, ann in annotations(f).items() if (opts := literal_options(ann)) is not None}


def mode(value: Any, name: str, options: Sequence[Any], *, where: str = "") -> Any:
    """A mode argument: one of the ``Literal`` values ``options``; a value of another kind (an int position where
    the union admits one, a callable metric, ...) is left to the other rules."""
    if isinstance(value, str) and value not in options:
        raise TlensICLError(f"{where}{name} must be one of {tuple(o for o in options if isinstance(o, str))}, "
                            f"got {describe(value)}.")
    return value


def checked(fn: F | None = None, *, eval_mode: bool = True, model_name: bool = False,
            rules: dict[str, Callable[..., Any]] | None = None) -> Any:
    """Decorator: validate ``fn``'s arguments by :data:`RULES` (and its ``model``) before it runs.

    ``model`` (if the function has one) must be a TransformerLens model, in eval mode unless ``eval_mode=False``
    (``None`` where that is the parameter's default); layer and head arguments are checked against it. With
    ``model_name=True`` the function takes a model *name* instead (e.g. ``head_dynamics`` loads checkpoints):
    it must be a non-empty string or path.
    """
    def wrap(f: F) -> F:
        sig = inspect.signature(f)
        name = f.__qualname__
        modes: dict[str, tuple[Any, ...]] = {}
        resolved = []

        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            values = dict(bound.arguments)
            m = values.pop("model", None)
            if model_name:
                if not isinstance(m, (str, os.PathLike)) or not str(m):
                    raise TlensICLError(f"{name}(): model must be a model name or folder (it loads the training "
                                        f"checkpoints itself), got {describe(m)}.")
                m = None
            elif "model" in sig.parameters and not (m is None and sig.parameters["model"].default is None):
                model(m, f"{name}()", eval_mode=eval_mode)
            if not resolved:  # annotations are read on the first call (their names exist by then)
                modes.update(_mode_rules(f))
                resolved.append(True)
            for k, options in modes.items():
                mode(values.get(k), k, options, where=f"{name}(): ")
            check_arguments(name, {k: v for k, v in values.items()
                                   if sig.parameters[k].kind not in (inspect.Parameter.VAR_KEYWORD,
                                                                     inspect.Parameter.VAR_POSITIONAL)},
                            model_obj=m, rules=rules)
            return f(*args, **kwargs)

        wrapper.__signature__ = sig  # type: ignore[attr-defined]
        wrapper.__checked__ = True  # type: ignore[attr-defined]  # read by tests/test_vocabulary.py
        return wrapper  # type: ignore[return-value]

    return wrap(fn) if fn is not None else wrap
