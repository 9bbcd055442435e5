"""TransformerLens 3 ``HookedTransformer`` construction: a tlens_icl native checkpoint as a HookedTransformer.

The embedded models are ``boot_native`` checkpoints (``config.json`` + ``model.safetensors`` with
``nn.Linear`` weights ``[out, in]``). :func:`load_hooked` rebuilds one as a ``HookedTransformer`` with the
same function: the native rotary embedding rotates adjacent pairs ``(2i, 2i+1)``, which is
``rotary_adjacent_pairs=True`` in a HookedTransformer (the NeoX half-split layout would be wrong), and no
weight processing is applied (no LayerNorm folding or centring), so activations match the bridge's.
Logits agree with the TransformerLens 4 bridge to ~1e-5 (float32 rounding of a different op order).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tlens_icl.errors import ModelStateError
from tlens_icl.models.adapter import tl_major


def require_hooked_transformer_support() -> None:
    if tl_major() >= 4:
        raise ModelStateError(
            "HookedTransformer was removed in TransformerLens 4; install transformer-lens 3.x for it "
            "(e.g. pip install 'tlens_icl[sae]' resolves to 3.9 with SAELens), or use the default bridge."
        )


def hooked_config(native: dict[str, Any]) -> Any:
    """A ``HookedTransformerConfig`` equivalent to a native ``config.json`` dict."""
    from transformer_lens import HookedTransformerConfig

    c = dict(native)
    if c.get("attention_dir", "causal") != "causal":
        raise ModelStateError(f"Only causal models convert to a HookedTransformer, got {c['attention_dir']!r}.")
    kw: dict[str, Any] = dict(
        d_model=c["d_model"], d_head=c["d_head"], n_heads=c.get("n_heads") or c["d_model"] // c["d_head"],
        n_layers=c["n_layers"], n_ctx=c["n_ctx"], d_vocab=c["d_vocab"], d_mlp=c.get("d_mlp") or 4 * c["d_model"],
        act_fn=c.get("act_fn") or "relu", normalization_type=c.get("normalization_type", "LN"),
        eps=c.get("eps", 1e-5), positional_embedding_type=c.get("positional_embedding_type", "standard"),
        n_key_value_heads=c.get("n_key_value_heads"), gated_mlp=bool(c.get("gated_mlp")),
        attn_only=bool(c.get("attn_only")), final_rms=bool(c.get("final_rms")),
        default_prepend_bos=c.get("default_prepend_bos", True), original_architecture="TransformerLensNative",
    )
    if c.get("d_vocab_out", -1) not in (-1, None):
        kw["d_vocab_out"] = c["d_vocab_out"]
    if kw["positional_embedding_type"] == "rotary":
        kw.update(rotary_dim=c.get("rotary_dim") or c["d_head"], rotary_base=c.get("rotary_base", 10000),
                  rotary_adjacent_pairs=True)
    return HookedTransformerConfig(**kw)


def hooked_state_dict(sd: dict[str, Tensor], cfg: Any) -> dict[str, Tensor]:
    """Native state-dict keys and shapes -> HookedTransformer keys and shapes (float32)."""
    import einops

    n_heads, n_kv = cfg.n_heads, cfg.n_key_value_heads or cfg.n_heads
    kv_prefix = "_" if cfg.n_key_value_heads is not None else ""
    out = {"embed.W_E": sd["embed.weight"]}
    if "pos_embed.weight" in sd:
        out["pos_embed.W_pos"] = sd["pos_embed.weight"]
    for layer in range(cfg.n_layers):
        p = f"blocks.{layer}."
        for n, heads, pre in (("q", n_heads, ""), ("k", n_kv, kv_prefix), ("v", n_kv, kv_prefix)):
            out[f"{p}attn.{pre}W_{n.upper()}"] = einops.rearrange(sd[f"{p}attn.{n}.weight"], "(h dh) d -> h d dh", h=heads)
            bias = sd.get(f"{p}attn.{n}.bias")
            out[f"{p}attn.{pre}b_{n.upper()}"] = (einops.rearrange(bias, "(h dh) -> h dh", h=heads) if bias is not None
                                                  else torch.zeros(heads, cfg.d_head))
        out[f"{p}attn.W_O"] = einops.rearrange(sd[f"{p}attn.o.weight"], "d (h dh) -> h dh d", h=n_heads)
        out[f"{p}attn.b_O"] = sd.get(f"{p}attn.o.bias", torch.zeros(cfg.d_model))
        for ln in ("ln1", "ln2"):
            for src, dst in (("weight", "w"), ("bias", "b")):
                if f"{p}{ln}.{src}" in sd:
                    out[f"{p}{ln}.{dst}"] = sd[f"{p}{ln}.{src}"]
        if not cfg.attn_only:
            out[f"{p}mlp.W_in"] = sd[f"{p}mlp.in.weight"].T
            out[f"{p}mlp.b_in"] = sd.get(f"{p}mlp.in.bias", torch.zeros(cfg.d_mlp))
            out[f"{p}mlp.W_out"] = sd[f"{p}mlp.out.weight"].T
            out[f"{p}mlp.b_out"] = sd.get(f"{p}mlp.out.bias", torch.zeros(cfg.d_model))
            if cfg.gated_mlp:
                out[f"{p}mlp.W_gate"] = sd[f"{p}mlp.gate.weight"].T
    out["ln_final.w"] = sd["ln_final.weight"]
    if "ln_final.bias" in sd:
        out["ln_final.b"] = sd["ln_final.bias"]
    out["unembed.W_U"] = sd["unembed.weight"].T
    out["unembed.b_U"] = sd.get("unembed.bias", torch.zeros(sd["unembed.weight"].shape[0]))
    return {k: v.float().contiguous() for k, v in out.items()}


def load_hooked(path: str | Path, device: Any = None, step: int | None = None) -> Any:
    """A native checkpoint folder (``config.json``, ``model.safetensors``, ``tokenizer/``) as a HookedTransformer.

    ``step``: a training checkpoint of the folder instead of the final weights. Returned in eval mode. Every
    weight is loaded (only buffers such as the causal mask and rotary tables are computed), or this raises.
    """
    require_hooked_transformer_support()
    from safetensors.torch import load_file
    from transformer_lens import HookedTransformer
    from transformers import AutoTokenizer

    from tlens_icl.models.embedded import weights_file

    path = Path(path)
    with open(path / "config.json", encoding="utf-8") as f:
        cfg = hooked_config(json.load(f))
    tokenizer = AutoTokenizer.from_pretrained(str(path / "tokenizer"))
    model = HookedTransformer(cfg, tokenizer=tokenizer)
    missing, unexpected = model.load_state_dict(hooked_state_dict(load_file(str(weights_file(path, step))), cfg),
                                                strict=False)
    missing = [k for k in missing if not k.endswith((".mask", ".IGNORE", ".rotary_sin", ".rotary_cos"))]
    if missing or unexpected:
        raise ModelStateError(f"{path}: weights do not map onto a HookedTransformer (missing {missing[:4]}, "
                              f"unexpected {unexpected[:4]}).")
    if device is not None:
        model = model.to(device)
    return model.eval()


__all__ = ["hooked_config", "hooked_state_dict", "load_hooked", "require_hooked_transformer_support"]
