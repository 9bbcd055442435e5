"""Frozen result objects: tensors + JSON metadata, saved as ``tensors.safetensors`` + ``meta.json``.

Subclasses are ``@dataclass(frozen=True)`` whose fields are tensors or JSON-able values, and
implement ``to_dataframe()`` and ``plot()``. Saving never uses pickle.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor

from tlens_icl._typing import ModelLike
from tlens_icl.errors import ResultFileError, TlensICLError

SCHEMA_VERSION = 1
R = TypeVar("R", bound="Result")
#: Every result class by name (filled as classes are defined), for :func:`load`.
_CLASSES: dict[str, type] = {}


def run_info(model: ModelLike | None = None, **extra: Any) -> dict[str, Any]:
    """Provenance recorded in every result: versions, model identity, weight-processing state.

    The model's identity is its name and ``model_fingerprint`` (:func:`tlens_icl.models.fingerprint.model_fingerprint`:
    its sizes and a sample of its weights), so a result used with another model is refused
    (:func:`require_same_model`). ``prepend_bos`` is the model's default (what prompts built without
    ``prepend_bos=`` use); an analysis whose prompts chose otherwise passes ``prepend_bos=batch.prepend_bos``.
    """
    from importlib.metadata import version

    from tlens_icl import __version__
    from tlens_icl.models.adapter import unwrap
    from tlens_icl.models.fingerprint import model_fingerprint
    from tlens_icl.models.adapter import model_meta
    from tlens_icl.prompts.batch import resolve_prepend_bos

    info: dict[str, Any] = {"tlens_icl": __version__, "transformer_lens": version("transformer-lens")}
    if model is not None:
        model = unwrap(model)  # a ModelHandle: the model itself
        cfg = model.cfg
        info.update(
            model=model_meta(model).get("name") or getattr(cfg, "model_name", None) or type(model).__name__,
            n_layers=int(cfg.n_layers),
            n_heads=int(cfg.n_heads),
            d_model=int(cfg.d_model),
            d_head=int(cfg.d_head),
            model_fingerprint=model_fingerprint(model),
            dtype=str(getattr(cfg, "dtype", "")),
            compatibility_mode=bool(getattr(model, "compatibility_mode", False)),
            prepend_bos=resolve_prepend_bos(model, None),
        )
        source = model_meta(model).get("source")
        if isinstance(source, dict):  # a converted GGUF: which file, from which packages, quantized how, under which licence
            info["model_source"] = {k: source[k] for k in ("file", "sha256", "packages", "quantization", "license")
                                    if k in source}
    info.update({k: jsonable(v) for k, v in extra.items()})
    return info


def require_same_model(model: ModelLike, source: Any, what: str, *, where: str = "") -> None:
    """Raise :class:`~tlens_icl.errors.ModelMismatchError` if ``source`` (a result, or its ``info`` dict) was computed
    on another model than ``model``: its recorded ``model_fingerprint`` differs from ``model``'s.

    Nothing is compared where either fingerprint is unknown (a result saved before fingerprints were recorded,
    a remote model whose weights cannot be read, a plain tensor).
    """
    from tlens_icl.errors import ModelMismatchError
    from tlens_icl.models.fingerprint import model_fingerprint

    info = source if isinstance(source, dict) else getattr(source, "info", None)
    recorded = info.get("model_fingerprint") if isinstance(info, dict) else None
    if not recorded:
        return
    now = model_fingerprint(model)
    if now is not None and now != recorded:
        here = run_info(model)["model"]
        raise ModelMismatchError(
            f"{where}{what} was computed on model {info.get('model')!r} (fingerprint {recorded}), not on this model "
            f"{here!r} (fingerprint {now}): its heads, means and directions belong to that model's weights. Recompute "
            "it on this model.")
def default_mode(path: str | Path) -> Path:
    """Give ``path`` the mode a plain ``open()`` would (0666 less the umask: 0644 usually); safetensors writes
    its files 0600, which other readers of a shared results folder cannot open."""
    import os

    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)
    return Path(path)


def jsonable(v: Any) -> Any:
    """``v`` as plain JSON values: dicts (string keys) and sequences element by element, a one-element tensor as
    its number, anything else as its ``str``."""
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, Tensor) and v.numel() == 1:
        return v.item()
    return str(v)


def _tupled(v: Any) -> Any:
    return tuple(_tupled(x) for x in v) if isinstance(v, list) else v


class Result:
    """Base class: ``save``/``load``, ``to_dataframe``, ``plot``, ``export`` and a compact display.

    ``repr(result)`` is a few lines (the class, its :meth:`summary`, the tensor shapes), never raw tensors;
    in Jupyter ``_repr_html_`` shows the summary, a small figure and the :meth:`display_table`.

    What a loaded file must satisfy besides its schema (:meth:`load`) is declared per class: ``finite`` (tensor
    fields that never hold NaN/inf), ``measured`` (tensor fields that may hold NaN for what was not measured, but
    not only NaN), ``choices`` (field -> the values it can take; a callable returns them), ``same_as_info``
    (fields that the analysis also records in ``info``, so the two must agree).
    """

    title: ClassVar[str] = "Result"
    finite: ClassVar[tuple[str, ...]] = ()
    measured: ClassVar[tuple[str, ...]] = ()
    choices: ClassVar[dict[str, Any]] = {}
    same_as_info: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _CLASSES[cls.__name__] = cls  # what load() dispatches on
        # @dataclass keeps a __repr__ the class already defines: give every subclass the compact one.
        if "__repr__" not in cls.__dict__:
            cls.__repr__ = Result.__repr__  # type: ignore[method-assign]

    def to_dataframe(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def plot(self, **kwargs: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def summary(self) -> str:
        return self.title

    def table(self) -> Any:
        """A readable table of the headline numbers (a DataFrame). Base: :meth:`to_dataframe`; results with a
        natural pivot (tasks x shots, layers x heads ...) override it."""
        return self.to_dataframe()

    # ---- labels shared by figures and summaries -----------------------------------------------------
    @property
    def model_name(self) -> str:
        """The model the result was computed on (from ``info``), or ``"unknown model"``."""
        info = getattr(self, "info", None) or {}
        return str(info.get("model") or "unknown model")

    def _subtitle(self, *parts: str) -> str:
        """``model; part; part`` for a figure's subtitle (empty parts are skipped)."""
        model = [] if self.model_name == "unknown model" else [f"model {self.model_name}"]
        return "; ".join([*model, *[p for p in parts if p]])

    # ---- persistence -------------------------------------------------------------------------
    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write ``path/tensors.safetensors`` and ``path/meta.json``; a folder that is not empty is refused (as
        ``tlens-icl --out`` refuses it) unless ``overwrite=True`` (files of the same name are then replaced)."""
        from safetensors.torch import save_file

        from tlens_icl._validate import output_dir

        path = output_dir(path, "path", where=f"{type(self).__name__}.save(): ")
        if path.is_dir() and any(path.iterdir()) and not overwrite:
            raise TlensICLError(f"{path} is not empty; save into a new folder, or pass overwrite=True to replace "
                                "the result files there.")
        path.mkdir(parents=True, exist_ok=True)
        tensors, meta = {}, {}
        for f in fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if isinstance(v, Tensor):
                tensors[f.name] = v.detach().cpu().contiguous()
            else:
                meta[f.name] = jsonable(v)
        save_file(tensors, str(path / "tensors.safetensors"))
        default_mode(path / "tensors.safetensors")
        meta = json.loads(json.dumps(meta))  # as it will read back
        doc = {"schema": SCHEMA_VERSION, "class": type(self).__name__, "fields": meta,
               "digest": content_digest(tensors, meta)}
        (path / "meta.json").write_text(json.dumps(doc, indent=1) + "\n")
        return path

    @classmethod
    def load(cls: type[R], path: str | Path) -> R:
        """Read a result written by :meth:`save`, validated before it is built.

        Raises :class:`~tlens_icl.errors.ResultFileError` (naming the file and the problem) for a missing or
        truncated file, a schema version this tlens_icl does not know, another result class, field names
        that do not match the class, a tensor where a value belongs (or the reverse), a wrong dtype kind,
        tensors whose shapes disagree with each other or with the labels and model recorded beside them
        (layers, heads, ``d_model``, ``d_head``), a file changed after it was saved (its content digest),
        and values the result cannot hold: NaN where it is always measured, nothing but NaN, an unknown
        mode (metric, corruption, ...), a negative shot count, a head outside the model, a label tuple that
        disagrees with the same list in ``info``. Files saved before the digest was recorded are validated
        by the rest; an unknown mode there only warns (it may be a custom metric's name).
        """
        from safetensors.torch import load_file

        from tlens_icl._validate import path_arg

        path = path_arg(path, "path", where=f"{cls.__name__}.load(): ")
        meta_path, tensor_path = path / "meta.json", path / "tensors.safetensors"
        for f in (meta_path, tensor_path):
            if not f.is_file():
                raise ResultFileError(f"{path}: no {f.name} (a saved result is a folder with meta.json and "
                                      "tensors.safetensors).")
        try:
            doc = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ResultFileError(f"{meta_path}: not valid JSON ({e}); the file is truncated or corrupt.") from e
        if not isinstance(doc, dict) or not isinstance(doc.get("fields"), dict):
            raise ResultFileError(f"{meta_path}: missing 'schema', 'class' or 'fields'.")
        schema = doc.get("schema")
        if not isinstance(schema, int) or isinstance(schema, bool) or schema < 1:
            raise ResultFileError(f"{meta_path}: schema version {schema!r} is not a version tlens_icl writes.")
        if schema > SCHEMA_VERSION:
            raise ResultFileError(f"{meta_path}: written with result schema {schema}, newer than this tlens_icl "
                                  f"({SCHEMA_VERSION}); upgrade tlens_icl to read it.")
        if doc.get("class") != cls.__name__:
            raise ResultFileError(f"{path} holds a {doc.get('class')}, not a {cls.__name__}.")
        try:
            tensors = load_file(str(tensor_path))
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error type for a damaged file
            raise ResultFileError(f"{tensor_path}: cannot be read ({type(e).__name__}: {e}); the file is truncated "
                                  "or corrupt.") from e
        kwargs: dict[str, Any] = dict(tensors)
        for name, v in doc["fields"].items():
            kwargs[name] = v if isinstance(v, dict) else _tupled(v)
        clash = sorted(set(tensors) & set(doc["fields"]))
        if clash:
            raise ResultFileError(f"{path}: field(s) {clash} appear both as tensors and as values.")
        _check_fields(cls, kwargs, tensors, path)
        stamped = "digest" in doc
        if stamped and doc["digest"] != content_digest(tensors, doc["fields"]):
            raise ResultFileError(f"{path}: its content changed after it was saved (the digest in meta.json does not "
                                  "match the tensors and values); a result file is not edited by hand - recompute it.")
        _check_values(cls, kwargs, path, strict=stamped)
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as e:
            raise ResultFileError(f"{path}: the saved fields do not make a valid {cls.__name__}: {e}") from e

    # ---- figures, tables and export ---------------------------------------------------------------
    def figures(self, **plot_kwargs: Any) -> dict[str, Any]:
        """Every figure of the result by file stem (``""``: the main :meth:`plot`); subclasses add more."""
        return {"": self.plot(**plot_kwargs)}

    def display_table(self) -> Any:
        """The compact table shown in Jupyter and in reports: an overridden ``table()``, else ``top_table()``,
        else the first rows of :meth:`to_dataframe`."""
        if type(self).table is not Result.table:
            return self.table()
        top = getattr(self, "top_table", None)
        return top() if callable(top) else self.to_dataframe().head(12)

    def export(self, out: str | Path, name: str, *, overwrite: bool = False, **plot_kwargs: Any) -> Path:
        """Save the result into folder ``out``: ``tensors.safetensors`` + ``meta.json``, ``<name>.csv``
        (:meth:`to_dataframe`) and ``<name>[_<figure>].png`` for each of :meth:`figures`. Returns ``out``.
        A folder that is not empty needs ``overwrite=True`` (as in :meth:`save`)."""
        import matplotlib.pyplot as plt

        out = self.save(out, overwrite=overwrite)
        self.to_dataframe().to_csv(out / f"{name}.csv", index=False)
        for stem, fig in self.figures(**plot_kwargs).items():
            fig.savefig(out / f"{name}{'_' + stem if stem else ''}.png", dpi=150)
            plt.close(fig)
        return out

    # ---- display -----------------------------------------------------------------------------
    def __repr__(self) -> str:
        shapes = ", ".join(f"{f.name} {list(v.shape)}" for f in fields(self)  # type: ignore[arg-type]
                           if isinstance(v := getattr(self, f.name), Tensor))
        return (f"<{type(self).__name__}: {self.summary()}>\n  tensors: {shapes or 'none'}\n"
                "  .plot()  .to_dataframe()  .save(path)  .export(folder, name)")

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))

    def _repr_html_(self) -> str:
        import html as _html

        from tlens_icl.viz.plots import figure_png

        parts = [f"<div><b>{_html.escape(type(self).__name__)}</b>: {_html.escape(self.summary())}</div>",
                 "<div style='display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start'>"]
        try:
            png = figure_png(self.plot(), dpi=72)
            parts.append(f'<img style="max-width:520px" src="data:image/png;base64,{base64.b64encode(png).decode()}"/>')
        except NotImplementedError:
            pass
        parts.append("<div>" + _table_html(self.display_table(), max_rows=16) + "</div></div>")
        return "\n".join(parts)


def _result_class(name: str) -> type[Result] | None:
    """The :class:`Result` subclass called ``name``, or ``None``. A class registers itself when its module is
    imported; a class not yet registered is looked for in ``tlens_icl.analyses`` and ``tlens_icl.workflows``, where
    every result class is defined: their modules are imported by name, in order, until the class has registered
    (the one place this layer reaches upward, and only when a saved result of an unloaded class is read)."""
    if name not in _CLASSES:
        import importlib
        import pkgutil

        for package in ("tlens_icl.analyses", "tlens_icl.workflows"):
            pkg = importlib.import_module(package)
            for info in pkgutil.walk_packages(pkg.__path__, package + "."):
                importlib.import_module(info.name)
                if name in _CLASSES:
                    return _CLASSES[name]
    return _CLASSES.get(name)


def load(path: str | Path) -> Result:
    """Load any result written by ``.save()``/``.export()``: ``meta.json`` names its class, whose ``load`` then
    reads and validates the folder (``tlens_icl.load(path)``; ``Cls.load(path)`` does the same for one class)."""
    path = Path(path)
    meta = path / "meta.json"
    if not meta.is_file():
        raise ResultFileError(f"{path}: no meta.json (a saved result is a folder with meta.json and "
                              "tensors.safetensors).")
    try:
        name = json.loads(meta.read_text()).get("class")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
        raise ResultFileError(f"{meta}: not a result's meta.json ({e}).") from e
    cls = _result_class(name) if isinstance(name, str) else None
    if cls is None:
        raise ResultFileError(f"{path} holds a {name!r}, which is not a tlens_icl result class.")
    return cls.load(path)


def _table_html(df: Any, max_rows: int = 40) -> str:
    """A DataFrame as compact HTML (:func:`tlens_icl.viz.html.table_html`: one number format per column, numbers
    right-aligned; long tables cut to ``max_rows``)."""
    from tlens_icl.viz.html import table_html

    return table_html(df, max_rows)


# ---- validation of loaded results ----------------------------------------------------------------
_TENSOR_ANNOTATION = re.compile(r"""\b(Float|Int|Bool|Shaped|Num)\[\s*Tensor\s*,\s*["']([^"']*)["']\s*\]""")
#: a label tuple's length must equal the size of this dimension of the tensors (when both exist).
_LABEL_DIMS = {"tasks": "task", "n_shots": "shots", "methods": "method", "settings": "setting", "layers": "layer",
               "units": "unit", "hypotheses": "hypothesis", "conditions": "example", "queries": "example",
               "meta": "example", "row_labels": "shots", "tokens": "pos"}


def _tensor_specs(cls: type) -> dict[str, tuple[str, list[str], bool]]:
    """Tensor fields of a result class: name -> (dtype kind, dimension names, optional)."""
    out = {}
    for f in fields(cls):  # type: ignore[arg-type]
        ann = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        m = _TENSOR_ANNOTATION.search(ann) if isinstance(ann, str) else None
        if m is not None:
            out[f.name] = (m.group(1), m.group(2).split(), "None" in ann)
        elif isinstance(ann, str) and re.search(r"\bTensor\b", ann):
            out[f.name] = ("Shaped", ["..."], "None" in ann)
    return out


def _check_fields(cls: type, kwargs: dict[str, Any], tensors: dict[str, Tensor], path: Path) -> None:
    """Field names, tensor-vs-value placement, dtype kinds and shape consistency of a loaded result."""
    from dataclasses import MISSING

    declared = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(kwargs) - set(declared))
    missing = sorted(n for n, f in declared.items()
                     if n not in kwargs and f.default is MISSING and f.default_factory is MISSING)
    if unknown or missing:
        raise ResultFileError(f"{path}: fields do not match {cls.__name__}: "
                              f"{f'unknown {unknown}' if unknown else ''}{'; ' if unknown and missing else ''}"
                              f"{f'missing {missing}' if missing else ''}.")
    specs = _tensor_specs(cls)
    sizes: dict[str, int] = {}
    for name, (kind, dims, optional) in specs.items():
        value = kwargs.get(name)
        if value is None and optional:
            continue
        if not isinstance(value, Tensor):
            raise ResultFileError(f"{path}: {cls.__name__}.{name} must be a tensor, got {type(value).__name__}.")
        ok_kind = {"Float": value.is_floating_point(), "Bool": value.dtype == torch.bool,
                   "Int": not value.is_floating_point() and value.dtype != torch.bool and not value.is_complex()}
        if not ok_kind.get(kind, True):
            raise ResultFileError(f"{path}: {cls.__name__}.{name} must be a {kind} tensor, got {value.dtype}.")
        _bind_dims(f"{cls.__name__}.{name}", dims, tuple(value.shape), sizes, path)
    for name in set(kwargs) - set(specs):
        if isinstance(kwargs[name], Tensor):
            raise ResultFileError(f"{path}: {cls.__name__}.{name} is not a tensor field, but the file holds a tensor.")
    for name, dim in _LABEL_DIMS.items():
        value = kwargs.get(name)
        if dim in sizes and isinstance(value, (tuple, list)) and len(value) != sizes[dim]:
            raise ResultFileError(f"{path}: {cls.__name__}.{name} has {len(value)} entries but the tensors' "
                                  f"'{dim}' dimension is {sizes[dim]}.")
    info = kwargs.get("info") if isinstance(kwargs.get("info"), dict) else {}
    recorded = {"d_model": info.get("d_model"), "head": info.get("n_heads"), "d_head": info.get("d_head")}
    if "layers" not in declared:
        recorded["layer"] = info.get("n_layers")
    for dim, n in recorded.items():
        if isinstance(n, int) and dim in sizes and sizes[dim] != n:
            raise ResultFileError(f"{path}: the tensors' '{dim}' dimension is {sizes[dim]}, but the result was made "
                                  f"on a model with {n} (info).")


def content_digest(tensors: dict[str, Tensor], fields_doc: dict[str, Any]) -> str:
    """SHA-256 (32 hex) of a saved result's tensors (names, dtypes, shapes, bytes) and its JSON fields."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    h.update(json.dumps(fields_doc, sort_keys=True).encode())
    return h.hexdigest()[:32]


_HEAD_LABEL = re.compile(r"^L(\d+)H(\d+)$")


def _heads_in(value: Any) -> list[tuple[int, int]]:
    """Every head in a field: ``(layer, head)`` int pairs and ``"L{l}H{h}"`` labels, in nested lists/dicts."""
    if isinstance(value, str):
        m = _HEAD_LABEL.match(value)
        return [(int(m.group(1)), int(m.group(2)))] if m else []
    if isinstance(value, dict):
        return [h for v in value.values() for h in _heads_in(v)]
    if isinstance(value, (list, tuple)):
        if len(value) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in value):
            return [(int(value[0]), int(value[1]))]
        return [h for v in value for h in _heads_in(v)]
    return []


