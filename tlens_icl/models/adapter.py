"""The model-family adapter: the one place that knows how TransformerLens model families differ.

Families (:func:`family`):

* ``"tl4_bridge"`` - a ``TransformerBridge`` under TransformerLens 4.x.
* ``"tl3_bridge"`` - a ``TransformerBridge`` under TransformerLens 3.x.
* ``"tl3_hooked"`` - a ``HookedTransformer`` (or subclass, e.g. SAELens's ``HookedSAETransformer``), 3.x only.
* ``"remote"`` - a TransformerLens 4 ``RemoteBridge`` (vLLM, Inspect): no local weights; slot for a later
  backend, the engine treats it as capability-free (exact one-forward-per-cell loops only).
* ``"other"`` - anything else satisfying :class:`~tlens_icl._typing.TransformerLensModel`.

What differs, as :class:`Capabilities` (measured facts, not guesses; see ``docs/ARCHITECTURE.md``):

============================  ==========  ==========  ==========
capability                    tl4_bridge  tl3_bridge  tl3_hooked
============================  ==========  ==========  ==========
``position_ids=`` forward     yes         yes         no
4-D additive float mask       yes         yes         no (2-D only)
past KV cache                 ``"hf"``    ``"hf"``    ``"tl"``
``start_at_layer`` skips      no          raises      yes
editing ``hook_pattern``      yes         probed [1]  yes
new tensor at ``resid_mid``   MLP input   MLP input   residual
logits cut before unembedding yes         yes         yes
============================  ==========  ==========  ==========

``"hf"``: the bridge's attention takes a Hugging Face cache object (``past_key_values=``), which
:mod:`tlens_icl.models.kv` fills and replays (for HF-wrapped models; not ``boot_native`` ones).
The last row: ``unembed.hook_in`` is the unembedding's input and feeds nothing else (on bridges the Hugging
Face head's input, after any reshape, before its bias and any final logit softcapping; on a
``HookedTransformer`` after ``ln_final``, before ``b_U`` and ``output_logits_soft_cap``). A hook there that
keeps only some positions makes the model's own unembedding run on those rows alone; the engine proves it
once per model (:func:`tlens_icl.engine.runs.logit_cut`).

[1] TransformerLens 3's native attention (``boot_native``) fires ``hook_pattern`` after the value
matmul, so a hook returning a new pattern is silently ignored; HF-wrapped 3.x bridges honour it.
:func:`capabilities` measures it once per model (a 4-token forward with every pattern zeroed).

Hook names: every name :mod:`tlens_icl.engine.hooks` spells (``blocks.L.attn.hook_z``,
``blocks.L.hook_resid_post``, ``blocks.L.attn.hook_pattern``, ``ln_final.hook_normalized``, ...) resolves
on all three families, so no alias table is needed. What differs is ``hook.name`` as a hook function sees
it (bridges report canonical names such as ``blocks.L.attn.o.hook_in``); tlens_icl never keys on it.

Resolved once: :func:`handle` turns a model into a :class:`ModelHandle` - its family, capabilities, device, dtype,
memory budget, a remote driver's rows per call and hook points, and its load metadata, read as attributes, every
other attribute read through to the model. Analyses resolve their model once and hand the handle to the engine,
whose entry points (:func:`resolved`) accept a model or a handle.

Forwards: :func:`forward` passes only the arguments a family accepts and raises
:class:`~tlens_icl.errors.ModelStateError` before the pass for one it does not (never drops it silently).

KV reuse on a ``HookedTransformer`` (helpers for the engine): :func:`prefix_cache` runs each row's
prefix before its query once; :func:`expand_cache` makes frozen, batch-expanded copies of it;
:func:`query_forward` runs one token per copy on top (optionally from ``start_at_layer``). Exact: a copy
of the query token reproduces the full forward's logits at the query (rotary and learned positions,
right-padded rows).
"""

from __future__ import annotations

import functools
import os
import re
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tlens_icl._typing import ModelLike
from tlens_icl.errors import ModelStateError, TlensICLError, UnsupportedOnBackendError

