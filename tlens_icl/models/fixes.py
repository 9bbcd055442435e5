"""Fixes for known TransformerLens / transformers version mismatches, applied once by ``tlens_icl.models``.

KV-cached generation through a bridge (transformer-lens 4.3 with transformers >= 5.24).
transformers 5.24 renamed the cache argument that decoder layers pass to their attention module from
``past_key_values`` to ``cache``. TransformerLens's ``AttentionBridge._update_kv_cache`` only looks for
``past_key_values`` / ``layer_past``, so on a wrapped model the cache is never written: after the
prefill the cache holds 0 tokens, and each generated token attends only to itself (Llama, Gemma 2,
GPT-2 ... all generate garbage after the first token, e.g. ``' dog----'`` instead of ``' dog\\n\\nA:'``).
The shim passes ``cache`` on under the old name. It changes nothing where ``cache`` never arrives
(transformers <= 5.23) or where TransformerLens already reads it.

When: importing TransformerLens's bridge modules takes seconds, so the shim is installed by
:func:`ensure_fixes`, which ``load_model`` and every analysis's eval-mode check call (a bridge exists,
so the module is already imported), and on ``import tlens_icl`` when the bridge module is loaded.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any

_MARK = "_tlens_icl_cache_kwarg_shim"


_ATTENTION = "transformer_lens.model_bridge.generalized_components.attention"


def ensure_fixes(*, import_modules: bool = True) -> None:
    """Install every fix (idempotent). With ``import_modules=False`` only if TransformerLens's bridge is loaded."""
    if import_modules or _ATTENTION in sys.modules:
        fix_kv_cache()


def fix_kv_cache() -> bool:
    """Install the ``cache`` -> ``past_key_values`` shim on ``AttentionBridge``. Idempotent.

    Returns True when it installed the shim now, False when it was already there or is not needed.
    """
    try:
        from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge
    except ImportError:  # a TransformerLens without bridges (3.x HookedTransformer only)
        return False
    orig = AttentionBridge.__dict__.get("_update_kv_cache")
    if orig is None or getattr(orig, _MARK, False):
        return False
    try:
        if '"cache"' in inspect.getsource(orig):  # TransformerLens reads the new name itself
            return False
    except (OSError, TypeError):
        pass

    def _update_kv_cache(self: Any, k: Any, v: Any, **kwargs: Any) -> Any:
        if kwargs.get("past_key_values") is None and kwargs.get("layer_past") is None and kwargs.get("cache") is not None:
            kwargs["past_key_values"] = kwargs.pop("cache")
        return orig(self, k, v, **kwargs)

    setattr(_update_kv_cache, _MARK, True)
    _update_kv_cache.__doc__ = orig.__doc__
    AttentionBridge._update_kv_cache = _update_kv_cache
    return True


def kv_cache_fixed() -> bool:
    """Whether the shim is installed (or TransformerLens needs none)."""
    try:
        from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge
    except ImportError:
        return True
    fn = AttentionBridge.__dict__.get("_update_kv_cache")
    return fn is None or getattr(fn, _MARK, False) or '"cache"' in inspect.getsource(fn)
