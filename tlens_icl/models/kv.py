"""Key/value reuse on TransformerLens bridges (3.9+ and 4) around Hugging Face models: the family-specific mechanics.

The engine (:mod:`tlens_icl.engine.query`) reuses an unpatched run's per-layer keys and values to
recompute only the tokens an intervention can change. What that needs from a model family lives here:

* :func:`recording` - a base run that keeps every layer's keys/values (post-rotary, pre-GQA expansion,
  exactly what attention reads) and the attention mask Hugging Face hands each layer (so causal
  masking, padding and sliding windows come from HF itself, as a bool "may attend" ``[b|1, 1, q, k]``).
* :func:`replaying` - later forwards attend to that frozen prefix (nothing is stored, so one base run
  serves any number of replays) under masks the caller gives per layer, optionally skipping the first
  blocks (their ``forward`` becomes the identity; the caller injects the residual at the first block run).

How: TransformerLens's attention bridges (4.x, and 3.9's, which share the code) re-implement attention and call
``past_key_values.update(k, v, layer_idx)`` when their call kwargs hold a cache. A
``forward_pre_hook(with_kwargs=True)`` on every ``model.blocks[l].attn`` injects our own duck-typed
cache object (transformers 5.24 renamed the kwarg HF passes down to ``cache=``, which TransformerLens
4.3 does not read, so the bridge's own ``past_key_values`` route is silently broken on GPT-2, Llama and
Gemma-2; ours does not depend on it). ``boot_native`` models compute keys/values inside their own
attention: :func:`kv_reuse_possible` says no (and were it to say yes, nothing would be recorded,
:func:`recording` would raise :class:`KVUnsupported`), and callers take another exact route. The
masks are whatever Hugging Face hands each layer, so Gemma 3's mix of sliding-window and global
layers, Gemma 2's window and Qwen2's full attention all replay as in the model's own forward. Pitfall handled here: assigning an attribute on a bridge component is forwarded to
the wrapped HF module, so block forwards are replaced with ``object.__setattr__``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from tlens_icl._typing import ModelLike
from tlens_icl.models.adapter import family


class KVUnsupported(RuntimeError):
    """This model's attention does not expose its keys/values for reuse."""


def kv_reuse_possible(model: ModelLike) -> bool:
    """Whether the model may support key/value reuse: a TransformerLens bridge (3.9+ or 4) wrapping the
    attention of a Hugging Face model (not ``boot_native`` attention, which computes its own keys/values).

    A cheap structural check; :func:`recording` proves it on the actual forward (every layer must record).
    """
    if family(model) not in ("tl4_bridge", "tl3_bridge"):
        return False
    blocks = getattr(model, "blocks", None)
    try:
        attn = blocks[0].attn  # type: ignore[index]
    except (TypeError, IndexError, AttributeError):
        return False
    inner = getattr(attn, "original_component", None)
    if inner is None or getattr(inner, "accepts_pattern_fn", False):  # TL 4's native attention
        return False
    return not type(inner).__module__.startswith("transformer_lens.")  # TL 3's native attention


