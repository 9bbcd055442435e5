"""Frozen result objects: tensors + JSON metadata, saved as ``tensors.safetensors`` + ``meta.json``.

Subclasses are ``@dataclass(frozen=True)`` whose fields are tensors or JSON-able values, and
implement ``to_dataframe()`` and ``plot()``. Saving never uses pickle.
"""

from __future__ import annotations

import base64
import json
from dataclasses import fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor

from tlens_icl._typing import ModelLike

SCHEMA_VERSION = 1
R = TypeVar("R", bound="Result")


def run_info(model: ModelLike | None = None, **extra: Any) -> dict[str, Any]:
    """Provenance recorded in every result: versions, model identity, weight-processing state."""
    from importlib.metadata import version

    from tlens_icl import __version__
    from tlens_icl.models.loading import model_meta

    info: dict[str, Any] = {"tlens_icl": __version__, "transformer_lens": version("transformer-lens")}
    if model is not None:
        cfg = model.cfg
        info.update(
            model=model_meta(model).get("name") or getattr(cfg, "model_name", None) or type(model).__name__,
            n_layers=int(cfg.n_layers),
            n_heads=int(cfg.n_heads),
            d_model=int(cfg.d_model),
            dtype=str(getattr(cfg, "dtype", "")),
            compatibility_mode=bool(getattr(model, "compatibility_mode", False)),
        )
    info.update({k: _jsonable(v) for k, v in extra.items()})
    return info


def _jsonable(v: Any) -> Any:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, Tensor) and v.numel() == 1:
        return v.item()
    return str(v)


def _tupled(v: Any) -> Any:
    return tuple(_tupled(x) for x in v) if isinstance(v, list) else v


class Result:
    """Base class: ``save``/``load``, ``to_dataframe``, ``plot``, ``export`` and a compact display.

    ``repr(result)`` is a few lines (the class, its :meth:`summary`, the tensor shapes), never raw tensors;
    in Jupyter ``_repr_html_`` shows the summary, a small figure and the :meth:`display_table`.
    """

    title: ClassVar[str] = "Result"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # @dataclass keeps a __repr__ the class already defines: give every subclass the compact one.
        if "__repr__" not in cls.__dict__:
            cls.__repr__ = Result.__repr__  # type: ignore[method-assign]

    def to_dataframe(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def plot(self, **kwargs: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def summary(self) -> str:
        return self.title

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
    def save(self, path: str | Path) -> Path:
        """Write ``path/tensors.safetensors`` and ``path/meta.json``."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors, meta = {}, {}
        for f in fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if isinstance(v, Tensor):
                tensors[f.name] = v.detach().cpu().contiguous()
            else:
                meta[f.name] = _jsonable(v)
        save_file(tensors, str(path / "tensors.safetensors"))
        doc = {"schema": SCHEMA_VERSION, "class": type(self).__name__, "fields": meta}
        (path / "meta.json").write_text(json.dumps(doc, indent=1) + "\n")
        return path

    @classmethod
    def load(cls: type[R], path: str | Path) -> R:
        from safetensors.torch import load_file

        path = Path(path)
        doc = json.loads((path / "meta.json").read_text())
        if doc.get("class") != cls.__name__:
            raise ValueError(f"{path} holds a {doc.get('class')}, not a {cls.__name__}.")
        tensors = load_file(str(path / "tensors.safetensors"))
        kwargs: dict[str, Any] = dict(tensors)
        for name, v in doc["fields"].items():
            kwargs[name] = v if isinstance(v, dict) else _tupled(v)
        return cls(**kwargs)

    # ---- figures, tables and export ---------------------------------------------------------------
    def figures(self, **plot_kwargs: Any) -> dict[str, Any]:
        """Every figure of the result by file stem (``""``: the main :meth:`plot`); subclasses add more."""
        return {"": self.plot(**plot_kwargs)}

    def display_table(self) -> Any:
        """The compact table shown in Jupyter and in reports: ``table()``, ``top_table()`` or the first rows."""
        for name in ("table", "top_table"):
            fn = getattr(self, name, None)
            if callable(fn):
                return fn()
        return self.to_dataframe().head(12)

    def export(self, out: str | Path, name: str, **plot_kwargs: Any) -> Path:
        """Save the result into folder ``out``: ``tensors.safetensors`` + ``meta.json``, ``<name>.csv``
        (:meth:`to_dataframe`) and ``<name>[_<figure>].png`` for each of :meth:`figures`. Returns ``out``."""
        import matplotlib.pyplot as plt

        out = self.save(out)
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


def _table_html(df: Any, max_rows: int = 40) -> str:
    """A DataFrame as compact HTML (4 significant digits; long tables cut to ``max_rows``)."""
    more = len(df) - max_rows
    import pandas as pd

    plain_index = isinstance(df.index, pd.RangeIndex)
    html = df.head(max_rows).to_html(float_format=lambda x: f"{x:.4g}", na_rep="-", border=0, index=not plain_index)
    return html + (f"<div style='color:#666;font-size:.85em'>... {more} more rows (see the CSV)</div>" if more > 0 else "")


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
        elif _jsonable(x) != _jsonable(y):
            return False
    return True
