"""Benchmark (TransformerLens 3): patching every head at the query of a HookedTransformer, exact loop vs KV reuse.

A HookedTransformer takes no ``position_ids``, so tlens_icl's query-copy fast path does not apply and
``indirect_effect`` runs one full forward per head. The adapter's KV helpers (``prefix_cache``,
``expand_cache``, ``query_forward``) give the same numbers from one prefix pass plus one-token query copies:

* ``copies``: one forward of ``heads + 1`` one-token copies per row on a frozen, batch-expanded cache;
* ``by layer``: the copies of layer ``l``'s heads start at ``start_at_layer=l`` from the unpatched
  ``hook_resid_pre`` (a HookedTransformer really skips the earlier layers).

Prints the timings, the ratios to the loop (same process) and the largest logit difference.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv-tl3/bin/python benchmarks/bench_hooked_kv.py [--layers 12 --d-model 768]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import torch  # noqa: E402


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="ht_gpt2", choices=["ht_gpt2", "ht_neox", "ht_llama"])
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--d-model", type=int, default=384)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--shots", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")

    from compat.conftest import build_hooked
    from conftest import INPUTS, OUTPUTS_A, make_tokenizer

    import tlens_icl as ti
    from tlens_icl.models import adapter

    model = build_hooked(args.arch, make_tokenizer(), n_layers=args.layers, d_model=args.d_model,
                         n_heads=args.heads, n_ctx=1024)
    task = ti.Task.from_pairs("toy_a", list(zip(INPUTS, OUTPUTS_A)), category="custom")
    batch = ti.make_prompts(model, task, n=args.rows, n_shots=args.shots, template="qa", seed=0)
    toks, q = batch.tokens, batch.query_pos
    L, H, B = model.cfg.n_layers, model.cfg.n_heads, len(batch)
    rows = torch.arange(B)
    value = torch.randn(L, H, model.cfg.d_head, generator=torch.Generator().manual_seed(0))
    print(f"{args.arch}: {L} layers x {H} heads, d_model {args.d_model}; {B} prompts of {toks.shape[1]} tokens")

    def loop() -> torch.Tensor:
        out = torch.empty(B, L, H, model.cfg.d_vocab)
        for layer in range(L):
            for head in range(H):
                def put(z, hook, head=head, layer=layer):
                    z = z.clone()
                    z[rows, q, head] = value[layer, head]
                    return z

                out[:, layer, head] = model.run_with_hooks(toks, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", put)])[rows, q]
        return out

    def copies() -> torch.Tensor:
        kv = adapter.expand_cache(adapter.prefix_cache(model, toks, q), L * H)
        cells = torch.arange(L * H)

        def put(z, hook, layer):
            z = z.clone().view(B, L * H, 1, H, -1)
            mine = cells[cells // H == layer]
            z[:, mine, 0, mine % H] = value[layer, mine % H]
            return z.view(B * L * H, 1, H, -1)

        fwd = [(f"blocks.{layer}.attn.hook_z", lambda z, hook, layer=layer: put(z, hook, layer)) for layer in range(L)]
        with model.hooks(fwd_hooks=fwd):
            out = adapter.query_forward(model, kv, toks[rows, q].repeat_interleave(L * H))
        return out.view(B, L, H, -1)

    def by_layer() -> torch.Tensor:
        base = adapter.prefix_cache(model, toks, q)
        _, cache = model.run_with_cache(toks, names_filter=lambda n: n.endswith("hook_resid_pre"))
        kv = adapter.expand_cache(base, H)
        out = torch.empty(B, L, H, model.cfg.d_vocab)
        for layer in range(L):
            resid = cache[f"blocks.{layer}.hook_resid_pre"][rows, q].repeat_interleave(H, 0)

            def put(z, hook, layer=layer):
                z = z.clone().view(B, H, 1, H, -1)
                z[:, torch.arange(H), 0, torch.arange(H)] = value[layer]
                return z.view(B * H, 1, H, -1)

            with model.hooks(fwd_hooks=[(f"blocks.{layer}.attn.hook_z", put)]):
                out[:, layer] = adapter.query_forward(model, kv, resid, start_at_layer=layer).view(B, H, -1)
        return out

    with torch.no_grad():
        _, t_one = timed(lambda: model(toks))
        ref, t_loop = timed(loop)
        a, t_copies = timed(copies)
        b, t_layer = timed(by_layer)
    print(f"one full forward: {t_one:.2f} s")
    print(f"loop, one patched forward per head ({L * H}): {t_loop:.2f} s")
    print(f"KV copies (one forward of {L * H} one-token copies per row): {t_copies:.2f} s = {t_loop / t_copies:.1f}x faster; "
          f"max |logit diff| {float((a - ref).abs().max()):.2g}")
    print(f"KV copies grouped by layer with start_at_layer: {t_layer:.2f} s = {t_loop / t_layer:.1f}x faster; "
          f"max |logit diff| {float((b - ref).abs().max()):.2g}")


if __name__ == "__main__":
    main()
