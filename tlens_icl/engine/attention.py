"""Attention-pattern statistics of every head from one forward per chunk (no loop over heads).

:func:`attention_to_targets` reduces ``hook_pattern`` of every layer inside the hook (the engine's one
capture path), so a sequence of ``pos`` tokens never holds more than one layer's ``[batch, head, pos, pos]``
pattern at a time.
"""

from __future__ import annotations


import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from tlens_icl._typing import ModelLike
from tlens_icl.engine import hooks
from tlens_icl.engine.capture import Custom, acc_dtype, capture, last_position


def attention_to_targets(
    model: ModelLike, tokens: Int[Tensor, "batch pos"], targets: Bool[Tensor, "kind batch pos pos"],
    rows: Bool[Tensor, "kind batch pos"], *, batch_size: int = 16,
) -> Float[Tensor, "kind layer head batch"]:
    """Mean attention mass each head puts on target keys, averaged over the selected query rows.

    ``score[c, l, h, b] = mean_{q: rows[c, b, q]} sum_k pattern[b, h, q, k] * targets[c, b, q, k]``; a
    sequence with no selected row gets NaN. Right-padded rows are fine: pads come after every real
    token, so a real query never attends to them; leave pads out of ``rows`` and ``targets``.
    """
    n_kinds, n, width = rows.shape
    if targets.shape != (n_kinds, n, width, width) or tokens.shape != (n, width):
        raise ValueError(f"targets {tuple(targets.shape)} / rows {tuple(rows.shape)} do not match tokens "
                         f"{tuple(tokens.shape)}.")
    n_layers = model.cfg.n_layers
    counts = rows.sum(-1)  # [kind, batch]

    def reduce(pattern: Tensor, chunk: Tensor) -> Tensor:
        w = pattern.shape[-1]
        tgt = targets[:, chunk, :w, :w].to(pattern.device, acc_dtype(pattern))
        sel = rows[:, chunk, :w].to(pattern.device, tgt.dtype)
        mass = torch.einsum("bhqk,cbqk->cbhq", pattern.to(tgt.dtype), tgt)  # attention on the targets per query row
        per = (mass * sel[:, :, None]).sum(-1) / counts[:, chunk].to(pattern.device)[:, :, None]  # [kind, b, head]
        return per.transpose(0, 1)  # [b, kind, head]

    # a row's statistics need positions up to its last selected query row
    stat = Custom(reduce, reach=last_position(rows.any(0)).clamp(min=0))
    got = capture(model, tokens, {hooks.pattern(layer): stat for layer in range(n_layers)}, batch_size=batch_size,
                  operation="attention_to_targets")
    out = torch.stack([got[hooks.pattern(layer)] for layer in range(n_layers)], 0)  # [layer, batch, kind, head]
    out = out.permute(2, 0, 3, 1).contiguous()  # [kind, layer, head, batch]
    out[(counts == 0)[:, None, None, :].expand_as(out)] = float("nan")
    return out


__all__ = ["attention_to_targets"]
