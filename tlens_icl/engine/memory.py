"""Memory: rows per forward from a memory budget, and back-off on out-of-memory without losing work.

Two layers keep a forward pass inside the device's memory:

* **a budget** (:func:`memory_budget`): rows per forward are chosen so one forward's activations fit it
  (the engine's row planner, :func:`tlens_icl.engine.runs.rows_per_forward`, takes it; it counts logits only
  at the positions a forward unembeds - the query, the answer, or none - see :func:`tlens_icl.engine.runs.logit_rows`). On CUDA devices the default is half the free memory of the
  fullest device the model uses (a split model is bounded by its tightest GPU); elsewhere
  :data:`DEFAULT_BUDGET`. ``TLENS_ICL_MEMORY_BUDGET`` (bytes, or with a ``KiB/MiB/GiB`` suffix) overrides it.
* **back-off** (:func:`in_plan`, the chunk loop of the engine's capture, query logits, answer scores, query
  interventions, ablation sweep and activation patching):
  the estimate can be wrong (fragmentation, another process on the GPU). A chunk that raises ``torch.OutOfMemoryError`` is retried with half the rows, down to one row, and every
  later chunk keeps the smaller size; chunks already finished are kept, so no work is lost and the result
  is the one an unbounded run gives (rows are independent). One warning per model says what happened.
"""

from __future__ import annotations

import gc
import os
import re
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from tlens_icl.errors import TlensICLError

#: Bytes of activations one forward may use when no GPU says otherwise (CPU: RAM is rarely the limit).
DEFAULT_BUDGET = 1 << 30
#: Fraction of the tightest GPU's free memory one forward may use.
GPU_FRACTION = 0.5
BUDGET_ENV = "TLENS_ICL_MEMORY_BUDGET"


def parse_bytes(text: str) -> int:
    """``"512MiB"``, ``"2GiB"``, ``"1.5GB"`` or ``"1000000"`` as a number of bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?i?B)?\s*", text, re.I)
    if not m:
        raise TlensICLError(f"{BUDGET_ENV}={text!r} is not a size (e.g. 2GiB, 512MiB, 1000000).")
    unit = (m.group(2) or "B").upper()
    power = {"B": 0, "K": 1, "M": 2, "G": 3, "T": 4}[unit[0]]
    base = 1024 if "I" in unit else 1000
    return int(float(m.group(1)) * base**power)


def model_devices(model: Any) -> set[torch.device]:
    """The devices holding the model's (materialised) parameters; empty for a remote model."""
    try:
        return {p.device for p in model.parameters() if p.device.type != "meta"}
    except (AttributeError, TypeError):
        return set()


def memory_budget(model: Any) -> int:
    """Bytes one forward's activations may use: env override, else GPU free memory, else :data:`DEFAULT_BUDGET`."""
    env = os.environ.get(BUDGET_ENV)
    if env:
        return parse_bytes(env)
    cuda = [d for d in model_devices(model) if d.type == "cuda"]
    if cuda and torch.cuda.is_available():
        free = min(torch.cuda.mem_get_info(d)[0] for d in cuda)
        return max(1 << 20, int(GPU_FRACTION * free))
    return DEFAULT_BUDGET


def is_oom(error: BaseException) -> bool:
    """True for an out-of-memory error of any torch backend."""
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower())


def _release() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def in_plan(plan: Sequence[tuple[Tensor, int]], work: Callable[[Tensor, int], None], *, model: Any = None,
            what: str = "forward") -> int:
    """Call ``work(rows, width)`` on each chunk of a row plan (``(row indices, width)``, as
    :func:`tlens_icl.engine.runs.length_chunks` makes), backing off on OOM.

    A chunk that runs out of memory is run again as its first half and the rest, down to one row; every
    later chunk is cut to the smaller size too (at its own width: exact, since rows are independent and
    each chunk is already cut after its longest row). ``work`` must write its outputs only once it
    succeeds. Returns the chunk size that was used last.
    """
    from tlens_icl.models.adapter import warn_once

    queue = deque((torch.as_tensor(rows), int(width)) for rows, width in plan)
    size = max((len(rows) for rows, _ in queue), default=1)
    if size < 1:
        raise TlensICLError(f"batch size must be >= 1, got {size}.")
    while queue:
        rows, width = queue.popleft()
        if len(rows) > size:
            queue.appendleft((rows[size:], width))
            rows = rows[:size]
        try:
            work(rows, width)
        except RuntimeError as e:
            if not is_oom(e) or len(rows) == 1:
                raise
            _release()
            smaller = max(1, len(rows) // 2)
            warn_once(model, f"oom:{what}", f"tlens_icl: out of memory in {what} with {len(rows)} rows per forward; "
                      f"continuing with {smaller} (finished rows kept). Pass a smaller batch_size or set "
                      f"{BUDGET_ENV} to avoid the retries.", stacklevel=4)
            size = smaller
            queue.appendleft((rows, width))
    return size


def in_chunks(n: int, size: int, work: Callable[[slice], None], *, model: Any = None, what: str = "forward") -> int:
    """:func:`in_plan` over consecutive chunks of ``range(n)`` of at most ``size`` rows; ``work`` takes a slice."""
    if size < 1:
        raise TlensICLError(f"batch size must be >= 1, got {size}.")
    plan = [(torch.arange(start, min(n, start + size)), 0) for start in range(0, n, size)]
    if not plan:
        return size
    return in_plan(plan, lambda rows, _: work(slice(int(rows[0]), int(rows[-1]) + 1)), model=model, what=what)


__all__ = ["BUDGET_ENV", "DEFAULT_BUDGET", "in_chunks", "in_plan", "is_oom", "memory_budget", "model_devices", "parse_bytes"]