Family = Literal["tl4_bridge", "tl3_bridge", "tl3_hooked", "remote", "other"]


@lru_cache(maxsize=1)
def tl_version() -> tuple[int, ...]:
    """The installed TransformerLens version as integers, e.g. ``(4, 3, 0)``."""
    from importlib.metadata import version

    parts = []
    for p in version("transformer-lens").split(".")[:3]:
        digits = "".join(c for c in p if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def tl_major() -> int:
    return tl_version()[0]


@dataclass(frozen=True)
class Capabilities:
    """What a model's forward pass supports (see the module docstring's table)."""

    family: str
    #: ``model(tokens, position_ids=...)`` is accepted and used.
    position_ids: bool
    #: ``attention_mask`` may be a ``[batch, 1, q, k]`` additive float mask (0 keep, ``finfo.min`` drop).
    mask_4d: bool
    #: ``"tl"`` (``TransformerLensKeyValueCache``, ``past_kv_cache=``), ``"hf"`` (``past_key_values=``) or None.
    past_kv: str | None
    #: ``start_at_layer=l`` runs only blocks ``l..`` (a real saving, not just a re-entry point).
    start_at_layer_skips: bool
    #: a hook returning a new ``hook_pattern`` changes the attention output.
    pattern_edit: bool
    #: a hook returning a new tensor at ``hook_resid_mid`` changes the residual stream (not only the MLP input).
    resid_mid_edit: bool
    #: where positions can be cut before the unembedding (module docstring): ``"unembed_in"`` or None (every
    #: position is unembedded).
    logits_input: str | None = None


_CAPS: "weakref.WeakKeyDictionary[Any, Capabilities]" = weakref.WeakKeyDictionary()
_WARNED: "weakref.WeakKeyDictionary[Any, set[str]]" = weakref.WeakKeyDictionary()
_META: "weakref.WeakKeyDictionary[Any, dict[str, Any]]" = weakref.WeakKeyDictionary()


def model_meta(model: ModelLike) -> dict[str, Any]:
    """Metadata tlens_icl recorded when loading ``model`` (:func:`~tlens_icl.models.loading.load_model`: its name,
    step, card, source file; empty for bridges built elsewhere)."""
    if isinstance(model, ModelHandle):
        return model.meta
    try:
        return _META.get(model, {})
    except TypeError:
        return {}


def model_tasks(model: ModelLike, family: str | None = None) -> list[str]:
    """Library tasks an embedded model was trained on (all, or one family such as ``"bitwise"``).

    Raises for models without a tlens_icl model card (e.g. a hub model): pass task names explicitly.
    """
    families = model_meta(model).get("families")
    if not families:
        raise ModelStateError("This model has no tlens_icl model card listing its tasks; name the tasks explicitly.")
    if family is None:
        return [t for names in families.values() for t in names]
    if family not in families:
        raise ModelStateError(f"Unknown family {family!r}; this model has {sorted(families)}.")
    return list(families[family])


def record_meta(model: ModelLike, meta: dict[str, Any]) -> None:
    """Record ``meta`` as ``model``'s :func:`model_meta` (done by :func:`~tlens_icl.models.loading.load_model`)."""
    _META[unwrap(model)] = meta


def family(model: Any) -> Family:
    """Which TransformerLens model family ``model`` is (see the module docstring)."""
    if isinstance(model, ModelHandle):
        return model.family
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError:  # pragma: no cover - every supported TransformerLens has model_bridge
        TransformerBridge = ()  # type: ignore[assignment]
    if TransformerBridge and isinstance(model, TransformerBridge):
        return "tl4_bridge" if tl_major() >= 4 else "tl3_bridge"
    hooked = _hooked_transformer_class()
    if hooked is not None and isinstance(model, hooked):
        return "tl3_hooked"
    if is_remote(model):
        return "remote"
    return "other"


def is_remote(model: Any) -> bool:
    """True for a TransformerLens ``RemoteBridge`` (TransformerLens >= 4.3; no local weights, a driver runs it)."""
    try:
        from transformer_lens.model_bridge import RemoteBridge
    except ImportError:
        return False
    return isinstance(unwrap(model), RemoteBridge)


def _hooked_transformer_class() -> type | None:
    if tl_major() >= 4:
        return None
    from transformer_lens import HookedTransformer

    return HookedTransformer


def is_hooked_transformer(model: Any) -> bool:
    return family(model) == "tl3_hooked"


def capabilities(model: ModelLike) -> Capabilities:
    """The model's :class:`Capabilities`, measured once per model object and cached (the first measurement also
    installs :mod:`tlens_icl.models.fixes`, so a model built outside ``load_model`` runs repaired too)."""
    if isinstance(model, ModelHandle):
        return model.caps
    try:
        cached = _CAPS.get(model)
    except TypeError:
        cached = None
    if cached is not None:
        return cached
    from tlens_icl.models.fixes import ensure_fixes

    ensure_fixes(import_modules=False)  # the version fixes, once per model object: before its first forward pass
    fam = family(model)
    if fam == "tl4_bridge":
        caps = Capabilities(fam, True, True, "hf", False, True, False, "unembed_in")
    elif fam == "tl3_bridge":
        caps = Capabilities(fam, True, True, "hf", False, _pattern_edit_works(model), False, "unembed_in")
    elif fam == "tl3_hooked":
        caps = Capabilities(fam, False, False, "tl", True, True, True, "unembed_in")
    else:  # remote / unknown: claim nothing; the engine uses its exact loops
        caps = Capabilities(fam, False, False, None, False, False, False)
    try:
        _CAPS[model] = caps
    except TypeError:
        pass
    return caps


def pattern_edits_ignored(model: ModelLike) -> bool:
    """True when the model is known to ignore a hook returning a new ``hook_pattern`` (TL3 native bridges)."""
    return handle(model).pattern_edits_ignored


def _pattern_edit_works(model: ModelLike) -> bool:
    """Whether zeroing every layer's ``hook_pattern`` changes the logits of a 4-token input.

    False for TransformerLens 3 native bridges (the edit is ignored); a model whose attention writes
    nothing would also read False, which only makes callers take an exact route that needs no edit.
    """
    vocab = int(model.cfg.d_vocab)
    tokens = (torch.arange(4) % max(vocab, 1))[None].to(device_of(model))
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.cfg.n_layers)]
    fired = []

    def zero(pattern: Tensor, hook: Any) -> Tensor:
        fired.append(1)
        return torch.zeros_like(pattern)

    with torch.no_grad(), hooks_set_aside(model):  # a probe: a caller's hooks do not see it
        plain = model(tokens)
        with model.hooks(fwd_hooks=[(n, zero) for n in names]):
            edited = model(tokens)
    return bool(fired) and not torch.equal(plain, edited)