def _shot_counts(value: Any) -> list[Any]:
    if isinstance(value, Tensor):
        return value.flatten().tolist()
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _check_values(cls: type, kwargs: dict[str, Any], path: Path, *, strict: bool) -> None:
    """What a result can hold (see :class:`Result`): finite/measured tensors, known modes, shot counts >= 0, heads
    inside the recorded model, label tuples equal to the same lists in ``info``."""
    import warnings

    name = cls.__name__
    for f in getattr(cls, "finite", ()):
        t = kwargs.get(f)
        if isinstance(t, Tensor) and t.is_floating_point() and not bool(t.isfinite().all()):
            raise ResultFileError(f"{path}: {name}.{f} holds {int((~t.isfinite()).sum())} NaN/inf value(s); it is "
                                  "always measured.")
    for f in getattr(cls, "measured", ()):
        t = kwargs.get(f)
        if isinstance(t, Tensor) and t.is_floating_point() and t.numel() and bool(t.isnan().all()):
            raise ResultFileError(f"{path}: {name}.{f} is NaN everywhere: nothing was measured.")
    for f, allowed in getattr(cls, "choices", {}).items():
        if f not in kwargs:
            continue
        options = allowed() if callable(allowed) else allowed
        values = kwargs[f] if isinstance(kwargs[f], (list, tuple)) else [kwargs[f]]
        bad = [v for v in values if v not in options and not (isinstance(v, str) and v.startswith("custom:"))]
        if bad:
            msg = f"{path}: {name}.{f} = {bad[0]!r} is not one of {tuple(options)}"
            if strict and f != "metric":
                raise ResultFileError(msg + ".")
            # a metric may be a custom function's name recorded before custom names were marked "custom:"
            warnings.warn(f"tlens_icl: {msg} (an unknown mode, or a custom name from an older tlens_icl).",
                          stacklevel=4)
    info = kwargs.get("info") if isinstance(kwargs.get("info"), dict) else {}
    for where, value in (("n_shots", kwargs.get("n_shots")), ("info['n_shots']", info.get("n_shots"))):
        if value is None:
            continue
        for s in _shot_counts(value):
            if not (isinstance(s, int) and not isinstance(s, bool) and s >= 0):
                raise ResultFileError(f"{path}: {name}.{where} holds {s!r}; a shot count is an int >= 0.")
    n_layers, n_heads = info.get("n_layers"), info.get("n_heads")
    if isinstance(n_layers, int) and isinstance(n_heads, int):
        for f in ("heads", "top_fv", "top_induction"):
            for layer, head in _heads_in(kwargs.get(f)):
                if not (0 <= layer < n_layers and 0 <= head < n_heads):
                    raise ResultFileError(f"{path}: {name}.{f} names head L{layer}H{head}, outside the model's "
                                          f"{n_layers} layers x {n_heads} heads (info).")
        for f in ("layers", "layer"):
            v = kwargs.get(f)
            for layer in (v if isinstance(v, (list, tuple)) else [v]):
                if isinstance(layer, int) and not 0 <= layer < n_layers:
                    raise ResultFileError(f"{path}: {name}.{f} holds layer {layer}, outside the model's {n_layers} "
                                          "layers (info).")
    for f in getattr(cls, "same_as_info", ()):
        if f in info and f in kwargs and jsonable(kwargs[f]) != jsonable(info[f]):
            raise ResultFileError(f"{path}: {name}.{f} is {jsonable(kwargs[f])!r} but info records "
                                  f"{jsonable(info[f])!r}; the file's fields disagree with each other.")


