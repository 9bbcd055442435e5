"""A model's identity beyond its name: a short hash of its shape and of a fixed sample of its weights.

Results record it (``info["model_fingerprint"]``, via :func:`tlens_icl.results.base.run_info`), and what
is computed on one model - a function vector, an AIE, a checkpoint unit - is refused on another model
with the same shapes (:func:`tlens_icl.results.base.require_same_model`).

What is hashed: the config's sizes (layers, heads, d_model, d_head, d_vocab) and the **sign bits** of
``SAMPLES`` weights at fixed, evenly spaced positions of the embedding ``W_E``, the unembedding ``W_U``
and ``W_O`` of the first and last layers, read in TransformerLens's layout (the same for a bridge and a
``HookedTransformer`` of one checkpoint). Sign bits survive any cast (float32, float16, bfloat16 round a
weight but never flip its sign), so a model loaded in another dtype or on another device has the same
fingerprint, while another checkpoint - another seed, a fine-tune, weight processing such as
``fold_ln`` / ``center_writing_weights`` - flips some of the sampled signs. Cost: a few thousand
scalars read, whatever the model's size (a 1.5B model's embedding is never copied).
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import Tensor

from tlens_icl._typing import ModelLike
from tlens_icl.models.adapter import readable_weights

#: Weights sampled from each tensor.
SAMPLES = 1024
#: Bumped when what is hashed changes (a fingerprint of another version never matches).
VERSION = 1


def _sample(weight: Tensor, n: int = SAMPLES) -> Tensor:
    """Sign bits of ``n`` entries of ``weight`` at evenly spaced flat positions (no copy of the whole tensor)."""
    total = weight.numel()
    flat_idx = torch.linspace(0, total - 1, min(n, total), dtype=torch.float64).round().long()
    idx = []
    for size in reversed(weight.shape):
        idx.append(flat_idx % size)
        flat_idx = flat_idx // size
    picked = weight.detach()[tuple(i.to(weight.device) for i in reversed(idx))]
    return torch.signbit(picked.float()).cpu()


def _weights(model: ModelLike) -> list[tuple[str, Any, Any]]:
    """``(label, module holding it, getter)`` of the tensors sampled."""
    n = int(model.cfg.n_layers)
    blocks = getattr(model, "blocks", None)
    out = [("W_E", getattr(model, "embed", None), lambda: model.W_E)]
    if blocks is not None:
        out += [(f"W_O{layer}", blocks[layer].attn, lambda layer=layer: blocks[layer].attn.W_O)
                for layer in sorted({0, n - 1})]
    out.append(("W_U", getattr(model, "unembed", None), lambda: model.W_U))
    return out


def model_fingerprint(model: ModelLike) -> str | None:
    """``"v1:<16 hex>"`` identifying ``model``'s weights (see the module docstring), or None when its weights cannot
    be read (a remote backend such as vLLM)."""
    cfg = model.cfg
    h = hashlib.sha256(f"tlens_icl.fingerprint/{VERSION}".encode())
    for key in ("n_layers", "n_heads", "d_model", "d_head", "d_vocab"):
        h.update(f"{key}={getattr(cfg, key, None)};".encode())
    try:
        with torch.no_grad():
            for label, module, get in _weights(model):
                with readable_weights(*([module] if module is not None else [])):
                    weight = get()
                    if not isinstance(weight, Tensor) or weight.numel() == 0 or weight.device.type == "meta":
                        return None
                    h.update(f"{label}{tuple(weight.shape)}".encode())
                    h.update(_sample(weight).numpy().tobytes())
    except (AttributeError, TypeError, NotImplementedError, RuntimeError):
        return None
    return f"v{VERSION}:{h.hexdigest()[:16]}"


__all__ = ["SAMPLES", "VERSION", "model_fingerprint"]