def sliding_window(model: ModelLike) -> int | None:
    """The shortest attention window of the model's layers (``cfg.window_size``, a Hugging Face
    ``sliding_window`` as in Gemma 2/3 and Mistral), or None when every layer attends to the whole prefix.

    Within that many positions a sliding-window layer equals a global one; beyond it, an explicit 4-D
    attention mask (which replaces the model's own window mask) is not the model's computation.
    """
    hf_cfg = getattr(getattr(model, "original_model", None), "config", None)
    windows = [w for w in (getattr(model.cfg, "window_size", None), getattr(hf_cfg, "sliding_window", None))
               if isinstance(w, int) and not isinstance(w, bool) and w > 0]
    return min(windows) if windows else None
@contextmanager
def hooks_set_aside(model: ModelLike) -> Iterator[None]:
    """Inside the block the model's hook points run none of the forward hooks installed on them so far (a
    caller's ``model.hooks(...)``): a forward the library runs for itself (a probe) stays invisible to them.
    Hooks added inside the block are the block's own; the earlier ones are back on exit."""
    points = list({id(hp): hp for hp in (getattr(model, "hook_dict", None) or {}).values()
                   if isinstance(hp, torch.nn.Module)}.values())
    saved = [(hp, hp._forward_hooks, getattr(hp, "fwd_hooks", None)) for hp in points]
    try:
        for hp, _, handles in saved:
            hp._forward_hooks = OrderedDict()
            if handles is not None:
                hp.fwd_hooks = []
        yield
    finally:
        for hp, torch_hooks, handles in saved:
            hp._forward_hooks = torch_hooks
            if handles is not None:
                hp.fwd_hooks = handles


