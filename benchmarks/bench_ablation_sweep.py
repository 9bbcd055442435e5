"""Mean ablation at every token of many head sets on SmolLM2-135M: every set in full vs the sweep.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/bench_ablation_sweep.py [--n 6] [--repeats 1]

``engine.ablation.ablation_sweep(method="naive")`` runs one full forward per head set and prompt chunk;
``method="auto"`` shares each chunk's clean run and starts every set at its first ablated layer (blocks
before it are the identity, the clean residual is put back). Head sets: the top-k FV and induction heads of
``head_ablation``'s plan on SmolLM2 (k = 2, 5, 10, 20, 40) and 3 random sets per k, as in the comparison.
Both methods run in this process, alternating; CPU seconds (``time.process_time``) and wall seconds.
"""

from __future__ import annotations

import argparse
import time

import torch

import tlens_icl as ti
from tlens_icl.analyses.heads.ablation import random_heads, select_heads
from tlens_icl.engine.ablation import ablation_positions, ablation_sweep, mean_head_z, query_reduce


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=6)
    p.add_argument("--repeats", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(1)
    model = ti.load_model("smollm2-135m")
    hs = ti.head_scores(model, n=8, length=25)
    batch = ti.make_prompts(model, "country_capital", n=a.n, n_shots=5, seed=0)
    # The sweep's saving depends on each set's first ablated layer only: the FV sets take SmolLM2's top-10 FV
    # heads by AIE (bench_heads.py, 6 tasks), then heads in random order (no AIE run here)
    fv = torch.zeros(30, 9)
    for r, lab in enumerate("L20H5 L24H4 L14H1 L29H0 L5H6 L19H1 L15H0 L13H3 L11H2 L20H1".split()):
        layer, head = (int(x) for x in lab[1:].split("H"))
        fv[layer, head] = 10 - r
    sets = []
    for k in (2, 5, 10, 20, 40):
        sets.append(select_heads(fv + 1e-3 * torch.rand(30, 9, generator=torch.Generator().manual_seed(k)), k))
        sets.append(select_heads(hs.induction(), k))
        sets += [random_heads(30, 9, k, s) for s in range(3)]
    where = ablation_positions(batch, "all")
    means = mean_head_z(model, batch.tokens, where)
    reduce = query_reduce(batch, lambda lg, rows: lg)
    print(f"{len(sets)} head sets; first ablated layers {sorted(min(h.layer for h in s) for s in sets)}; "
          f"{len(batch)} prompts of up to {int(batch.query_pos.max()) + 1} tokens")
    res = {}
    for _ in range(a.repeats):
        for method in ("naive", "auto"):
            t, c = time.perf_counter(), time.process_time()
            out = ablation_sweep(model, batch.tokens, batch.query_pos, where, sets, means, reduce, method=method)
            res.setdefault(method, []).append((time.perf_counter() - t, time.process_time() - c, out))
            print(f"{method}: wall {res[method][-1][0]:.1f} s, cpu {res[method][-1][1]:.1f} s", flush=True)
    diff = max(float((x - y).abs().max()) for x, y in zip(res["naive"][-1][2], res["auto"][-1][2]))
    cpu = {m: min(r[1] for r in v) for m, v in res.items()}
    print(f"cpu naive/auto = {cpu['naive'] / cpu['auto']:.2f}x; max |logit diff| {diff:.2e}")


if __name__ == "__main__":
    main()
