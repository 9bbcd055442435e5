"""Resumable long runs: each finished unit of work is written to a folder at once; a re-run loads it.

A long analysis (many tasks x prompts on a big model: the 18-task universal-head scan, the main job) is
cut into *units* - e.g. one task's mean activations, one chunk of its corrupted prompts. With a
checkpoint folder, each unit's output is written the moment it is computed (to a temporary file, then
renamed: a unit file is complete or absent, never half-written). Called again with the same arguments,
the analysis loads every finished unit instead of computing it, so a run interrupted mid-way (a crash, a
pre-empted job, Ctrl-C) loses at most the unit it was in, and the final result is bit-identical to an
uninterrupted run: units are computed by the same code whether or not a folder is given, and tensors are
stored exactly (safetensors; JSON values round-trip).

The folder records the run it belongs to (``run.json``: the analysis, all of its arguments, the model's
identity - name, sizes and weight fingerprint - and the library version). Reopening it for a different
run raises :class:`CheckpointMismatchError` naming what differs, instead of mixing units of two runs.
Every unit file carries the digest of its run (``run_id``), so a unit copied in from another run's
folder (another seed, another model) is refused too, instead of being reused. Folders written before
units were stamped (``run.json`` without ``"format"``) still resume: their run is compared on the keys
they recorded, and their unstamped units are accepted.

Usage inside an analysis (the only per-analysis code)::

    ck = open_checkpoint(checkpoint, "indirect_effect", {"tasks": names, "n_mean": n_mean, ...}, model)
    mean_z = ck.unit(f"{task}/mean", lambda: compute_mean(...))

``open_checkpoint(None, ...)`` returns a pass-through that only computes, so the analysis has one code path.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import torch
from torch import Tensor

from tlens_icl._typing import ModelLike
from tlens_icl.errors import CheckpointMismatchError, ResultFileError, TlensICLError
from tlens_icl.results.base import Result, default_mode, jsonable, run_info

V = TypeVar("V")
RUN_FILE = "run.json"
UNITS = "units"
#: ``run.json``'s format: 2 = units stamped with their run's digest.
FORMAT = 2
#: Key of the safetensors metadata entry holding a unit's structure, and of the one holding its run's digest.
_META_KEY = "tlens_icl_unit"
_RUN_KEY = "tlens_icl_run"
#: The run digest beside a unit saved as a Result folder.
STAMP_FILE = "run_id"


class Checkpoint:
    """Finished units of one run under ``folder`` (see the module docstring)."""

    def __init__(self, folder: str | Path, run: Mapping[str, Any]) -> None:
        self.folder = Path(folder)
        self.run = json.loads(json.dumps(jsonable({**dict(run), "format": FORMAT})))
        self.run_id = run_digest(self.run)
        self.loaded = 0  # units read from the folder in this call
        self.computed = 0  # units computed (and written) in this call
        self.legacy = False  # a folder written before units carried their run's digest
        path = self.folder / RUN_FILE
        if path.is_file():
            try:
                recorded = json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ResultFileError(f"{path}: not valid JSON ({e}); delete the folder to start over.") from e
            self.legacy = isinstance(recorded, dict) and "format" not in recorded
            expected = _restrict(self.run, recorded) if self.legacy else self.run
            if recorded != expected:
                raise CheckpointMismatchError(
                    f"{self.folder} holds a checkpoint of another run ({_differences(recorded, expected)}). "
                    "Resume with the same arguments, choose another folder, or delete it to start over.")
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
            _atomic_write_text(path, json.dumps(self.run, indent=1, sort_keys=True) + "\n")
        (self.folder / UNITS).mkdir(exist_ok=True)

    def _check_stamp(self, key: str, stamp: Any, path: Path) -> None:
        """A finished unit must come from this run (its ``run_id``); unstamped units only in a legacy folder."""
        if stamp == self.run_id or (stamp is None and self.legacy):
            return
        what = "carries no run digest" if stamp is None else f"belongs to another run (run_id {stamp})"
        raise CheckpointMismatchError(
            f"{path}: unit {key!r} {what}, not to this run ({self.run_id}) - it was copied in from another checkpoint "
            "folder, whose arguments or model differ. Delete it to recompute that unit.")

    def done(self) -> list[str]:
        """Keys of the units finished so far (sorted)."""
        out = []
        for p in (self.folder / UNITS).iterdir():
            if p.name.startswith("."):
                continue  # a temporary file of a unit being written
            stem = p.name[: -len(".safetensors")] if p.name.endswith(".safetensors") else p.name
            out.append(_unquote(stem))
        return sorted(out)

    def unit(self, key: str, compute: Callable[[], V], *, result_type: type[Result] | None = None) -> V:
        """The value of unit ``key``: loaded if it is finished, else ``compute()``, written at once, returned.

        Values are tensors, JSON values, and dicts/lists/tuples of them; or, with ``result_type``, a
        :class:`~tlens_icl.results.base.Result` of that class (saved with its own ``save``/``load``).
        """
        if not key or not isinstance(key, str):
            raise TlensICLError(f"A unit key must be a non-empty string, got {key!r}.")
        name = quote(key, safe="")
        if result_type is not None:
            path = self.folder / UNITS / name
            if (path / "meta.json").is_file():
                stamp = path / STAMP_FILE
                self._check_stamp(key, stamp.read_text().strip() if stamp.is_file() else None, path)
                self.loaded += 1
                return result_type.load(path)  # type: ignore[return-value]
            value = compute()
            if not isinstance(value, result_type):
                raise TlensICLError(f"Unit {key!r} computed a {type(value).__name__}, not a {result_type.__name__}.")
            tmp = self.folder / UNITS / f".{name}.{uuid.uuid4().hex}"
            value.save(tmp)
            (tmp / STAMP_FILE).write_text(self.run_id + "\n")
            os.replace(tmp, path)
            self.computed += 1
            return value
        path = self.folder / UNITS / f"{name}.safetensors"
        if path.is_file():
            value, stamp = _read_unit(path)
            self._check_stamp(key, stamp, path)
            self.loaded += 1
            return value
        value = compute()
        _write_unit(path, value, self.run_id)
        self.computed += 1
        return value


class NoCheckpoint:
    """The pass-through used without a folder: every unit is computed, nothing is written."""

    folder = None
    loaded = 0

    def __init__(self) -> None:
        self.computed = 0

    def done(self) -> list[str]:
        return []

    def unit(self, key: str, compute: Callable[[], V], *, result_type: type[Result] | None = None) -> V:
        self.computed += 1
        return compute()


def open_checkpoint(folder: str | Path | None, analysis: str, arguments: Mapping[str, Any],
                    model: ModelLike | None = None) -> Checkpoint | NoCheckpoint:
    """The checkpoint of ``analysis`` run with ``arguments`` on ``model`` in ``folder`` (None: no checkpoint).

    The run's identity is the analysis name, its arguments (JSON-able; tasks by name), the model's identity
    from :func:`~tlens_icl.results.base.run_info` (name, shape, dtype) and the tlens_icl version.
    """
    if folder is None:
        return NoCheckpoint()
    return Checkpoint(folder, {"analysis": analysis, "arguments": dict(arguments), **_identity(model)})


def run_digest(run: Mapping[str, Any]) -> str:
    """A short hash of a run's identity (its ``run.json`` content)."""
    return hashlib.sha256(json.dumps(run, sort_keys=True).encode()).hexdigest()[:16]


