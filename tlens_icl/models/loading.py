"""Loading models: the embedded ICL models by name, SmolLM2 and any GGUF file, any Hugging Face model, a local folder, or a bridge.

Every function in tlens_icl accepts any object that satisfies TransformerLens's
``TransformerLensModel`` protocol (a bridge, or a TransformerLens 3 ``HookedTransformer``);
:func:`load_model` is only a convenience.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from tlens_icl import _validate
from tlens_icl._typing import ModelLike
from tlens_icl.errors import ModelNotAvailableError, ModelStateError
from tlens_icl.models.adapter import model_meta, model_tasks, record_meta  # noqa: F401 - model_tasks: loading's API

# Per-model defaults that the library attaches without subclassing (e.g. the embedded model's template).
def list_models() -> list[dict[str, Any]]:
    """Models loadable by name: the embedded ones (the default, ``icl-tiny``, first) and the ones downloaded on
    first use (with ``cached``)."""
    from tlens_icl.models.embedded import DEFAULT_MODEL, EMBEDDED_MODELS
    from tlens_icl.models.gguf import DOWNLOADS, cached_folder, requirements

    order = sorted(EMBEDDED_MODELS, key=lambda n: (n != DEFAULT_MODEL, n))  # the default embedded model first
    out = [{"name": name, "kind": "embedded", **{k: v for k, v in EMBEDDED_MODELS[name].items() if k != "path"}}
           for name in order]
    for name, spec in DOWNLOADS.items():
        folder = cached_folder(name)
        reqs = requirements({k: v for k, v in spec.items() if k != "license_package"})
        out.append({"name": name, "kind": "download", "description": spec["description"],
                    "source": reqs[0] if len(reqs) == 1 else f"{len(reqs)} wheels: {reqs[0]} ... {reqs[-1]}",
                    "file": spec["file"], "sha256": spec["sha256"], "quantization": spec["quantization"],
                    "license": spec["license"],
                    "cached": folder is not None, "path": str(folder) if folder else None})
    return out


def _hub_reachable(timeout: float = 1.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes"}:
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _is_cached(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # noqa: BLE001 - any cache-lookup failure means "not cached"
        return False


def load_model(name_or_path: Any = "icl-tiny", *, device: str | None = None, dtype: Any = None,
               step: int | None = None, hooked: bool = False, device_map: str | dict[str, Any] | None = None,
               n_devices: int | None = None, max_memory: dict[Any, Any] | None = None,
               offload_folder: str | os.PathLike[str] | None = None) -> ModelLike:
    """Load a model as a TransformerLens bridge (or a TL3 ``HookedTransformer``) in evaluation mode.

    Args:
        name_or_path: a model name from :func:`list_models` (embedded, or downloaded and converted on
            first use such as ``"smollm2-135m"``; ``"icl-tiny@300"`` is the embedded model's training
            checkpoint at step 300), a ``.gguf`` file (dequantized to float32 once and cached, see
            :mod:`tlens_icl.models.gguf`), a folder written by the embedded training script, a local
            folder saved with ``save_pretrained``, a Hugging Face hub name, or an already-built model - a
            bridge, or a ``HookedTransformer`` under TransformerLens 3 (returned as is, after an eval-mode
            check).
        step: a training checkpoint of an embedded model or training-script folder (same as ``@step``).
        device: torch device for HF models (default: TransformerLens's choice).
        dtype: torch dtype for HF models (e.g. ``torch.bfloat16`` for a big model; analyses accumulate in
            float32 whatever the model's dtype). GGUF files are cached as float32 and cast at load.
        hooked: TransformerLens 3 only: return a ``HookedTransformer`` (embedded models are converted
            without weight processing; hub names go through ``HookedTransformer.from_pretrained_no_processing``).
        device_map, n_devices, max_memory, offload_folder: placement of a Hugging Face model too big for one
            device, passed to ``TransformerBridge.boot_transformers`` (accelerate): ``n_devices=4`` splits the
            blocks over 4 GPUs, ``device_map="auto"`` with ``max_memory={0: "70GiB", 1: "70GiB"}`` fills GPUs up
            to a budget, and an explicit map such as ``{"model.layers.40": "disk", ...}`` with
            ``offload_folder`` keeps some blocks on CPU or disk (TransformerLens 4.3 accepts all-GPU maps
            or all-CPU/disk maps, not the two mixed). ``device`` and ``device_map`` exclude each other.
            See the README's "Big models" section.

    Raises:
        ModelNotAvailableError: a path that does not exist, a download that failed, or a hub name
            that is not cached while the hub is unreachable (one line, at once).
    """
    from tlens_icl.models.fixes import ensure_fixes

    ensure_fixes()
    if not isinstance(name_or_path, (str, os.PathLike)):
        _validate.model(name_or_path, "load_model")
        return name_or_path
    name = str(name_or_path)
    from tlens_icl.models.embedded import (
        EMBEDDED_MODELS,
        embedded_model_path,
        is_model_dir,
        load_dir,
        load_embedded,
        read_card,
    )
    from tlens_icl.models.gguf import DOWNLOADS, download_folder, gguf_folder

    if hooked:
        from tlens_icl.models.hooked import load_hooked, require_hooked_transformer_support

        require_hooked_transformer_support()
    base, at, tail = name.rpartition("@")
    if at and base in EMBEDDED_MODELS:
        if not tail.isdigit():
            raise ModelStateError(f"Expected NAME@STEP with an integer step, got {name!r}.")
        if step is not None and int(tail) != step:
            raise ModelStateError(f"{name!r} and step={step} disagree.")
        name, step = base, int(tail)
    placement = boot_kwargs(device=device, dtype=dtype, device_map=device_map, n_devices=n_devices,
                            max_memory=max_memory, offload_folder=offload_folder)
    if name in EMBEDDED_MODELS or is_model_dir(name):
        split = sorted(k for k, v in placement.items() if k not in ("device", "dtype") and not (k == "n_devices" and v == 1))
        if split:
            raise ModelStateError(f"{', '.join(split)} place a Hugging Face model over devices; {name!r} is a small "
                                  "embedded model that fits one device (pass device=... instead).")
    if name in EMBEDDED_MODELS:
        model = (load_hooked(embedded_model_path(name), device=device, step=step) if hooked
                 else load_embedded(name, device=device, step=step))
        record_meta(model, {"name": name, "step": step,
                            **{k: v for k, v in EMBEDDED_MODELS[name].items() if k != "path"}})
        return _cast(model, dtype)
    if is_model_dir(name):
        model = load_hooked(name, device=device, step=step) if hooked else load_dir(name, name=name, device=device, step=step)
        record_meta(model, {**read_card(name), "name": name, "path": name, "step": step})
        return _cast(model, dtype)
    if step is not None:
        raise ModelStateError(f"step= applies to embedded models and training-script folders, not {name!r}.")
    local = Path(name).expanduser()
    if hooked and (name in DOWNLOADS or name.lower().endswith(".gguf") or local.exists()):
        # from_pretrained only knows official model names
        raise ModelStateError(f"hooked=True loads embedded models and official hub names, not a folder, a GGUF file or "
                              f"a downloaded model ({name}); build the HookedTransformer yourself and pass it in.")
    if name in DOWNLOADS:
        spec = DOWNLOADS[name]
        meta = {"name": name, "description": spec["description"], "default_template": spec["default_template"]}
        return _boot(download_folder(name), name, placement, meta)
    if name.lower().endswith(".gguf"):
        return _boot(gguf_folder(local), name, placement, {"name": local.name})
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelNotAvailableError(f"{local} is a folder but not a saved model (it has no config.json).")
        return _boot(local, name, placement, {"name": name})
    if local.exists():
        raise ModelNotAvailableError(f"{local} is a file; load_model takes a model folder, a .gguf file or a name.")
    if _looks_like_path(name):
        raise ModelNotAvailableError(f"No such model folder or file: {local.resolve()}.")
    if not _is_cached(name) and not _hub_reachable():
        raise ModelNotAvailableError(
            f"Cannot load {name!r}: there is no local folder of that name, and as a Hugging Face hub name it is not "
            f"cached and the hub is unreachable. Models available offline: {sorted(EMBEDDED_MODELS) + sorted(DOWNLOADS)}, "
            "e.g. tlens_icl.load_model('icl-tiny')."
        )
    if hooked:
        from transformer_lens import HookedTransformer

        if set(placement) - {"device", "dtype"}:
            raise ModelStateError("device_map/n_devices/max_memory/offload_folder apply to bridges (hooked=False); for a "
                                  "HookedTransformer over GPUs build it yourself (HookedTransformer.from_pretrained(..., n_devices=N)).")
        model = HookedTransformer.from_pretrained_no_processing(name, **placement)
        model.eval()
        record_meta(model, {"name": name})
        return model
    return _boot(name, name, placement, {"name": name})


def _cast(model: ModelLike, dtype: Any) -> ModelLike:
    """An embedded model (stored in float16, loaded in float32) in ``dtype``; checked, never silently ignored."""
    import torch

    if dtype is None:
        return model
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ModelStateError(f"dtype must be a floating-point torch.dtype (e.g. torch.bfloat16), got {dtype!r}.")
    model.to(dtype)  # type: ignore[attr-defined]
    got = {p.dtype for p in model.parameters() if p.is_floating_point()}  # type: ignore[attr-defined]
    if got != {dtype}:
        raise ModelStateError(f"Casting the model to {dtype} left parameters in {sorted(map(str, got))}.")
    return model


def _looks_like_path(name: str) -> bool:
    """A name no hub id can be: absolute, relative with ./ or ../, ~, backslashes, or more than one '/'."""
    return name.startswith(("/", "./", "../", "~", ".\\")) or "\\" in name or name.count("/") > 1


def _boot(source: str | Path, name: str, placement: dict[str, Any], meta: dict[str, Any]) -> ModelLike:
    """``TransformerBridge.boot_transformers`` in eval mode (``placement`` from :func:`boot_kwargs`), with the
    converted folder's conventions applied."""
    from transformer_lens.model_bridge import TransformerBridge

    from tlens_icl.models.gguf import read_meta

    model = TransformerBridge.boot_transformers(str(source), **placement)
    model.eval()
    converted = read_meta(source) if Path(source).is_dir() else None
    if converted is not None:
        # TransformerLens prepends BOS to every model; a converted GGUF follows its own tokenizer's rule.
        model.cfg.default_prepend_bos = bool(converted.get("add_bos_token", True))
        meta = {**meta, "source": converted.get("source"), "folder": str(source),
                "prepend_bos": model.cfg.default_prepend_bos}
    record_meta(model, meta)
    return model


def boot_kwargs(*, device: Any = None, dtype: Any = None, device_map: Any = None, n_devices: int | None = None,
                max_memory: dict[Any, Any] | None = None, offload_folder: Any = None) -> dict[str, Any]:
    """The placement arguments of ``TransformerBridge.boot_transformers`` that were given (validated).

    Raises :class:`ModelStateError` before any loading for ``device`` with ``device_map``/``n_devices``,
    a non-positive ``n_devices``, or ``offload_folder``/``max_memory`` without a split to apply them to.
    """
    if device is not None and (device_map is not None or (n_devices or 1) > 1):
        raise ModelStateError("device= places the whole model on one device; device_map=/n_devices= split it. "
                              "Pass one of them.")
    if n_devices is not None and (not isinstance(n_devices, int) or isinstance(n_devices, bool) or n_devices < 1):
        raise ModelStateError(f"n_devices must be a positive int, got {n_devices!r}.")
    if offload_folder is not None and device_map is None:
        raise ModelStateError("offload_folder= holds the blocks a device_map sends to 'disk'; pass device_map=... too.")
    if max_memory is not None and device_map is None and (n_devices or 1) <= 1:
        raise ModelStateError("max_memory= budgets the devices of a split; pass device_map='auto' or n_devices=N too.")
    given = {"device": device, "dtype": dtype, "device_map": device_map, "n_devices": n_devices,
             "max_memory": max_memory, "offload_folder": None if offload_folder is None else str(offload_folder)}
    given = {k: v for k, v in given.items() if v is not None}
    if "offload_folder" in given:
        import inspect

        from transformer_lens.model_bridge import TransformerBridge

        if "offload_folder" not in inspect.signature(TransformerBridge.boot_transformers).parameters:
            from importlib.metadata import version

            raise ModelStateError(f"offload_folder= needs TransformerLens >= 4.3 (installed: {version('transformer-lens')}, "
                                  "whose boot_transformers cannot offload blocks to disk); use an all-GPU or all-CPU "
                                  "device_map.")
    return given


def heldout_task(model: ModelLike, task: str) -> Any:
    """The items of ``task`` held out from the embedded model's training (see its card's policy).

    Bitwise tasks: operand pairs never seen in training, as demonstrations or queries. Word tasks: a
    word-level model cannot know unseen words, so the pool is the same and only the prompts are new.
    """
    from tlens_icl.models.embedded import load_heldout
    from tlens_icl.tasks import Task, TaskItem, load_task

    name = model_meta(model).get("name")
    if name is None:
        raise ModelStateError("heldout_task needs an embedded model loaded with tlens_icl.load_model(name).")
    entry = load_heldout(name)["tasks"].get(task)
    if entry is None:
        raise ModelStateError(f"Embedded model {name!r} was not trained on task {task!r}.")
    base = load_task(task)
    items = tuple(TaskItem(d["input"], d["output"]) for d in entry["heldout_items"])
    return Task(**{**base.__dict__, "items": items})