def _bind_dims(label: str, dims: list[str], shape: tuple[int, ...], sizes: dict[str, int], path: Path) -> None:
    """Match ``shape`` to jaxtyping-style ``dims`` (names, numbers, one ``*name``/``...``), binding names."""
    star = [i for i, d in enumerate(dims) if d.startswith("*") or d == "..."]
    if star:
        i = star[0]
        head, tail = dims[:i], dims[i + 1:]
        if len(shape) < len(head) + len(tail):
            raise ResultFileError(f"{path}: {label} has shape {list(shape)}, expected [{' '.join(dims)}].")
        pairs = list(zip(head, shape[: len(head)])) + list(zip(tail, shape[len(shape) - len(tail):]))
    else:
        if len(shape) != len(dims):
            raise ResultFileError(f"{path}: {label} has shape {list(shape)}, expected [{' '.join(dims)}].")
        pairs = list(zip(dims, shape))
    for d, n in pairs:
        d = d.lstrip("#")
        if d.isdigit():
            if int(d) != n:
                raise ResultFileError(f"{path}: {label} has shape {list(shape)}, expected [{' '.join(dims)}].")
        elif d and d != "_":
            if d in sizes and sizes[d] != n:
                raise ResultFileError(f"{path}: {label} has '{d}' = {n}, but another field has '{d}' = {sizes[d]}.")
            sizes.setdefault(d, n)


def _equal_nan(x: Tensor, y: Tensor) -> bool:
    """``torch.equal``, with NaN equal to NaN (results mark unmeasured cells with NaN)."""
    if x.shape != y.shape or not torch.equal(x.isnan(), y.isnan()):
        return False
    keep = ~x.isnan()
    return torch.equal(x[keep], y[keep])


def tensors_equal(a: Result, b: Result) -> bool:
    """Exact equality of two results' fields (tensors compared with ``torch.equal``, NaN equal to NaN)."""
    if type(a) is not type(b):
        return False
    for f in fields(a):  # type: ignore[arg-type]
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, Tensor):
            if not (isinstance(y, Tensor) and x.dtype == y.dtype and _equal_nan(x, y)):
                return False
        elif jsonable(x) != jsonable(y):
            return False
    return True
