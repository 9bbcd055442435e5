"""Frozen result objects: tensors + JSON metadata, saved as ``tensors.safetensors`` + ``meta.json``.

Subclasses are ``@dataclass(frozen=True)`` whose fields are tensors or JSON-able values, and
implement ``to_dataframe()`` and ``plot()``. Saving never uses pickle.
"""

from __future__ import annotations

import base64
import io
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
    """Base class: ``save``/``load``, ``to_dataframe``, ``plot`` and a Jupyter ``_repr_html_``."""

    title: ClassVar[str] = "Result"

    def to_dataframe(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def plot(self, **kwargs: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def summary(self) -> str:
        return self.title

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

    def export(self, out: str | Path, name: str, **plot_kwargs: Any) -> Path:
        """Save the result into folder ``out`` and its plot to ``out/<name>.png``; returns ``out``."""
        import matplotlib.pyplot as plt

        out = self.save(out)
        fig = self.plot(**plot_kwargs)
        fig.savefig(out / f"{name}.png", dpi=120, bbox_inches="tight")
        plt.close(fig)
        return out

    # ---- display -----------------------------------------------------------------------------
    def _repr_html_(self) -> str:
        html = [f"<h4>{self.summary()}</h4>"]
        try:
            fig = self.plot()
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
            import matplotlib.pyplot as plt

            plt.close(fig)
            html.append(f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}"/>')
        except NotImplementedError:
            pass
        html.append(self.to_dataframe().head(20).to_html(float_format=lambda x: f"{x:.4g}"))
        return "\n".join(html)


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
