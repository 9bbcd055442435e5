"""The query-patching fast path of tlens_icl before the key/value-reuse engine (git main fc5fda5), kept as a baseline.

Query copies appended to the prompt in one forward: every copy gets the query's ``position_ids`` and, at
every layer, a ``hook_pattern`` edit zeroes its attention to the query and the other copies (renormalised).
One forward of ``T + C`` tokens per row chunk patches C heads. Only the benchmarks import this module.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from torch import Tensor

from tlens_icl.engine import hooks


def patch_heads(model: Any, tokens: Tensor, query_pos: Tensor, values: Tensor, cells: list, score: Any,
                batch_size: int) -> tuple[Tensor, Tensor]:
    """Effects ``[cell, row]`` of ``z[q, head] := values[row, layer, head]`` and the unpatched scores."""
    n, width = tokens.shape
    n_layers = model.cfg.n_layers
    room = int(model.cfg.n_ctx) - width - 1
    per_forward = min(room, len(cells))
    groups = [list(range(s, min(len(cells), s + per_forward))) for s in range(0, len(cells), per_forward)]
    effects = torch.zeros(len(cells), n)
    with torch.no_grad():
        base_z, base_logits = [], []
        for s in range(0, n, batch_size):  # the unpatched run (query_z)
            sl = slice(s, s + batch_size)
            got: dict[int, Tensor] = {}
            rows, q = torch.arange(len(tokens[sl])), query_pos[sl]
            fwd = [(hooks.z(L), lambda z, hook, L=L: got.__setitem__(L, z[rows, q].float())) for L in range(n_layers)]
            with hooks.checked_hooks(model, fwd):
                out = model(tokens[sl])
            base_z.append(torch.stack([got[L] for L in range(n_layers)], 1))
            base_logits.append(out[rows, q].float())
        delta = values.float() - torch.cat(base_z)
        base_logits = torch.cat(base_logits)
        baseline = score(base_logits, torch.arange(n))
        for s in range(0, n, batch_size):
            idx = torch.arange(n)[s:s + batch_size]
            for group in groups:
                logits = _copies_forward(model, tokens[idx], query_pos[idx], delta[idx], [cells[i] for i in group])
                ref = score(logits[:, -1], idx)
                for j, i in enumerate(group):
                    layer, head = cells[i]
                    noop = (delta[idx, layer, head] == 0).all(-1)
                    effects[i, idx] = torch.where(noop, 0.0, score(logits[:, j], idx) - ref)
    return effects, baseline


def _copies_forward(model: Any, toks: Tensor, q: Tensor, delta: Tensor, group: list) -> Tensor:
    b, width = toks.shape
    n_copies = len(group) + 1
    rows = torch.arange(b)
    ext = torch.cat([toks, toks[rows, q][:, None].expand(-1, n_copies)], 1)
    pos = torch.cat([torch.arange(width).expand(b, -1), q[:, None].expand(-1, n_copies)], 1)
    src = torch.arange(width + n_copies)
    dest = width + torch.arange(n_copies)
    allowed = (src[None, None, :] < q[:, None, None]) | (src[None, None, :] == dest[None, :, None])

    def restrict(pattern: Tensor, hook: Any) -> Tensor:
        out = pattern.clone()
        kept = out[:, :, width:, :] * allowed[:, None].to(out.dtype)
        out[:, :, width:, :] = kept / kept.sum(-1, keepdim=True)
        return out

    by_layer: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for i, (layer, head) in enumerate(group):
        by_layer[layer].append((width + i, head))

    def put(z: Tensor, hook: Any, layer: int) -> Tensor:
        p = torch.tensor([p for p, _ in by_layer[layer]])
        h = torch.tensor([h for _, h in by_layer[layer]])
        z = z.clone()
        z[:, p, h] = z[:, p, h] + delta[:, layer, h].to(z.dtype)
        return z

    fwd = [(hooks.pattern(L), restrict) for L in range(model.cfg.n_layers)]
    fwd += [(hooks.z(L), lambda z, hook, L=L: put(z, hook, L)) for L in sorted(by_layer)]
    with hooks.checked_hooks(model, fwd):
        logits = model(ext, position_ids=pos)
    return logits[:, width:].float()