def device_of(model: ModelLike) -> torch.device:
    """The device input tokens go to: the embedding's device (CPU for a model without local parameters).

    A model split over devices by accelerate (``load_model(..., device_map=...)``) has no single device:
    this is where its embedding runs, never ``meta`` (the placeholder of an offloaded weight). Each later
    activation lives on its own block's device, so tensors made inside a hook follow the activation.
    """
    if isinstance(model, ModelHandle):
        return model.device
    hf = getattr(model, "original_model", None)
    if getattr(hf, "hf_device_map", None):
        emb = hf.get_input_embeddings() if hasattr(hf, "get_input_embeddings") else None
        dev = getattr(getattr(emb, "_hf_hook", None), "execution_device", None)
        if dev is not None:
            return torch.device("cuda", dev) if isinstance(dev, int) else torch.device(dev)
        for p in (emb.parameters() if emb is not None else ()):
            if p.device.type != "meta":
                return p.device
    try:
        for p in model.parameters():  # type: ignore[attr-defined]
            if p.device.type != "meta":
                return p.device
    except (AttributeError, TypeError):
        pass
    return torch.device("cpu")


@contextmanager
def readable_weights(*modules: Any) -> Iterator[None]:
    """Inside the block, weights accelerate offloaded to CPU or disk (``meta`` placeholders) hold their values.

    Loads only the given modules' offloaded parameters (e.g. one layer's attention for its ``W_O``) onto
    their execution device and puts them back on exit; a no-op for a model loaded whole.
    """
    try:
        from accelerate.utils import align_module_device, has_offloaded_params
    except ImportError:  # accelerate absent: nothing can be offloaded
        yield
        return
    with ExitStack() as stack:
        for module in modules:
            subs = module.modules() if isinstance(module, torch.nn.Module) else ()
            for sub in subs:
                if has_offloaded_params(sub):
                    stack.enter_context(align_module_device(sub))
        yield


def head_output_weights(model: ModelLike, layer: int) -> Float[Tensor, "head d_head d_model"]:
    """``W_O`` of one layer (a detached copy), readable when the model's weights are offloaded."""
    attn = model.blocks[layer].attn  # type: ignore[attr-defined]
    with torch.no_grad(), readable_weights(attn):
        return attn.W_O.detach().clone()


def attn_post_norm(model: ModelLike, layer: int) -> Callable[[Tensor], Tensor] | None:
    """The norm a block applies to its attention output before adding it to the residual stream (Gemma 2/3's
    ``post_attention_layernorm``, ``ln1_post``), as a function of ``[..., d_model]``; None where the attention
    output is added as it is (GPT-2, Llama, Qwen2, ...).

    With such a norm a head's ``z @ W_O`` is not what reaches the residual stream (on Gemma-3-270M the block
    writes ~100x its norm), so residual-space quantities built from head outputs go through this map. The
    underlying module is called (not the bridge's hook point), so no hook fires.
    """
    block = model.blocks[layer]  # type: ignore[attr-defined]
    norm = getattr(block, "ln1_post", None)
    if norm is None:
        return None
    norm = getattr(norm, "original_component", None) or norm  # a bridge's wrapped HF module: no hook points run

    def apply(x: Tensor) -> Tensor:
        with torch.no_grad(), readable_weights(norm):
            ref = next((p for p in norm.parameters()), None)
            y = x.to(ref.device, ref.dtype) if ref is not None else x
            return norm(y).to(x.device, x.dtype)
    return apply


def dtype_of(model: ModelLike) -> torch.dtype:
    """The dtype of the model's floating-point parameters (``cfg.dtype`` if it has none)."""
    if isinstance(model, ModelHandle):
        return model.dtype
    try:
        for p in model.parameters():  # type: ignore[attr-defined]
            if p.is_floating_point():
                return p.dtype
    except (AttributeError, TypeError):
        pass
    return getattr(model.cfg, "dtype", None) or torch.float32