def _restrict(run: Any, recorded: Any) -> Any:
    """``run`` cut to the keys a legacy ``run.json`` recorded (dicts recursively), to compare it with that file."""
    if isinstance(run, dict) and isinstance(recorded, dict):
        return {k: _restrict(run[k], recorded[k]) for k in recorded if k in run}
    return run


def digest(*tensors: Tensor) -> str:
    """A short hash of tensors' dtypes, shapes and bytes (e.g. a run's prompt tokens: tasks, seeds, template and
    tokenizer at once)."""
    h = hashlib.sha1()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def _identity(model: ModelLike | None) -> dict[str, Any]:
    info = run_info(model)
    keep = ("tlens_icl", "model", "model_fingerprint", "n_layers", "n_heads", "d_model", "d_head", "dtype")
    return {"run": {k: info[k] for k in keep if k in info}}


def _differences(old: Any, new: Any, prefix: str = "") -> str:
    """A short list of the keys whose values differ, ``key: old -> new``."""
    if isinstance(old, dict) and isinstance(new, dict):
        parts = []
        for k in sorted(set(old) | set(new)):
            if old.get(k) != new.get(k):
                parts.append(_differences(old.get(k), new.get(k), f"{prefix}{k}."))
        return "; ".join(p for p in parts if p)[:600]
    return f"{prefix.rstrip('.')}: {json.dumps(old)[:80]} -> {json.dumps(new)[:80]}"


def _unquote(stem: str) -> str:
    from urllib.parse import unquote

    return unquote(stem)


# ---- unit files: tensors in safetensors, the structure as JSON in its metadata ---------------------
def _encode(value: Any, tensors: dict[str, Tensor]) -> Any:
    if isinstance(value, Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = value.detach().cpu().contiguous()
        return {"__tensor__": name}
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TlensICLError("Unit values may only hold dicts with string keys.")
        return {"__dict__": {k: _encode(v, tensors) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        return {"__tuple__" if isinstance(value, tuple) else "__list__": [_encode(v, tensors) for v in value]}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    raise TlensICLError(f"A unit value cannot hold a {type(value).__name__} (tensors, JSON values, dicts, lists, "
                        "tuples; or a Result with result_type=...).")


def _decode(doc: Any, tensors: dict[str, Tensor]) -> Any:
    if isinstance(doc, dict):
        if "__tensor__" in doc:
            return tensors[doc["__tensor__"]]
        if "__dict__" in doc:
            return {k: _decode(v, tensors) for k, v in doc["__dict__"].items()}
        if "__tuple__" in doc:
            return tuple(_decode(v, tensors) for v in doc["__tuple__"])
        if "__list__" in doc:
            return [_decode(v, tensors) for v in doc["__list__"]]
    return doc


def _write_unit(path: Path, value: Any, run_id: str) -> None:
    from safetensors.torch import save_file

    tensors: dict[str, Tensor] = {}
    doc = _encode(value, tensors)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    save_file(tensors, str(tmp), metadata={_META_KEY: json.dumps(doc), _RUN_KEY: run_id})
    default_mode(tmp)
    os.replace(tmp, path)


def _read_unit(path: Path) -> tuple[Any, str | None]:
    """A unit's value and the digest of the run that wrote it (None: written before units were stamped)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        doc = json.loads(meta[_META_KEY])
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error type for a damaged file
        raise ResultFileError(f"{path}: not a readable checkpoint unit ({type(e).__name__}: {e}); delete it to "
                              "recompute that unit.") from e
    return _decode(doc, tensors), meta.get(_RUN_KEY)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_text(text)
    os.replace(tmp, path)


__all__ = ["Checkpoint", "NoCheckpoint", "digest", "open_checkpoint", "run_digest"]