class _RecordingCache:
    """Duck-typed HF cache: ``update`` keeps each layer's keys/values and returns them unchanged."""

    def __init__(self) -> None:
        self.keys: dict[int, Tensor] = {}
        self.values: dict[int, Tensor] = {}

    def update(self, k: Tensor, v: Tensor, layer_idx: int, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
        self.keys[layer_idx], self.values[layer_idx] = k, v
        return k, v

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0


class _FrozenCache:
    """Duck-typed HF cache over a fixed prefix: ``update`` returns ``cat(prefix, new)`` and stores nothing."""

    def __init__(self, keys: Mapping[int, Tensor], values: Mapping[int, Tensor]) -> None:
        self.keys, self.values = keys, values
        self.used: set[int] = set()

    def update(self, k: Tensor, v: Tensor, layer_idx: int, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
        pk, pv = self.keys[layer_idx], self.values[layer_idx]
        self.used.add(layer_idx)
        return torch.cat([pk.to(k.device), k.to(pk.dtype)], -2), torch.cat([pv.to(v.device), v.to(pv.dtype)], -2)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0


def may_attend(mask: Tensor | None, q_len: int, k_len: int) -> Tensor:
    """An HF/TransformerLens attention mask as a bool "may attend" ``[b|1, 1, q, k]`` (None: causal)."""
    if mask is None:
        return torch.ones(q_len, k_len, dtype=torch.bool).tril(k_len - q_len)[None, None]
    if mask.dim() == 2:  # [b, k] padding mask (1 keep) on a causal model
        causal = torch.ones(q_len, k_len, dtype=torch.bool, device=mask.device).tril(k_len - q_len)
        return causal[None, None] & mask.bool()[:, None, None, :]
    if mask.dtype == torch.bool:
        return mask
    return mask > torch.finfo(mask.dtype).min / 2


@dataclass
class Prefix:
    """What a recorded base run leaves behind (see :func:`recording`).

    ``keys[l]``/``values[l]``: ``[batch, n_kv_heads, pos, d_head]`` per attention layer index;
    ``masks[block]``: bool "may attend" ``[batch|1, 1, pos, pos]`` per block (objects shared between
    blocks with the same mask); ``tuple_blocks[block]``: whether the block returns a tuple.
    """

    keys: dict[int, Tensor] = field(default_factory=dict)
    values: dict[int, Tensor] = field(default_factory=dict)
    masks: dict[int, Tensor] = field(default_factory=dict)
    tuple_blocks: list[bool] = field(default_factory=list)


def _attn_modules(model: ModelLike) -> list[Any]:
    return [blk.attn for blk in model.blocks]  # type: ignore[attr-defined]


@contextmanager
def _inject(model: ModelLike, cache: Any, masks: Mapping[int, Tensor] | None = None,
            record: dict[int, Tensor] | None = None) -> Iterator[None]:
    handles = []
    seen: dict[int, Tensor] = {}

    def make(block: int) -> Any:
        def pre(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            if record is not None:
                m = kwargs.get("attention_mask")
                if id(m) not in seen:
                    hs = args[0] if args else kwargs["hidden_states"]
                    seen[id(m)] = may_attend(m, hs.shape[1], hs.shape[1])
                record[block] = seen[id(m)]
            kwargs = dict(kwargs)
            kwargs.pop("cache", None)
            kwargs.pop("layer_past", None)
            kwargs["past_key_values"] = cache
            if masks is not None:  # on this layer's device (a model may be split over devices)
                hs = args[0] if args else kwargs["hidden_states"]
                kwargs["attention_mask"] = masks[block].to(hs.device)
            return args, kwargs

        return pre

    try:
        for block, attn in enumerate(_attn_modules(model)):
            handles.append(attn.register_forward_pre_hook(make(block), with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def recording(model: ModelLike) -> Iterator[Prefix]:
    """Inside the block, a forward records every layer's keys/values and masks into the yielded :class:`Prefix`.

    Raises :class:`KVUnsupported` on exit if not every layer recorded (e.g. ``boot_native`` attention).
    """
    if not kv_reuse_possible(model):
        raise KVUnsupported(f"a {family(model)} model with this attention exposes no keys/values")
    cache = _RecordingCache()
    prefix = Prefix()
    n_blocks = len(model.blocks)  # type: ignore[attr-defined]
    with block_kinds(model) as kinds, _inject(model, cache, record=prefix.masks):
        yield prefix
    if len(cache.keys) != n_blocks or len(prefix.masks) != n_blocks or len(kinds) != n_blocks:
        raise KVUnsupported(f"attention recorded keys/values in {len(cache.keys)} of {n_blocks} layers")
    prefix.keys, prefix.values = cache.keys, cache.values
    prefix.tuple_blocks = [kinds[i] for i in range(n_blocks)]


@contextmanager
def block_kinds(model: ModelLike) -> Iterator[dict[int, bool]]:
    """Inside the block, a forward notes per block whether it returns a tuple (HF decoder layers differ)."""
    kinds: dict[int, bool] = {}

    def note(block: int) -> Any:
        def post(module: Any, args: Any, output: Any) -> None:
            kinds[block] = isinstance(output, tuple)
        return post

    outs = [blk.register_forward_hook(note(i)) for i, blk in enumerate(model.blocks)]  # type: ignore[attr-defined]
    try:
        yield kinds
    finally:
        for h in outs:
            h.remove()


@contextmanager
def skipping(model: ModelLike, skip: int, tuple_blocks: list[bool] | None = None) -> Iterator[None]:
    """Blocks ``< skip`` return their input unchanged (the caller replaces the residual at
    ``blocks.{skip}.hook_resid_pre``); ``tuple_blocks[i]``: block ``i`` returns a tuple (:func:`block_kinds`)."""
    blocks = list(model.blocks)[:skip]  # type: ignore[attr-defined]
    kinds = tuple_blocks or [False] * len(blocks)

    def passthrough(as_tuple: bool) -> Any:
        def forward(*args: Any, **kwargs: Any) -> Any:
            hs = args[0] if args else kwargs["hidden_states"]
            return (hs,) if as_tuple else hs
        return forward

    try:
        for i, blk in enumerate(blocks):
            # NB: ``blk.forward = ...`` would be forwarded to the wrapped HF module by the bridge component.
            object.__setattr__(blk, "forward", passthrough(kinds[i]))
        yield
    finally:
        for blk in blocks:
            if "forward" in blk.__dict__:
                object.__delattr__(blk, "forward")


@contextmanager
def replaying(model: ModelLike, keys: Mapping[int, Tensor], values: Mapping[int, Tensor],
              masks: Mapping[int, Tensor], *, skip: int = 0, tuple_blocks: list[bool] | None = None) -> Iterator[None]:
    """Forwards inside the block attend to the frozen ``keys``/``values`` prefix under ``masks[block]``.

    ``masks[block]``: bool "may attend" ``[batch, 1, new, prefix + new]``. Blocks ``< skip`` return their
    input unchanged (the caller replaces the residual at ``blocks.{skip}.hook_resid_pre``).
    """
    cache = _FrozenCache(keys, values)
    with skipping(model, skip, tuple_blocks), _inject(model, cache, masks=masks):
        yield
    n_run = len(model.blocks) - skip  # type: ignore[attr-defined]
    if len(cache.used) < n_run:
        raise KVUnsupported(f"only {len(cache.used)} of {n_run} layers read the reused keys/values")


__all__ = ["KVUnsupported", "Prefix", "block_kinds", "kv_reuse_possible", "may_attend", "recording", "replaying",
           "skipping"]