def is_training(model: ModelLike) -> bool:
    """True when the model is in training mode (bridges and ``HookedTransformer`` both start there)."""
    return bool(getattr(model, "training", False))


def attn_output_bias(model: ModelLike, layers: Sequence[int] | None = None) -> Float[Tensor, "layer d_model"] | None:
    """``b_O`` of each layer in ``layers`` (default all), or None for bias-free attention (Llama, Gemma).

    Read one layer at a time, so a model with offloaded weights loads one attention block at a time.
    """
    out = []
    for layer in range(model.cfg.n_layers) if layers is None else layers:
        attn = model.blocks[layer].attn  # type: ignore[attr-defined]
        with torch.no_grad(), readable_weights(attn):
            try:
                b_O = attn.b_O
            except (AttributeError, TypeError):  # TL4 bridge: AttributeError; TL3 bridge: TypeError
                return None
            if not isinstance(b_O, Tensor):
                return None
            out.append(b_O.detach().clone().reshape(-1))
    return torch.stack(out) if out else None


def warn_once(model: Any, key: str, message: str, *, stacklevel: int = 3) -> None:
    """``warnings.warn(message)`` the first time ``key`` is seen for this model object only."""
    model = unwrap(model)
    try:
        seen = _WARNED.setdefault(model, set())
    except TypeError:
        seen = set()
    if key in seen:
        return
    seen.add(key)
    warnings.warn(message, stacklevel=stacklevel)


def forward(
    model: ModelLike, tokens: Tensor, *, attention_mask: Tensor | None = None, position_ids: Tensor | None = None,
    past_kv_cache: Any = None, start_at_layer: int | None = None, return_type: str | None = "logits",
) -> Any:
    """``model(tokens, ...)`` passing only what this family accepts (:meth:`ModelHandle.forward`)."""
    return handle(model).forward(tokens, attention_mask=attention_mask, position_ids=position_ids,
                                 past_kv_cache=past_kv_cache, start_at_layer=start_at_layer, return_type=return_type)


def additive_mask(allowed: Tensor, dtype: torch.dtype) -> Tensor:
    """A boolean ``[batch, q, k]`` keep-mask as the 4-D additive float mask bridges take: ``[batch, 1, q, k]``.

    Always float: a 4-D *bool* mask means "keep" to HF attention but "drop" to the native one.
    """
    zero = torch.zeros((), dtype=dtype, device=allowed.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)[:, None]


# ---- KV reuse on a HookedTransformer (TransformerLens 3) ---------------------------------------------
def _require_tl_cache(model: ModelLike) -> None:
    if capabilities(model).past_kv != "tl":
        raise ModelStateError(f"KV-cache helpers need a HookedTransformer (TransformerLens 3); got a {family(model)}.")


def prefix_cache(model: ModelLike, tokens: Int[Tensor, "batch pos"], query_pos: Int[Tensor, " batch"]) -> Any:
    """Run each row's tokens before its query position once; returns the (unfrozen) KV cache.

    Rows may be right-padded and have different query positions: row ``i`` keeps positions ``< query_pos[i]``
    (positions are ``cumsum(mask) - 1``, so masked slots take no position).
    """
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

    _require_tl_cache(model)
    dev = device_of(model)
    query_pos = query_pos.to(dev)
    width = int(query_pos.max())
    if width < 1:
        raise ModelStateError("prefix_cache needs every query position >= 1 (a BOS or a demonstration before it).")
    mask = (torch.arange(width, device=dev)[None] < query_pos[:, None]).long()
    cache = TransformerLensKeyValueCache.init_cache(model.cfg, dev, tokens.shape[0])
    with torch.no_grad():
        model(tokens[:, :width].to(dev), attention_mask=mask, past_kv_cache=cache, return_type=None)
    return cache


