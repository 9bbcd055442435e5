"""Attention-pattern statistics of every head from one forward per chunk (no loop over heads).

:func:`attention_to_targets` reduces ``hook_pattern`` of every layer inside the hook, so a sequence of
``pos`` tokens never holds more than one layer's ``[batch, head, pos, pos]`` pattern at a time.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from tlens_icl._typing import ModelLike
from tlens_icl.engine import hooks
from tlens_icl.engine.query import bind, device_of
from tlens_icl.engine.runs import chunks
from tlens_icl.models.loading import require_eval_mode


def attention_to_targets(
    model: ModelLike, tokens: Int[Tensor, "batch pos"], targets: Bool[Tensor, "kind batch pos pos"],
    rows: Bool[Tensor, "kind batch pos"], *, batch_size: int = 16,
) -> Float[Tensor, "kind layer head batch"]:
    """Mean attention mass each head puts on target keys, averaged over the selected query rows.

    ``score[c, l, h, b] = mean_{q: rows[c, b, q]} sum_k pattern[b, h, q, k] * targets[c, b, q, k]``; a
    sequence with no selected row gets NaN. Right-padded rows are fine: pads come after every real
    token, so a real query never attends to them; leave pads out of ``rows`` and ``targets``.
    """
    require_eval_mode(model, "attention_to_targets")
    n_kinds, n, width = rows.shape
    if targets.shape != (n_kinds, n, width, width) or tokens.shape != (n, width):
        raise ValueError(f"targets {tuple(targets.shape)} / rows {tuple(rows.shape)} do not match tokens "
                         f"{tuple(tokens.shape)}.")
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    out = torch.full((n_kinds, n_layers, n_heads, n), float("nan"))
    dev = device_of(model)
    with torch.no_grad():
        for sl in chunks(n, batch_size):
            tgt = targets[:, sl].to(dev)
            sel = rows[:, sl].to(dev)
            counts = sel.sum(-1)  # [kind, batch]
            got: dict[int, Tensor] = {}

            def reduce(pattern: Tensor, hook: Any, layer: int) -> None:
                # [kind, batch, head, q]: attention on the targets of each query row
                mass = torch.einsum("bhqk,cbqk->cbhq", pattern.float(), tgt.float())
                got[layer] = (mass * sel[:, :, None].float()).sum(-1) / counts[:, :, None]

            fwd = [(hooks.pattern(layer), bind(reduce, layer=layer)) for layer in range(n_layers)]
            with hooks.checked_hooks(model, fwd):
                model(tokens[sl].to(dev))
            stacked = torch.stack([got[layer] for layer in range(n_layers)], 1)  # [kind, layer, batch, head]
            stacked = stacked.permute(0, 1, 3, 2).cpu()
            stacked[(counts == 0).cpu()[:, None, None, :].expand_as(stacked)] = float("nan")
            out[:, :, :, sl] = stacked
    return out




__all__ = ["attention_to_targets"]