def expand_cache(cache: Any, copies: int, rows: Tensor | None = None) -> Any:
    """A frozen cache with each (selected) row repeated ``copies`` times: row ``i`` -> rows ``i*copies ...``.

    Frozen entries return ``cat(past, new)`` without storing, so one expanded cache serves many forwards.
    """
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
    from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry

    def rep(t: Tensor) -> Tensor:
        t = t if rows is None else t[rows]
        return t.expand(copies, *t.shape[1:]) if t.shape[0] == 1 else t.repeat_interleave(copies, 0)

    entries = [TransformerLensKeyValueCacheEntry(rep(e.past_keys), rep(e.past_values), frozen=True)
               for e in cache.entries]
    return TransformerLensKeyValueCache(entries, rep(cache.previous_attention_mask), frozen=True)


def query_forward(
    model: ModelLike, cache: Any, query: Int[Tensor, " batch"] | Float[Tensor, "batch d_model"], *,
    start_at_layer: int | None = None,
) -> Float[Tensor, "batch d_vocab"]:
    """Logits of one query step per row on top of a frozen, batch-matched ``cache``.

    ``query`` is the query token id per row, or (with ``start_at_layer=l``) the residual stream
    ``blocks.l.hook_resid_pre`` at the query, so layers ``< l`` are skipped. Hooks see position length 1.
    """
    _require_tl_cache(model)
    dev = device_of(model)
    prev = cache.previous_attention_mask.to(dev)
    mask = torch.cat([prev, torch.ones(prev.shape[0], 1, dtype=prev.dtype, device=dev)], 1)
    if start_at_layer is None:
        out = model(query.to(dev)[:, None], attention_mask=torch.ones_like(mask[:, -1:]), past_kv_cache=cache)
    else:  # input_to_embed is skipped, so the full mask (prefix + this step) is passed by hand
        out = model(query.to(dev)[:, None], start_at_layer=start_at_layer, past_kv_cache=cache, attention_mask=mask)
    return out[:, -1]





# ---- memory: how many bytes one forward's activations may use ----------------------------------------------
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
        return {p.device for p in unwrap(model).parameters() if p.device.type != "meta"}
    except (AttributeError, TypeError):
        return set()


def memory_budget(model: Any) -> int:
    """Bytes one forward's activations may use: env override, else GPU free memory, else :data:`DEFAULT_BUDGET`."""
    env = os.environ.get(BUDGET_ENV)
    if env:
        return parse_bytes(env)
    cuda = [d for d in model_devices(model) if d.type == "cuda"] if torch.cuda.is_available() else []
    if cuda:
        free = min(torch.cuda.mem_get_info(d)[0] for d in cuda)
        return max(1 << 20, int(GPU_FRACTION * free))
    return DEFAULT_BUDGET


# ---- the model resolved once --------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ModelHandle:
    """A model resolved once: its family's facts as attributes, every other attribute read from the model.

    The engine takes one (its entry points, marked :func:`resolved`, accept a model or a handle and resolve a model
    on the way in); an analysis resolves its model once with :func:`handle` and hands the handle to every engine
    call and prompt builder, so nothing re-examines the model per forward. ``model`` is the model itself; ``cfg``,
    ``hook_dict``, ``tokenizer``, ``blocks``, ``hooks(...)`` and the rest are the model's own (read through).

    ``budget``: bytes one forward's activations may use (:func:`memory_budget`, read at resolution: an analysis
    keeps one budget; the engine still backs off on out-of-memory). ``call_rows`` / ``edit_rows``: prompts one
    call of a remote driver takes with captures only / with edits (None: no limit; a local model: None); the
    engine's row planner (:func:`tlens_icl.engine.runs.rows_per_forward`) applies them with the budget.
    """

    model: Any
    family: Family
    caps: Capabilities
    device: torch.device
    dtype: torch.dtype
    budget: int
    call_rows: int | None = None
    edit_rows: int | None = None
    #: a remote model: the hook names its driver can capture or edit, each to the driver's own name for it
    #: (``blocks.3.hook_resid_post`` -> ``blocks.3.hook_out``); None: a local model, every hook point
    fireable: dict[str, str] | None = None
    #: what :func:`~tlens_icl.models.loading.load_model` recorded (:func:`~tlens_icl.models.adapter.model_meta`)
    meta: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "model":  # no read-through while the handle is being built or copied
            raise AttributeError(name)
        return getattr(self.model, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def __repr__(self) -> str:
        return (f"ModelHandle({type(self.model).__name__}, family={self.family!r}, device={self.device}, "
                f"dtype={self.dtype}, budget={self.budget})")

    @property
    def remote(self) -> bool:
        """A remote backend (:mod:`tlens_icl.models.remote`): a driver runs its forwards."""
        return self.family == "remote"

    @property
    def pattern_edits_ignored(self) -> bool:
        """True when a hook returning a new ``hook_pattern`` does nothing (TransformerLens 3 native bridges)."""
        return self.family == "tl3_bridge" and not self.caps.pattern_edit

    def warn_once(self, key: str, message: str, *, stacklevel: int = 3) -> None:
        """:func:`warn_once` for this model (``stacklevel`` counted from the caller, as there)."""
        warn_once(self.model, key, message, stacklevel=stacklevel + 1)

    def _remote_forward(self, tokens: Tensor, return_type: str | None) -> Any:
        """``model.forward(tokens, intervene=...)`` on a remote model, the :func:`pending_edits` as specs.

        A forward with edits takes one row (the driver applies one spec set per prompt; a row's position
        differs from another's). Returns the driver's logits ``[batch, pos, d_vocab]`` on the CPU.
        """
        intervene: dict[str, dict[str, Any]] = {}
        for name, edit, counter in _PENDING.get(self.model, []):
            key = (self.fireable or {}).get(name)
            if key is None:
                raise UnsupportedOnBackendError(f"This remote driver cannot edit {name!r}.")
            if key in intervene:
                raise UnsupportedOnBackendError(f"This remote driver applies one edit per hook point per forward; two "
                                                f"edit {key!r}.")
            if tokens.shape[0] != 1:
                raise UnsupportedOnBackendError("This remote driver takes one prompt per forward with edits, got "
                                                f"{tokens.shape[0]}.")
            intervene[key] = edit.spec(0, tokens.shape[1])
            counter[0] += 1
        kwargs: dict[str, Any] = {"intervene": intervene} if intervene else {}
        return self.model.forward(tokens.cpu(), return_type=return_type, **kwargs)

    def forward(
        self, tokens: Tensor, *, attention_mask: Tensor | None = None, position_ids: Tensor | None = None,
        past_kv_cache: Any = None, start_at_layer: int | None = None, return_type: str | None = "logits",
    ) -> Any:
        """``model(tokens, ...)`` passing only what this family accepts; raises before the pass otherwise.

        ``tokens`` are token ids ``[batch, pos]``, or the residual stream ``[batch, pos, d_model]`` with
        ``start_at_layer``. ``attention_mask`` is 2-D ``[batch, pos]`` (1 = real token) or, on bridges, a
        4-D additive float mask; ``past_kv_cache`` is a :func:`prefix_cache` (HookedTransformer only).
        """
        model, caps = self.model, self.caps
        extra = [k for k, v in (("attention_mask", attention_mask), ("position_ids", position_ids),
                                ("past_kv_cache", past_kv_cache), ("start_at_layer", start_at_layer)) if v is not None]
        if self.remote:  # a driver runs it, the pending edits as specs
            if extra:
                raise UnsupportedOnBackendError(f"A remote model runs whole prompts from their tokens; it takes no {extra[0]}.")
            return self._remote_forward(tokens, return_type)
        if not extra:  # a plain forward: no capability to check (and no probe run inside the caller's hooks)
            return model(tokens) if return_type == "logits" else model(tokens, return_type=return_type)
        kwargs: dict[str, Any] = {}
        if return_type != "logits":
            kwargs["return_type"] = return_type
        if position_ids is not None:
            if not caps.position_ids:
                raise ModelStateError(f"This model ({caps.family}) takes no position_ids.")
            kwargs["position_ids"] = position_ids
        if attention_mask is not None:
            if attention_mask.dim() == 4 and not caps.mask_4d:
                raise ModelStateError(f"This model ({caps.family}) takes only a 2-D [batch, pos] attention mask.")
            kwargs["attention_mask"] = attention_mask
        if past_kv_cache is not None:
            if caps.past_kv != "tl":
                raise ModelStateError(f"This model ({caps.family}) takes no TransformerLens past_kv_cache.")
            kwargs["past_kv_cache"] = past_kv_cache
        if start_at_layer is not None:
            if not caps.start_at_layer_skips:
                raise ModelStateError(f"This model ({caps.family}) cannot start at a layer.")
            kwargs["start_at_layer"] = start_at_layer
        return model(tokens, **kwargs)


def handle(model: ModelLike | ModelHandle) -> ModelHandle:
    """``model`` resolved into a :class:`ModelHandle` (a handle is returned as it is).

    Measures the family's :func:`capabilities` (cached per model object; the first measurement installs the version
    fixes), reads the device, dtype, memory budget and, for a remote model, the rows its driver takes per call.
    """
    if isinstance(model, ModelHandle):
        return model
    caps = capabilities(model)
    local = dict(device=device_of(model), dtype=dtype_of(model), budget=memory_budget(model))
    if caps.family == "remote":
        local.update(_driver_facts(model))
    return ModelHandle(model, caps.family, caps, meta=model_meta(model), **local)


#: Edits the engine registered for a remote model's next forwards (inside :func:`pending_edits`).
_PENDING: "weakref.WeakKeyDictionary[Any, list[tuple[str, Any, list[int]]]]" = weakref.WeakKeyDictionary()


@contextmanager
def pending_edits(model: ModelLike, edits: Sequence[tuple[str, Any, list[int]]]) -> Iterator[None]:
    """Inside the block, a remote model's forwards (:meth:`ModelHandle.forward`) send ``edits`` - (hook name, a
    :class:`~tlens_icl.models.remote.SpecHook`, a counter each forward increments) - to its driver as specs."""
    key = unwrap(model)
    before = _PENDING.get(key, [])
    _PENDING[key] = [*before, *edits]
    try:
        yield
    finally:
        _PENDING[key] = before


def _driver_facts(model: Any) -> dict[str, Any]:
    """A remote model's driver (:mod:`tlens_icl.models.remote`): prompts one call takes (vLLM's compiled path one;
    its batched path any number, captures only) and the hook names it declares it can capture or edit."""
    driver = getattr(model, "_driver", None)
    supported = getattr(driver, "supported_hook_points", frozenset())
    return dict(call_rows=None if getattr(driver, "_enable_batching", False) else 1, edit_rows=1,
                fireable={n: str(hp.name) for n, hp in model.hook_dict.items() if getattr(hp, "name", None) in supported})


def unwrap(model: Any) -> Any:
    """The model itself, from a model or a :class:`ModelHandle` (for what is keyed by the model object)."""
    return model.model if isinstance(model, ModelHandle) else model


def resolved(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Mark an engine entry point: its first argument, a model or a :class:`ModelHandle`, arrives as a handle."""

    @functools.wraps(fn)
    def wrapper(model: Any, *args: Any, **kwargs: Any) -> Any:
        return fn(handle(model), *args, **kwargs)

    return wrapper


__all__ = [
    "BUDGET_ENV", "Capabilities", "DEFAULT_BUDGET", "Family", "GPU_FRACTION", "ModelHandle", "additive_mask",
    "attn_output_bias", "attn_post_norm", "capabilities", "device_of", "dtype_of", "expand_cache", "family", "forward",
    "handle", "head_output_weights", "hooks_set_aside", "is_hooked_transformer", "is_remote", "is_training",
    "memory_budget", "model_devices", "model_meta", "model_tasks", "parse_bytes", "pattern_edits_ignored",
    "pending_edits", "prefix_cache", "query_forward", "readable_weights", "record_meta", "resolved", "sliding_window",
    "tl_major", "tl_version", "unwrap", "warn_once",
]
